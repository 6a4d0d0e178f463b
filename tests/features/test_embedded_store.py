"""The embedded store's own shortcuts give what the plain way gives."""

from __future__ import annotations

import random

from features.schemas import Label, Purchase
from features.store.embedded import EmbeddedStore, snapshot_from_bytes, snapshot_to_bytes

T0 = 1_522_540_800.0


def stored_bodies(store: EmbeddedStore) -> dict[str, bytes]:
    return dict(store._db.execute("SELECT transaction_id, body FROM snapshots"))


def test_labels_found_in_batches_and_rewritten_in_place_store_what_a_fresh_write_would(tmp_path):
    """Labels of committed purchases (one query per batch, the stored body with its label
    replaced), of purchases of the same batch, repeated and unknown labels, in one stream."""
    rng = random.Random(5)
    store = EmbeddedStore(tmp_path)
    purchases = [Purchase(f"t{i}", T0 + 60 * i, f"u{i % 7}", f"s{i % 3}", "item", f"c{i % 11}",
                          round(rng.uniform(1, 500), 2), 1 + i % 3) for i in range(1200)]
    for k in range(0, 1200, 300):
        for snap in store.process_purchases(purchases[k:k + 300]):
            snap.scores["dynamic"] = rng.random()
        if k < 900:  # the last purchases are labelled before their first commit
            store.commit()
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
        store.commit()
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
