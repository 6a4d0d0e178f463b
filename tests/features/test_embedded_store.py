"""The embedded store's own shortcuts give what the plain way gives."""

from __future__ import annotations

import random

import numpy as np

from features.schemas import Label, Purchase
from features.state import DAY
from features.store.base import StoreConfig
from features.store.embedded import (EmbeddedStore, TransactionSet, snapshot_from_bytes,
                                     snapshot_to_bytes)

T0 = 1_522_540_800.0


def stored_bodies(store: EmbeddedStore) -> dict[str, bytes]:
    return dict(store._db.execute("SELECT transaction_id, body FROM snapshots"))


def test_labels_found_in_batches_and_rewritten_in_place_store_what_a_fresh_write_would(tmp_path):
    """Labels of committed purchases (one query per batch, the stored body with its label
    replaced, the features read back packed), of purchases of the same batch, repeated and
    unknown labels, in one stream."""
    rng = random.Random(5)
    store = EmbeddedStore(tmp_path)
    purchases = [Purchase(f"t{i}", T0 + 60 * i, f"u{i % 7}", f"s{i % 3}", "item", f"c{i % 11}",
                          round(rng.uniform(1, 500), 2), 1 + i % 3) for i in range(1200)]
    for k in range(0, 1200, 300):
        for snap in store.process_purchases(purchases[k:k + 300]):
            snap.scores["dynamic"] = rng.random()
        if k < 900:  # the last purchases are labelled before their first commit
            store.commit()
    features = {f"t{i}": store.snapshot(f"t{i}").features for i in range(1200)}
    labelled: dict[str, bool] = {}
    order = list(range(1250))
    rng.shuffle(order)
    for k in range(0, len(order), 250):
        batch = [Label(f"t{i}", rng.random() < 0.3, T0 + 86_400.0, "review")
                 for i in order[k:k + 250] + order[k:k + 10]]  # ten repeated, some unknown
        outcomes = store.process_labels(batch)
        for label, outcome in zip(batch, outcomes):
            first = label.transaction_id not in labelled and int(label.transaction_id[1:]) < 1200
            assert outcome.status == ("applied" if first else
                                      "unknown" if int(label.transaction_id[1:]) >= 1200
                                      else "duplicate")
            if first:
                labelled[label.transaction_id] = label.is_fraud
            if outcome.snapshot is not None:  # read back packed when committed: the same values
                assert outcome.snapshot.features == features[label.transaction_id]
                assert list(outcome.snapshot.features) == list(features[label.transaction_id])
        store.commit()
    (highest,) = store._db.execute("SELECT max(seq) FROM applied_labels").fetchone()
    assert store.label_seq == highest == len(labelled)  # counted on, not read back
    bodies = stored_bodies(store)
    assert len(bodies) == 1200
    for tx, body in bodies.items():
        snap = snapshot_from_bytes(body)
        assert snap.label == labelled.get(tx)
        assert body == snapshot_to_bytes(snap)
    store.close()


def test_a_labelled_snapshot_whose_row_went_missing_is_written_whole(tmp_path):
    store = EmbeddedStore(tmp_path)
    store.process_purchases([Purchase(f"t{i}", T0 + i, "u", "s", "item", "c", 10.0, 1)
                             for i in range(3)])
    store.commit()
    assert [o.status for o in store.process_labels(
        [Label(f"t{i}", i == 1, T0 + 100.0, "review") for i in range(3)])] == ["applied"] * 3
    store._db.execute("DELETE FROM snapshots WHERE transaction_id = 't1'")
    store.commit()
    bodies = stored_bodies(store)
    assert [snapshot_from_bytes(bodies[f"t{i}"]).label for i in range(3)] == [False, True, False]
    store.close()


