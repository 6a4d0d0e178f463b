"""The contract every feature store backend keeps (run once per backend)."""

from __future__ import annotations

import math
import threading
from dataclasses import replace

from hypothesis import HealthCheck, given, settings, strategies as st

from features.definitions import FEATURE_NAMES, SEED_FEATURES, WINDOW_DAYS, FeatureConfig
from features.schemas import Label, Purchase
from features.state import DAY, HOUR
from features.store import StoreConfig

T0 = 1_522_540_800.0  # 2018-04-01T00:00:00Z, a Sunday


def buy(i, t, user="u1", card="c1", seller="s1", price=20.0, n_items=1, **kw) -> Purchase:
    return Purchase(f"t{i}", T0 + t, user, seller, "item", card, price, n_items, **kw)


def fraud(i, t=0.0, is_fraud=True) -> Label:
    return Label(f"t{i}", is_fraud, T0 + t, "chargeback")


def test_seed_ratios_on_a_hand_computed_history(make_store):
    store = make_store()
    history = [buy(1, 0, price=10.0), buy(2, 100, price=10.0), buy(3, 200, price=10.0),
               buy(4, 300, price=10.0)]
    store.process_purchases(history)
    assert [r.status for r in store.process_labels([fraud(2), fraud(3, is_fraud=False)])] == \
        ["applied", "applied"]
    (snap,) = store.process_purchases([buy(5, 1800, price=200.0, n_items=7,
                                           user_registered_ts=T0 - 30 * DAY,
                                           seller_registered_ts=T0 - 90 * DAY)])
    f = snap.features
    assert f["user_fraud_ratio"] == 1 / 4           # one fraud among four earlier purchases
    assert f["card_report_rate"] == 1 / 4           # the card was reported once in four uses
    assert f["card_recent_velocity"] == 4 / (4 + 3)  # four uses in the hour before
    assert f["seller_items_typicality"] == 1 / 5    # never sold 7 items; 4 sales of 1
    assert f["user_price_typicality"] < 1e-6        # 20x the usual price
    assert math.isclose(f["user_tenure"], 0.5, rel_tol=1e-3)    # 30 days = half-life
    assert math.isclose(f["seller_tenure"], 0.75, rel_tol=1e-3)  # 90 days
    for name in SEED_FEATURES:
        assert 0.0 <= f[name] <= 1.0, name
    assert f["card_count_1d"] == 5 and f["card_mean_amount_1d"] == (40 + 200) / 5
    assert f["is_night"] == 1.0 and f["is_weekend"] == 1.0 and f["amount"] == 200.0


def test_seller_risk_counts_known_frauds_in_the_delayed_window(make_store):
    cfg = StoreConfig(features=FeatureConfig(risk_delay=7 * DAY))
    store = make_store(cfg)
    store.process_purchases([buy(i, i * HOUR, user=f"u{i}", card=f"c{i}") for i in range(10)])
    store.process_labels([fraud(0), fraud(1), fraud(2, is_fraud=False)])
    (late,) = store.process_purchases([buy(99, 7 * DAY + 12 * HOUR, user="x", card="x")])
    assert late.features["seller_risk_1d"] == 2 / 10
    assert late.features["seller_count_1d"] == 1  # the ten are more than a day old
    (early,) = store.process_purchases([buy(98, 12 * HOUR, user="y", card="y")])
    assert early.features["seller_risk_30d"] == 0.0  # nothing is a week old yet


def test_a_redelivered_purchase_changes_nothing(make_store):
    store = make_store()
    first = store.process_purchases([buy(1, 0), buy(2, 60), buy(3, 120, seller="s2")])
    before = {k: store.entity(*k) for k in (("user", "u1"), ("card", "c1"), ("seller", "s1"))}
    before = {k: replace(v, buckets=dict(v.buckets)) for k, v in before.items()}
    again = store.process_purchases([buy(2, 60), buy(1, 0)])
    assert [s.duplicate for s in again] == [True, True]
    assert again[0].features == first[1].features
    store.commit()
    for key, state in before.items():
        assert store.entity(*key) == state, key
    assert store.entity("user", "u1").n_purchases == 3


def test_a_redelivered_label_changes_nothing(make_store):
    store = make_store()
    store.process_purchases([buy(1, 0), buy(2, 60)])
    assert store.process_labels([fraud(1)])[0].status == "applied"
    assert [r.status for r in store.process_labels([fraud(1), fraud(1)])] == \
        ["duplicate", "duplicate"]
    assert store.entity("user", "u1").n_frauds == 1
    assert store.entity("card", "c1").n_reports == 1


def test_a_label_for_an_unknown_transaction_is_reported_not_raised(make_store):
    store = make_store()
    assert store.process_labels([fraud(404)])[0].status == "unknown"


