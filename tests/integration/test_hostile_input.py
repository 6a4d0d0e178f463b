"""Every kind of bad input goes to a dead-letter topic; valid events around it are unharmed.

Purchases and labels that are null (tombstones), not UTF-8, not JSON, not
objects, miss fields, have wrong types, NaN or infinite numbers, absurd
amounts or times, repeated keys, unknown schema versions or a 10 MB body are
interleaved with valid ones on a running worker. Each bad record must land on its dead-letter topic
unchanged, with a machine-readable reason and where it came from; the
rejection counters must match; every valid event must be processed; and the
worker must keep its pace afterwards.
"""

from __future__ import annotations

import random
import time
from collections import Counter

import orjson
import pytest

from deploy.kafka.launcher import create_topics
from ground_truth import LabelFeeder, T0_MS, keyed, legit_purchase, store_mismatches, traffic
from worker_harness import Sender, Worker, read_topic

pytestmark = pytest.mark.kafka

MAX_MESSAGE = 16 * 1024 * 1024
HUGE = 10 * 1024 * 1024
N_BEFORE, N_AFTER = 200, 300
YEAR_MS = 365 * 24 * 3600 * 1000


def bad_purchases(rng: random.Random) -> list[tuple[bytes | None, str]]:
    """Bad purchase records (raw value) with the reason each must be rejected for."""
    def p(i: int, **changes) -> dict:
        event = legit_purchase(i, rng)
        event.update(transaction_id=f"bad-{i}")
        for key, value in changes.items():
            if value is ...:
                del event[key]
            else:
                event[key] = value
        return event

    def text(event: dict, **raw: str) -> bytes:
        """JSON with some values written verbatim (literals orjson would never emit)."""
        body = orjson.dumps(event).decode()[:-1]
        return (body + "".join(f', "{k}": {v}' for k, v in raw.items()) + "}").encode()

    now_ms = int(time.time() * 1000)
    return [
        (b"\xff\xfe\x00 purchase \x80\x81", "not_utf8"),
        (b"this is not json", "not_json"),
        (b"", "not_json"),
        (None, "not_json"),  # a null value (tombstone)
        (b'{"transaction_id": "bad-truncated", "price": 1', "not_json"),
        (b"[" * 5000 + b"]" * 5000, "not_json"),  # deeper than any parser should follow
        (orjson.dumps([p(1)]), "not_object"),
        (b'"a purchase"', "not_object"),
        (orjson.dumps(p(2, price=...)), "missing_field"),
        (orjson.dumps(p(3, transaction_id=...)), "missing_field"),
        (orjson.dumps(p(4, card_hash=None)), "missing_field"),
        (orjson.dumps(p(5, price="12.50")), "bad_type"),
        (orjson.dumps(p(6, n_items=2.5)), "bad_type"),
        (orjson.dumps(p(7, user_id=123)), "bad_type"),
        (orjson.dumps(p(8, event_time=True)), "bad_type"),
        (orjson.dumps(p(9, event_time="last tuesday")), "bad_type"),
        (text(p(10, price=...), price="NaN"), "not_json"),
        (text(p(11, price=...), price="Infinity"), "not_json"),
        (text(p(12, price=...), price="-Infinity"), "not_json"),
        (text(p(13, price=...), price="1e400"), "not_json"),
        (orjson.dumps(p(14, price=-12.5)), "out_of_range"),
        (orjson.dumps(p(15, price=0)), "out_of_range"),
        (orjson.dumps(p(16, price=1e12)), "out_of_range"),
        (orjson.dumps(p(17, n_items=10**9)), "out_of_range"),
        (orjson.dumps(p(18, n_items=-3)), "out_of_range"),
        (orjson.dumps(p(19, user_id="")), "out_of_range"),
        (orjson.dumps(p(20, seller_id="s" * 10_000)), "out_of_range"),
        (orjson.dumps(p(21, event_time=5)), "out_of_range"),
        (orjson.dumps(p(22, event_time=now_ms + 10 * YEAR_MS)), "future_time"),
        (orjson.dumps(p(23, event_time="2999-01-01T00:00:00Z")), "future_time"),
        (orjson.dumps(p(24, schema_version=2)), "unknown_schema_version"),
        (orjson.dumps(p(25, schema_version="1")), "unknown_schema_version"),
        (text(p(26), price="-1"), "duplicate_key"),  # {"price": 10.5, ..., "price": -1}
        (text(p(27, price=-1.0), price="10"), "duplicate_key"),  # the last value looks fine
        (orjson.dumps(p(28, note="x" * HUGE)), "oversize"),
    ]


def bad_labels() -> list[tuple[bytes | None, str]]:
    """Bad label records with the reason each must be rejected for."""
    good = {"transaction_id": "tx-0", "is_fraud": True, "label_time": T0_MS, "source": "review"}

    def lb(**changes) -> bytes:
        return orjson.dumps({k: v for k, v in {**good, **changes}.items() if v is not ...})

    return [
        (b"\xc3\x28 label", "not_utf8"),
        (b"fraud!", "not_json"),
        (None, "not_json"),
        (b'{"transaction_id": "tx-1", "is_fraud": NaN, "label_time": 1, "source": "x"}',
         "not_json"),
        (b'{"transaction_id": "tx-1", "is_fraud": true, "label_time": Infinity, "source": "x"}',
         "not_json"),
        (orjson.dumps([good]), "not_object"),
        (lb(is_fraud=...), "missing_field"),
        (lb(source=...), "missing_field"),
        (lb(is_fraud="yes"), "bad_type"),
        (lb(is_fraud=1), "bad_type"),
        (lb(label_time="yesterday"), "bad_type"),
        (lb(source=7), "bad_type"),
        (lb(label_time=5), "out_of_range"),
        (lb(transaction_id=""), "out_of_range"),
        (lb(schema_version=99), "unknown_schema_version"),
        (b'{"transaction_id": "tx-2", "is_fraud": false, "is_fraud": true, '
         b'"label_time": 1704067200000, "source": "review"}', "duplicate_key"),
        (lb(note="x" * HUGE), "oversize"),
    ]