def test_a_snapshot_body_holds_its_features_as_float64_and_reads_back_exactly(tmp_path):
    """The usual features are packed (every float64 kept: NaN, -0.0, the smallest and the
    largest); other feature sets and bodies written as JSON by earlier versions read back."""
    import math

    import orjson

    from features.columnar import REFERENCE_ORDER
    from features.store.base import Snapshot
    from features.store.embedded import _labelled, _unlabelled

    values = [math.nan, -0.0, 5e-324, 1.7976931348623157e308, math.inf, 0.1, 1 / 3]
    features = {n: values[i % len(values)] for i, n in enumerate(REFERENCE_ORDER)}
    snap = Snapshot("t-é", T0 + 0.125, "u", "c" * 64, "s", features, {"dynamic": 0.25})
    body = snapshot_to_bytes(snap)
    back = snapshot_from_bytes(body)
    assert list(back.features) == list(REFERENCE_ORDER) and back.label is None
    assert all(math.isnan(a) and math.isnan(b) or (a == b and math.copysign(1, a) ==
                                                   math.copysign(1, b))
               for a, b in zip(back.features.values(), features.values()))
    assert (back.transaction_id, back.event_ts, back.user_id, back.card_hash, back.seller_id,
            back.scores) == ("t-é", T0 + 0.125, "u", "c" * 64, "s", {"dynamic": 0.25})
    assert _unlabelled(body) and len(body) < len(orjson.dumps(list(features.values()))) + 120
    for label in (False, True):
        snap.label = label
        assert _labelled(body, label) == snapshot_to_bytes(snap)
        assert snapshot_from_bytes(_labelled(body, label)).label is label
        assert not _unlabelled(_labelled(body, label))
    other = Snapshot("t2", T0, "u", "c", "s", {"amount": 3.0}, {"dynamic": 0.5})
    assert snapshot_to_bytes(other) == other.to_bytes()  # JSON, as ever
    assert snapshot_from_bytes(snapshot_to_bytes(other)) == other
    plain = dict(features, user_tenure=2.0, seller_tenure=3.0)
    plain = {k: (0.5 if v != v or v in (math.inf,) else v) for k, v in plain.items()}
    earlier = orjson.dumps(["t3", T0, "u", "c", "s", list(plain.values()), {}, None])
    assert snapshot_from_bytes(earlier) == Snapshot("t3", T0, "u", "c", "s", plain, {})
    assert _unlabelled(earlier) and snapshot_from_bytes(_labelled(earlier, True)).label is True


def test_the_expiry_sweep_scans_the_snapshots_only_when_one_can_be_past_the_horizon(tmp_path):
    """The sweep runs every few thousand commits; while no stored snapshot can be past
    the label horizon it skips the scan of the table, and it still deletes expired ones,
    also those written before a restart."""
    config = StoreConfig(label_horizon=10 * DAY)
    store = EmbeddedStore(tmp_path, config)
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)

    def sweep_deletes() -> bool:
        statements.clear()
        store.purge()
        return any(s.startswith("DELETE FROM snapshots") for s in statements)

    store.process_purchases([Purchase(f"t{i}", T0 + i * DAY, "u", "s", "item", "c", 10.0, 1)
                             for i in range(5)])
    assert not sweep_deletes()  # the oldest is 4 days old
    store.process_purchases([Purchase("t12", T0 + 12 * DAY, "u", "s", "item", "c", 10.0, 1)])
    assert sweep_deletes()  # t0 and t1 are past the horizon
    assert sorted(stored_bodies(store)) == ["t12", "t2", "t3", "t4"]
    assert not sweep_deletes()  # nothing older is left
    store.close()

    store = EmbeddedStore(tmp_path, config)
    store._db.set_trace_callback(statements.append)
    store.process_purchases([Purchase("t15", T0 + 15 * DAY, "u", "s", "item", "c", 10.0, 1)])
    assert sweep_deletes()
    assert sorted(stored_bodies(store)) == ["t12", "t15"]
    store.close()


def test_known_transactions_are_rebuilt_only_when_some_are_past_the_horizon():
    seen = TransactionSet()
    assert seen.add(np.array([11, 12, 13]), np.array([100, 101, 102])).tolist() == [False] * 3
    table = seen.keys
    seen.keep_from(100)  # none is older: the table stays as it is
    assert seen.keys is table
    seen.keep_from(102)
    assert seen.keys is not table and seen.oldest == 102
    assert seen.add(np.array([11, 13]), np.array([103, 103])).tolist() == [False, True]
    assert seen.oldest == 102