def test_an_out_of_order_purchase_lands_in_its_own_hour(make_store):
    store = make_store()
    store.process_purchases([buy(1, 10 * HOUR), buy(2, 2 * HOUR)])
    buckets = store.entity("card", "c1").buckets
    assert sorted(buckets) == [int(T0 // HOUR) + 2, int(T0 // HOUR) + 10]
    (snap,) = store.process_purchases([buy(3, 3 * HOUR)])
    # point in time: the purchase at 2 h counts, the one at 10 h is in its future
    assert snap.features["card_count_1d"] == 1 + 1


def test_the_snapshot_keeps_the_features_a_transaction_was_scored_with(make_store):
    store = make_store()
    (snap,) = store.process_purchases([buy(1, 0)])
    snap.scores["dynamic"] = 0.25
    store.process_purchases([buy(i, i * 60) for i in range(2, 20)])
    store.commit()
    kept = store.snapshot("t1")
    assert kept.features == snap.features and kept.scores == {"dynamic": 0.25}
    assert sorted(kept.features) == sorted(FEATURE_NAMES)


def test_state_survives_a_restart(make_store):
    store = make_store()
    store.process_purchases([buy(1, 0), buy(2, 60)])
    store.process_labels([fraud(1)])
    store.close()
    reopened = make_store()
    assert reopened.entity("user", "u1").n_frauds == 1
    assert reopened.entity("card", "c1").n_purchases == 2
    assert reopened.process_purchases([buy(2, 60)])[0].duplicate
    assert reopened.process_labels([fraud(1)])[0].status == "duplicate"


def test_idle_entities_and_old_snapshots_expire(make_store):
    store = make_store(StoreConfig(entity_ttl=10 * DAY, label_horizon=5 * DAY))
    store.process_purchases([buy(1, 0, user="idle", card="idle")])
    store.process_purchases([buy(2, 20 * DAY, user="busy", card="busy")])
    store.commit()
    assert store.entity("user", "idle") is None
    assert store.entity("user", "busy").n_purchases == 1
    assert store.process_labels([fraud(1)])[0].status == "unknown"  # past the label horizon
    (again,) = store.process_purchases([buy(3, 20 * DAY + 60, user="idle", card="idle")])
    assert again.features["card_count_30d"] == 1  # the idle card starts afresh


def test_two_writers_on_one_entity_lose_no_increment(make_store):
    store = make_store()
    writers = [threading.Thread(target=lambda w=w: [
        store.process_purchases([buy(w * 1000 + i, i, seller="hot", user=f"u{w}",
                                     card=f"c{w}")]) for i in range(200)]) for w in range(2)]
    for t in writers:
        t.start()
    for t in writers:
        t.join()
    store.commit()
    assert store.entity("seller", "hot").n_purchases == 400


events = st.lists(
    st.tuples(st.integers(0, 72),  # hours since the previous event (the stream moves on)
              st.integers(0, 3600 * 30),  # out-of-order jitter back in time, up to 30 h
              st.integers(0, 3), st.integers(0, 2),  # user/card, seller
              st.floats(1.0, 500.0), st.booleans()),  # price, redelivered later
    min_size=1, max_size=60)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(events)
def test_windowed_features_equal_a_brute_force_recomputation(make_store, history):
    with make_store(fresh=True) as store:
        check_against_brute_force(store, history)


def check_against_brute_force(store, history) -> None:
    seen: list[Purchase] = []
    pending_dups: list[Purchase] = []
    hour = 0
    for i, (step, jitter, who, seller, price, redeliver) in enumerate(history):
        hour += step
        p = Purchase(f"h{i}-{id(history)}", T0 + hour * HOUR - jitter, f"u{who}", f"s{seller}",
                     "it", f"c{who}", round(price, 2), 1)
        batch = [p] + pending_dups
        pending_dups = [p] if redeliver else []
        snaps = store.process_purchases(batch)
        assert all(s.duplicate for s in snaps[1:])
        expected = brute_force(p, seen)
        for name, value in expected.items():
            assert math.isclose(snaps[0].features[name], value, rel_tol=1e-9, abs_tol=1e-9), name
        seen.append(p)
    store.commit()
    for who in {f"u{h[2]}" for h in history}:
        assert store.entity("user", who).n_purchases == sum(p.user_id == who for p in seen)


def brute_force(p: Purchase, earlier: list[Purchase]) -> dict[str, float]:
    """Windowed features straight from the raw events, by their hours."""
    hour = int(p.event_ts // HOUR)
    out = {}
    for d in WINDOW_DAYS:
        inside = [q for q in earlier if 0 <= hour - int(q.event_ts // HOUR) < 24 * d]
        for name, key in (("card", "card_hash"), ("user", "user_id")):
            mine = [q.price for q in inside if getattr(q, key) == getattr(p, key)]
            out[f"{name}_count_{d}d"] = len(mine) + 1
            out[f"{name}_mean_amount_{d}d"] = (sum(mine) + p.price) / (len(mine) + 1)
        out[f"seller_count_{d}d"] = sum(q.seller_id == p.seller_id for q in inside) + 1
    return out
