"""The transport-free pipeline: purchases to alerts, labels to learning."""

from __future__ import annotations

import orjson
import pytest
from prometheus_client import CollectorRegistry

from features.store.embedded import EmbeddedStore
from models.serving import ModelRuntime
from stream.metrics import Metrics
from stream.pipeline import FraudPipeline, Message

T0 = 1_704_067_200_000  # 2024-01-01, epoch ms


def purchase(i: int, price: float = 20.0, card: str = "c1", n_items: int = 1) -> bytes:
    return orjson.dumps({"transaction_id": f"t{i}", "event_time": T0 + i * 60_000,
                         "user_id": f"u-{card}", "seller_id": "s1", "item_id": "i1",
                         "card_hash": card, "price": price, "n_items": n_items})


def label(i: int, is_fraud: bool) -> bytes:
    return orjson.dumps({"transaction_id": f"t{i}", "is_fraud": is_fraud,
                         "label_time": T0 + i * 60_000 + 3_600_000, "source": "review"})


@pytest.fixture
def pipeline(tmp_path):
    p = FraudPipeline(EmbeddedStore(tmp_path / "store"), ModelRuntime(),
                      metrics=Metrics(CollectorRegistry()))
    yield p
    p.close()


def sample(p: FraudPipeline, name: str, **labels) -> float:
    return p.metrics.registry.get_sample_value(name, labels) or 0.0


def msgs(*values: bytes) -> list[Message]:
    return [Message(v, topic="purchases", partition=0, offset=i) for i, v in enumerate(values)]


def test_a_label_changes_the_next_prediction_and_a_duplicate_does_not(pipeline):
    pipeline.process_purchases(msgs(purchase(1, price=900.0, card="bad", n_items=9)))
    before = pipeline.models.score_batch([pipeline.store.snapshot("t1").features]).scores[0]
    pipeline.process_labels(msgs(label(1, True)))
    after = pipeline.models.score_batch([pipeline.store.snapshot("t1").features]).scores[0]
    assert after["dynamic"] > before["dynamic"]
    pipeline.process_labels(msgs(label(1, True)))
    again = pipeline.models.score_batch([pipeline.store.snapshot("t1").features]).scores[0]
    assert again == after and pipeline.models.dynamic.n_labels == 1
    assert sample(pipeline, "fraudstream_events_total", kind="label", outcome="duplicate") == 1


def test_the_learned_pattern_is_alerted_with_reasons(pipeline):
    values = [purchase(i, price=900.0 if i % 10 == 0 else 20.0,
                       card="stolen" if i % 10 == 0 else f"c{i % 7}",
                       n_items=12 if i % 10 == 0 else 1) for i in range(400)]
    pipeline.process_purchases(msgs(*values))
    pipeline.process_labels(msgs(*(label(i, i % 10 == 0) for i in range(400))))
    result = pipeline.process_purchases(msgs(purchase(1000, 950.0, "stolen", 15),
                                             purchase(1001, 21.0, "c3")))
    assert [orjson.loads(v)["transaction_id"] for _, v in result.alerts] == ["t1000"]
    alert = orjson.loads(result.alerts[0][1])
    assert alert["score"] > alert["threshold"] == 0.5
    assert alert["model"] == {"name": "dynamic", "version": 0}
    assert alert["scores"]["dynamic"] == alert["score"]
    assert {r["feature"] for r in alert["reasons"]} & {"amount", "card_count_1d",
                                                       "seller_items_typicality"}
    assert sample(pipeline, "fraudstream_alerts_total", model="dynamic") == 1


def test_bad_input_becomes_dead_letters_and_good_input_goes_on(pipeline):
    good = purchase(1)
    bad = [b"\xff\xfe", b"[1, 2]", b"{not json", orjson.dumps({"transaction_id": "x"}),
           purchase(2, price=-1.0), purchase(3, price=float("inf")) if False else
           good.replace(b'"price":20.0', b'"price":"20"')]
    result = pipeline.process_purchases(msgs(*bad, good))
    reasons = [d.reason for d in result.dead_letters]
    assert reasons == ["not_utf8", "not_object", "not_json", "missing_field", "out_of_range",
                       "bad_type"]
    assert [d.message.value for d in result.dead_letters] == bad
    headers = dict(result.dead_letters[0].headers())
    assert headers["source_offset"] == b"0" and headers["reason"] == b"not_utf8"
    assert sample(pipeline, "fraudstream_events_total", kind="purchase", outcome="scored") == 1
    assert sample(pipeline, "fraudstream_rejected_events_total", kind="purchase",
                  reason="missing_field") == 1


def test_a_redelivered_purchase_is_scored_again_but_counted_once(pipeline):
    pipeline.process_purchases(msgs(purchase(1), purchase(2)))
    result = pipeline.process_purchases(msgs(purchase(1)))
    assert not result.dead_letters
    assert pipeline.store.entity("card", "c1").n_purchases == 2
    assert sample(pipeline, "fraudstream_events_total", kind="purchase", outcome="duplicate") == 1


def test_labels_for_unknown_transactions_are_counted_and_dropped(pipeline):
    result = pipeline.process_labels(msgs(label(42, True), b'{"transaction_id": "t1"}'))
    assert [d.reason for d in result.dead_letters] == ["missing_field"]
    assert sample(pipeline, "fraudstream_events_total", kind="label", outcome="unknown") == 1
    assert pipeline.models.dynamic.n_labels == 0


def test_the_monitor_gets_each_label_s_own_time_not_the_worker_s_clock(pipeline):
    """A label delivered days late (a backlog, a backfill) keeps its own delay: one
    reported an hour after the purchase counts as quick for the error-drift detector."""
    pipeline.process_purchases(msgs(purchase(1), purchase(2)))
    seen = []
    observe = pipeline.monitor.observe_label

    def record(scores, is_fraud, card, event_ts, label_ts=None):
        seen.append(label_ts - event_ts)
        return observe(scores, is_fraud, card, event_ts, label_ts)

    pipeline.monitor.observe_label = record
    pipeline.clock = lambda: T0 / 1000 + 10 * 86_400  # the worker reads them ten days later
    pipeline.process_labels(msgs(label(1, True), label(2, False)))
    assert seen == [3_600.0, 3_600.0]
    detector = pipeline.monitor.errors["dynamic"]
    assert detector.n_seen == 2 and detector.n_frauds == 1


def test_quality_gauges_come_from_the_windows_copied_when_the_report_was_due(pipeline):
    """The tick hands back the gauges' update, due every few seconds, to run elsewhere (a
    worker runs it off its event loop): its figures are those of the labels up to the
    tick, whatever is learned before it runs."""
    pipeline.process_purchases(msgs(*(purchase(i, card=f"c{i}") for i in range(4))))
    pipeline.process_labels(msgs(label(0, True), label(1, False)))
    report = pipeline.tick()
    assert pipeline.tick() is None  # not due again yet
    pipeline.process_labels(msgs(label(2, True), label(3, False)))
    gauge = "fraudstream_model_card_precision_at_k"
    assert sample(pipeline, gauge, model="dynamic") == 0.0  # nothing computed on the way
    report()
    assert sample(pipeline, gauge, model="dynamic") == 1 / 100  # one fraudulent card of two
    pipeline.report_every_seconds = 0.0
    pipeline.tick()()
    assert sample(pipeline, gauge, model="dynamic") == 2 / 100
    assert pipeline.monitor.report()["dynamic"]["card_precision_at_k"] == 2 / 100
