"""Model versions across two running workers: hot swap and rollback without restart."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import orjson
import pytest
from confluent_kafka import Producer

from worker_harness import Worker

pytestmark = pytest.mark.kafka

T0_MS = 1_704_067_200_000


def purchase(i: int) -> dict:
    fraud = i % 20 == 0
    return {"transaction_id": f"tx-{i}", "event_time": T0_MS + i * 1000,
            "user_id": f"u{i % 97}", "seller_id": "s-new" if fraud else f"s{i % 13}",
            "item_id": "i", "card_hash": f"c{i % 97}",
            "price": 900.0 if fraud else 10.0 + i % 50, "n_items": 9 if fraud else 1}


def test_a_new_version_and_a_rollback_reach_every_running_worker(kafka_bootstrap, tmp_path,
                                                                 unique):
    shared = tmp_path / "models"
    workers = [Worker(kafka_bootstrap, tmp_path / name, unique, model_dir=str(shared),
                      refresh_model_seconds=0.5) for name in ("a", "b")]
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "linger.ms": 2})
    stop = threading.Event()
    topic = workers[0].settings.topic_purchases

    def keep_scoring() -> None:  # traffic on both partitions, so both workers score
        i = 10_000
        while not stop.is_set():
            producer.produce(topic, key=f"k{i}".encode(), value=orjson.dumps(purchase(i)))
            producer.poll(0)
            i += 1
            stop.wait(0.02)

    for w in workers:
        w.start()
    traffic = threading.Thread(target=keep_scoring)
    traffic.start()
    try:
        labelled = [purchase(i) for i in range(600)]
        for p in labelled:
            producer.produce(topic, key=p["card_hash"].encode(), value=orjson.dumps(p))
        producer.flush(30)
        for w in workers:  # both have joined the group and scored their share
            w.wait_for(lambda w=w: w.metric("fraudstream_events_total", kind="purchase",
                                            outcome="scored") > 0, 90, "scoring")
        labels_topic = workers[0].settings.topic_labels
        for start in (0, 300):  # two rounds of labels: at least two published versions
            for p in labelled[start:start + 300]:
                label = {"transaction_id": p["transaction_id"],
                         "is_fraud": p["seller_id"] == "s-new",
                         "label_time": p["event_time"] + 60_000, "source": "review"}
                producer.produce(labels_topic, key=p["transaction_id"].encode(),
                                 value=orjson.dumps(label))
            producer.flush(30)
            for w in workers:
                w.wait_for(lambda w=w, n=start // 300 + 1: w.metric(
                    "fraudstream_model_version", model="dynamic") >= n, 60,
                    f"version {start // 300 + 1} on every worker")
        newest = max(w.metric("fraudstream_model_version", model="dynamic") for w in workers)
        assert newest >= 2

        env = {**os.environ, "FRAUDSTREAM_MODEL_DIR": str(shared)}
        listing = subprocess.run([sys.executable, "-m", "stream.cli", "model", "list"],
                                 env=env, capture_output=True, text=True, check=True)
        assert "v1 " in listing.stdout and f"* v{int(newest)}" in listing.stdout
        subprocess.run([sys.executable, "-m", "stream.cli", "model", "rollback", "1"], env=env,
                       check=True, capture_output=True)
        for w in workers:
            w.wait_for(lambda w=w: w.metric("fraudstream_model_version", model="dynamic") == 1,
                       30, "the rollback on every worker")
    finally:
        stop.set()
        traffic.join()
        producer.flush(10)
        for w in workers:
            w.stop()
