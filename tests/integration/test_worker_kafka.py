"""A real worker process on a real Kafka broker, end to end.

Purchases and labels go in with confluent-kafka; the test reads what comes out
on the alerts and dead-letter topics and on ``/metrics``.
"""

from __future__ import annotations

import random

import orjson
import pytest
from confluent_kafka import Producer

from worker_harness import Worker, consume_all, metric

pytestmark = pytest.mark.kafka

T0 = 1_704_067_200.0  # 2024-01-01T00:00:00Z
N_TRAIN, N_TEST = 3000, 1000


def purchase(i: int, fraud: bool, rng: random.Random) -> dict:
    """Legitimate users buy cheap things at their usual sellers; fraud uses a
    handful of compromised cards for large, many-item orders at new sellers."""
    if fraud:
        card = f"card-stolen-{rng.randrange(40)}"
        return {"transaction_id": f"tx-{i}", "event_time": int((T0 + i * 30) * 1000),
                "user_id": f"user-{card}", "seller_id": f"seller-new-{rng.randrange(5)}",
                "item_id": "gift-card", "card_hash": card, "price": round(rng.uniform(600, 1500), 2),
                "n_items": rng.randint(10, 30),
                "seller_registered_at": int((T0 + i * 30 - 3600) * 1000)}
    user = rng.randrange(300)
    return {"transaction_id": f"tx-{i}", "event_time": int((T0 + i * 30) * 1000),
            "user_id": f"user-{user}", "seller_id": f"seller-{user % 50}",
            "item_id": f"item-{rng.randrange(100)}", "card_hash": f"card-{user}",
            "price": round(rng.uniform(5, 80), 2), "n_items": rng.choice((1, 1, 1, 2)),
            "user_registered_at": "2022-06-01T00:00:00Z",
            "seller_registered_at": "2021-01-01T00:00:00Z"}


@pytest.fixture
def worker(kafka_bootstrap, tmp_path, unique):
    w = Worker(kafka_bootstrap, tmp_path, unique).start()
    yield w
    w.stop()


def test_purchases_to_alerts_through_a_real_broker(worker):
    settings = worker.settings
    rng = random.Random(7)
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "linger.ms": 5})

    def send(topic: str, key: str, value: bytes) -> None:
        producer.produce(topic, key=key.encode(), value=value)
        producer.poll(0)

    # 1. Training traffic, then its labels: the model learns the fraud pattern.
    train = [purchase(i, fraud=rng.random() < 0.05, rng=rng) for i in range(N_TRAIN)]
    frauds = {p["transaction_id"] for p in train if p["item_id"] == "gift-card"}
    for p in train:
        send(settings.topic_purchases, p["card_hash"], orjson.dumps(p))
    producer.flush(30)
    worker.wait_scored(N_TRAIN)
    for p in train:
        label = {"transaction_id": p["transaction_id"], "is_fraud": p["transaction_id"] in frauds,
                 "label_time": p["event_time"] + 86_400_000, "source": "review"}
        send(settings.topic_labels, p["transaction_id"], orjson.dumps(label))
    send(settings.topic_labels, "tx-unknown", orjson.dumps(
        {"transaction_id": "tx-unknown", "is_fraud": True, "label_time": "2024-01-02T00:00:00Z",
         "source": "review"}))
    producer.flush(30)
    worker.wait_for(lambda: worker.metric("fraudstream_events_total", kind="label",
                                          outcome="applied") >= N_TRAIN, 120, "labels learned")

    # 2. Malformed input goes to the dead-letter topic and does not stop the worker.
    bad = {b"this is not json": "not_json",
           orjson.dumps({k: v for k, v in purchase(10**6, False, rng).items()
                         if k != "price"}): "missing_field",
           orjson.dumps({**purchase(10**6 + 1, False, rng), "price": -3.0}): "out_of_range"}
    for value in bad:
        send(settings.topic_purchases, "bad", value)

    # 3. New traffic: the fraud pattern is alerted, legitimate traffic mostly not.
    test = [purchase(N_TRAIN + i, fraud=rng.random() < 0.05, rng=rng) for i in range(N_TEST)]
    test_frauds = {p["transaction_id"] for p in test if p["item_id"] == "gift-card"}
    for p in test:
        send(settings.topic_purchases, p["card_hash"], orjson.dumps(p))
    producer.flush(30)
    worker.wait_scored(N_TRAIN + N_TEST)

    samples = worker.metrics()
    n_alerts = metric(samples, "fraudstream_alerts_total", model="dynamic")
    alerts = consume_all(settings.kafka_bootstrap, settings.topic_alerts, int(n_alerts), 60)
    alerted = {orjson.loads(m.value())["transaction_id"] for m in alerts}
    test_ids = {p["transaction_id"] for p in test}
    caught = alerted & test_frauds
    false_alarms = (alerted & test_ids) - test_frauds
    assert len(test_frauds) >= 30
    assert len(caught) >= 0.9 * len(test_frauds), (len(caught), len(test_frauds))
    assert len(false_alarms) <= 0.02 * (N_TEST - len(test_frauds)), len(false_alarms)

    example = orjson.loads(next(m.value() for m in alerts
                                if orjson.loads(m.value())["transaction_id"] in caught))
    assert example["model"]["name"] == "dynamic" and example["score"] > example["threshold"]
    assert set(example) >= {"transaction_id", "event_time", "score", "threshold", "model",
                            "scores", "reasons", "scored_at", "latency_seconds"}
    assert example["reasons"], "an alert says which features pushed its score up"

    dead = consume_all(settings.kafka_bootstrap, settings.topic_purchases_dlq, len(bad), 30)
    assert sorted(m.value() for m in dead) == sorted(bad)
    for m in dead:
        headers = dict(m.headers())
        assert headers["reason"].decode() == bad[m.value()]
        assert headers["source_topic"].decode() == settings.topic_purchases
        assert int(headers["source_offset"]) >= 0

    # /metrics counters equal what was sent.
    assert metric(samples, "fraudstream_events_total", kind="purchase",
                  outcome="scored") == N_TRAIN + N_TEST
    assert metric(samples, "fraudstream_events_total", kind="purchase", outcome="rejected") == 3
    for reason in ("not_json", "missing_field", "out_of_range"):
        assert metric(samples, "fraudstream_rejected_events_total", kind="purchase",
                      reason=reason) == 1
    assert metric(samples, "fraudstream_events_total", kind="label", outcome="applied") == N_TRAIN
    assert metric(samples, "fraudstream_events_total", kind="label", outcome="unknown") == 1
    assert metric(samples, "fraudstream_labels_learned_total", is_fraud="true") == len(frauds)
    assert n_alerts == len(alerts)
    assert metric(samples, "fraudstream_event_latency_seconds_count",
                  kind="purchase") == N_TRAIN + N_TEST
    assert metric(samples, "fraudstream_model_version", model="dynamic") >= 1
    lags = [v for (name, labels), v in samples.items()
            if name == "fraudstream_consumer_lag_messages"
            and dict(labels)["topic"] == settings.topic_purchases]
    assert lags and sum(lags) == 0, lags  # everything produced was consumed
    # Live quality joins each label with the score its purchase got when scored: the
    # labelled purchases were all scored before the model had learned anything. The gauges
    # are refreshed every second or two, not with every label.
    worker.wait_for(lambda: metric(worker.metrics(), "fraudstream_model_roc_auc",
                                   model="dynamic") == 0.5, 10, "live ROC AUC of 0.5")
    assert worker.proc.poll() is None, "the worker is still running"
