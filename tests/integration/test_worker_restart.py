"""A worker killed with SIGKILL restarts on its embedded store with the same state."""

from __future__ import annotations

import random
from collections import Counter

import orjson
import pytest
from confluent_kafka import Producer

from features.store.embedded import EmbeddedStore
from worker_harness import Worker

pytestmark = pytest.mark.kafka

T0_MS = 1_704_067_200_000


def test_a_killed_worker_resumes_with_every_event_counted_once(kafka_bootstrap, tmp_path, unique):
    rng = random.Random(3)
    purchases = [{"transaction_id": f"tx-{i}", "event_time": T0_MS + i * 10_000,
                  "user_id": f"u{c}", "seller_id": f"s{rng.randrange(20)}", "item_id": "i",
                  "card_hash": f"c{c}", "price": round(rng.uniform(5, 200), 2), "n_items": 1}
                 for i, c in enumerate(rng.randrange(150) for _ in range(2000))]
    frauds = {p["transaction_id"] for p in purchases[:1500] if rng.random() < 0.1}
    labels = [{"transaction_id": p["transaction_id"], "is_fraud": p["transaction_id"] in frauds,
               "label_time": p["event_time"] + 3_600_000, "source": "review"}
              for p in purchases[:1500]]
    worker = Worker(kafka_bootstrap, tmp_path, unique).start()
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 5})

    def send(topic, events, key):
        for e in events:
            producer.produce(topic, key=e[key].encode(), value=orjson.dumps(e))
        producer.flush(30)

    try:
        send(worker.settings.topic_purchases, purchases[:1500], "card_hash")
        worker.wait_scored(1500)
        send(worker.settings.topic_labels, labels, "transaction_id")
        worker.wait_for(lambda: worker.metric("fraudstream_events_total", kind="label",
                                              outcome="applied") >= 1500, 120, "labels applied")
        version_before = worker.metric("fraudstream_model_version", model="dynamic")
        worker.kill()

        worker.start()  # the same data directory: the same store and model versions
        send(worker.settings.topic_purchases, purchases[1500:], "card_hash")
        worker.wait_scored(500)
        assert worker.metric("fraudstream_model_version", model="dynamic") >= version_before >= 1
    finally:
        worker.stop()

    with EmbeddedStore(tmp_path / "store") as store:
        uses = Counter(p["card_hash"] for p in purchases)
        for card, n in uses.items():
            assert store.entity("card", card).n_purchases == n, card
        fraud_users = Counter(p["user_id"] for p in purchases if p["transaction_id"] in frauds)
        for user in {p["user_id"] for p in purchases}:
            assert store.entity("user", user).n_frauds == fraud_users[user], user
        assert all(store.snapshot(p["transaction_id"]) is not None for p in purchases)
