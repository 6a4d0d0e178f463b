"""The embedded store's compiled path equals the reference definitions to the last bit.

A model of the store built from the documented functions alone
(``compute_features``, ``apply_purchase``, ``apply_label`` on ``features.state``
objects, entities idle past the TTL starting afresh) processes random streams
of purchases and labels (out of order, repeated, with registration times,
item counts of every class, fraud and legitimate outcomes, entities expiring);
the embedded store processes the same streams, restarting and checkpointing
at random points. Every feature and every entity state must be *equal*, not
merely close.
"""

from __future__ import annotations

import math

from hypothesis import HealthCheck, given, settings, strategies as st

from features.definitions import FeatureConfig, compute_features
from features.schemas import Label, Purchase
from features.state import DAY, HOUR, STATE_TYPES, apply_label, apply_purchase
from features.store import StoreConfig
from features.store.embedded import EmbeddedStore, TransactionSet

T0 = 1_522_540_800.0


class ReferenceStore:
    """The store's semantics in plain Python over ``features.state`` objects."""

    def __init__(self, config: StoreConfig):
        self.config = config
        self.states: dict = {}
        self.snapshots: dict = {}
        self.pending: set = set()  # written or labelled since the last commit
        self.clock = -math.inf

    def _entity(self, kind, entity_id):
        state = self.states.get((kind, entity_id))
        if state is not None and -math.inf < state.last_ts < self.clock - self.config.entity_ttl:
            state = None
        if state is None:
            state = self.states[(kind, entity_id)] = STATE_TYPES[kind]()
        return state

    def _known(self, tx):
        snap = self.snapshots.get(tx)
        if snap is None or snap[0] < self.clock - self.config.label_horizon:
            return None
        return snap

    def purchases(self, batch):
        out = []
        for p in batch:
            tx = p.transaction_id
            # an uncommitted snapshot is a repeat whatever its age
            known = self.snapshots[tx] if tx in self.pending else self._known(tx)
            if known is not None:
                out.append(("duplicate", known[1]))
                continue
            self.clock = max(self.clock, p.event_ts)
            user, card, seller = (self._entity("user", p.user_id),
                                  self._entity("card", p.card_hash),
                                  self._entity("seller", p.seller_id))
            features = compute_features(p, user, card, seller, self.config.features)
            apply_purchase(p, user, card, seller, self.config.features.keep_hours,
                           self.config.features.seller_keep_hours)
            self.snapshots[tx] = [p.event_ts, features, None, p]
            self.pending.add(tx)
            out.append(("new", features))
        return out

    def labels(self, batch):
        out = []
        for label in batch:
            snap = self._known(label.transaction_id)
            if snap is None:
                out.append("unknown")
            elif snap[2] is not None:
                out.append("duplicate")
            else:
                snap[2] = label.is_fraud
                self.pending.add(label.transaction_id)
                p = snap[3]
                apply_label(label, p.event_ts, self._entity("user", p.user_id),
                            self._entity("card", p.card_hash), self._entity("seller", p.seller_id))
                out.append("applied")
        return out

    def entity(self, kind, entity_id):
        state = self.states.get((kind, entity_id))
        if state is None or -math.inf < state.last_ts < self.clock - self.config.entity_ttl:
            return None
        return state