@pytest.fixture
def worker(kafka_bootstrap, tmp_path, unique):
    """A worker whose input and dead-letter topics accept 16 MB records."""
    names = {f"purchases-{unique}": 2, f"labels-{unique}": 1, f"alerts-{unique}": 1,
             f"purchases-dlq-{unique}": 1, f"labels-dlq-{unique}": 1}
    create_topics(kafka_bootstrap, names, config={"max.message.bytes": str(MAX_MESSAGE)})
    w = Worker(kafka_bootstrap, tmp_path, unique)
    assert set(w.settings.topic_partitions()) == set(names)
    yield w.start()
    w.stop()


def scored(worker: Worker) -> float:
    return worker.metric("fraudstream_events_total", kind="purchase", outcome="scored")


def assert_dead_letters(records, sent: list[tuple[bytes | None, str]], topic: str,
                        sender: Sender) -> None:
    """Each bad record once, unchanged, with its reason and its source partition and offset."""
    assert sorted((m.value() or b"") for m in records) == sorted((v or b"") for v, _ in sent)
    reasons = dict(sent)
    for m in records:
        headers = {k: v.decode() for k, v in m.headers()}
        partition, offset = sender.landed[(topic, m.value())]
        assert headers["reason"] == reasons[m.value()], (m.value()[:80], headers)
        assert headers["source_topic"] == topic
        assert (int(headers["source_partition"]), int(headers["source_offset"])) == \
               (partition, offset), (m.value()[:80], headers)
        assert "detail" in headers


def test_bad_input_is_dead_lettered_and_valid_input_flows(worker, tmp_path):
    s = worker.settings
    rng = random.Random(4)
    sender = Sender(s.kafka_bootstrap, **{"message.max.bytes": MAX_MESSAGE + 1024})
    bad_p, bad_l = bad_purchases(rng), bad_labels()
    valid = traffic(0, N_BEFORE + len(bad_p) + N_AFTER, fraud_share=0.05, rng=rng)
    before, during, after = (valid[:N_BEFORE], valid[N_BEFORE:N_BEFORE + len(bad_p)],
                             valid[N_BEFORE + len(bad_p):])
    labels = LabelFeeder(sender, s.topic_labels, tmp_path / "store", before + during)

    for key, value in keyed(before, "card_hash"):
        sender.send(s.topic_purchases, key, value)
    sender.flush()
    labels.start()
    worker.wait_scored(N_BEFORE, 60)

    # The hostile burst, every bad record followed by a valid one.
    for (value, _), good in zip(bad_p, during):
        sender.send(s.topic_purchases, f"bad-{rng.random()}", value)
        sender.send(s.topic_purchases, good["card_hash"], orjson.dumps(good))
    for value, _ in bad_l:
        sender.send(s.topic_labels, "bad", value)
    sender.flush()
    worker.wait_scored(N_BEFORE + len(during), 60)

    # No slowdown afterwards: a burst of valid purchases is scored within seconds.
    started = time.monotonic()
    for key, value in keyed(after, "card_hash"):
        sender.send(s.topic_purchases, key, value)
    sender.flush()
    worker.wait_scored(len(valid), 30)
    catch_up = time.monotonic() - started
    worker.wait_for(lambda: not labels.is_alive(), 60, "the valid labels to be sent")
    sender.flush()
    worker.wait_for(lambda: worker.metric("fraudstream_events_total", kind="label",
                                          outcome="applied") >= len(labels.sent), 60,
                    "the valid labels to be applied")
    samples = worker.metrics()
    assert worker.proc.poll() is None, "the worker is still running"
    assert catch_up < 5.0, f"{N_AFTER} valid purchases took {catch_up:.1f}s after the burst"

    assert_dead_letters(read_topic(s.kafka_bootstrap, s.topic_purchases_dlq), bad_p,
                        s.topic_purchases, sender)
    assert_dead_letters(read_topic(s.kafka_bootstrap, s.topic_labels_dlq), bad_l,
                        s.topic_labels, sender)

    rejected = {(dict(labels)["kind"], dict(labels)["reason"]): v
                for (name, labels), v in samples.items()
                if name == "fraudstream_rejected_events_total"}
    expected = Counter(("purchase", r) for _, r in bad_p)
    expected.update(("label", r) for _, r in bad_l)
    assert rejected == dict(expected)
    outcomes = {(dict(labels)["kind"], dict(labels)["outcome"]): v
                for (name, labels), v in samples.items() if name == "fraudstream_events_total"}
    assert outcomes == {("purchase", "scored"): len(valid), ("purchase", "rejected"): len(bad_p),
                        ("label", "applied"): len(labels.sent), ("label", "rejected"): len(bad_l)}

    worker.stop()
    problems = store_mismatches(tmp_path / "store", valid, labels.sent, s.store_config())
    assert not problems, "\n".join(problems)