steps = st.lists(st.one_of(
    st.tuples(st.just("buy"),
              st.integers(0, 30),  # hours the stream moves on
              st.integers(0, 3600 * 40),  # out of order: back in time, up to 40 h
              st.integers(0, 4), st.integers(0, 3), st.integers(0, 2),  # user, card, seller
              st.floats(0.5, 5000.0),
              st.sampled_from([1, 1, 2, 3, 8, 9, 16, 17, 40, 1000, 10_000]),
              st.sampled_from([None, 0.0, T0 - 40 * DAY, T0 + 5 * DAY]),
              st.sampled_from([None, T0 - 400 * DAY])),
    st.tuples(st.just("again"), st.integers(0, 1000)),  # redeliver an earlier purchase
    st.tuples(st.just("label"), st.integers(0, 1000), st.booleans()),
    st.tuples(st.just("commit"),),
    st.tuples(st.just("restart"),),
    st.tuples(st.just("checkpoint"),),
    st.tuples(st.just("purge"),)), min_size=1, max_size=80)


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(steps, st.sampled_from([(90 * DAY, 45 * DAY), (2 * DAY, 3 * DAY), (6 * DAY, 1 * DAY)]))
def test_the_store_equals_the_reference_definitions(tmp_path_factory, history, ttls):
    config = StoreConfig(entity_ttl=ttls[0], label_horizon=ttls[1],
                         features=FeatureConfig(risk_delay=1 * DAY, late_tolerance=6 * HOUR))
    place = tmp_path_factory.mktemp("store")
    reference = ReferenceStore(config)
    store = EmbeddedStore(place, config)
    bought: list[Purchase] = []
    hour = 0
    batch: list[Purchase] = []

    def flush():
        if batch:
            want = reference.purchases(batch)
            got = store.process_purchases(batch)
            for (status, features), snap in zip(want, got):
                assert snap.duplicate == (status == "duplicate")
                assert snap.features == features
                assert list(snap.features) == list(features)  # the same key order
            batch.clear()

    try:
        for step in history:
            if step[0] == "buy":
                _, gap, back, user, card, seller, price, n_items, ureg, sreg = step
                hour += gap
                p = Purchase(f"t{len(bought)}", T0 + hour * HOUR - back, f"u{user}",
                             f"s{seller}", "it", f"c{card}", price, n_items,
                             user_registered_ts=ureg, seller_registered_ts=sreg)
                bought.append(p)
                batch.append(p)
                continue
            if step[0] == "again":
                if bought:
                    batch.append(bought[step[1] % len(bought)])
                continue
            flush()
            if step[0] == "label":
                if bought:
                    p = bought[step[1] % len(bought)]
                    label = Label(p.transaction_id, step[2], p.event_ts + HOUR, "x")
                    assert [r.status for r in store.process_labels([label])] == \
                        reference.labels([label])
            else:
                reference.pending.clear()
                if step[0] == "commit":
                    store.commit()
                elif step[0] == "restart":
                    store.close()
                    store = EmbeddedStore(place, config)
                elif step[0] == "checkpoint":
                    store.checkpoint()
                else:
                    store.purge()
        flush()
        for _ in range(2):  # before and after a restart
            assert store.clock == reference.clock
            for kind, prefix, n in (("user", "u", 5), ("card", "c", 4), ("seller", "s", 3)):
                for i in range(n):
                    assert store.entity(kind, f"{prefix}{i}") == reference.entity(kind,
                                                                                 f"{prefix}{i}")
            store.close()
            store = EmbeddedStore(place, config)
    finally:
        store.close()


def test_a_failed_commit_forgets_the_batch_and_rebuilds_from_disk(tmp_path):
    store = EmbeddedStore(tmp_path)
    p1 = Purchase("a", T0, "u", "s", "i", "c", 10.0, 1)
    p2 = Purchase("b", T0 + 60, "u", "s", "i", "c", 20.0, 1)
    store.process_purchases([p1])
    store.commit()
    store.process_purchases([p2])
    store._forget_uncommitted()  # what a failed commit does
    assert store.entity("card", "c").n_purchases == 1
    (again,) = store.process_purchases([p2])
    assert not again.duplicate and again.features["card_count_1d"] == 2
    assert store.process_purchases([p1])[0].duplicate
    store.close()


def test_the_transaction_set_grows_and_forgets_old_hours():
    s = TransactionSet()
    import numpy as np
    keys = np.arange(1, 20_001, dtype=np.int64) * 7919
    hours = np.repeat(np.arange(20), 1000)
    assert not s.add(keys, hours).any()
    assert s.add(keys, hours).all()
    s.keep_from(10)
    found = s.add(keys, hours + 100)
    assert not found[:10_000].any() and found[10_000:].all()
