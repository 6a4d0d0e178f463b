"""The per-event logic, free of any transport.

The Faust agents and the replay command both call :class:`FraudPipeline`:

* purchases: decode and validate -> update user, seller and card state and
  read the features -> keep the snapshot -> score -> alert;
* labels: decode -> find the snapshot -> update the entities -> learn.

It takes :class:`Message` objects (bytes plus where they came from) and
returns what to send (alerts, dead letters); the caller sends them. The store
is committed before a batch returns, so the caller may commit its offsets
once it has sent the outputs.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Sequence

import orjson

from features.schemas import (InvalidEvent, decode_label, decode_purchase, format_time,
                              positional_constructor)
from features.store import FeatureStore, Snapshot
from models.monitoring import ModelMonitor
from models.serving import ModelRuntime
from stream.metrics import Metrics, observe_many

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Message:
    """One input record: its bytes and where it came from.

    A replay gives each event as the object its file reader parsed instead
    of bytes (see :func:`features.schemas.decode_purchase`).
    """

    value: bytes | dict
    key: bytes | None = None
    topic: str = ""
    partition: int = -1
    offset: int = -1
    timestamp: float | None = None  # when it was produced, seconds


# Message(value, key, topic, partition, offset, timestamp), every field given, in half the time.
new_message = positional_constructor(Message)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A rejected input, to be sent unchanged with the reason in its headers."""

    message: Message
    reason: str
    detail: str

    def headers(self) -> list[tuple[str, bytes]]:
        m = self.message
        return [("reason", self.reason.encode()), ("detail", self.detail.encode()),
                ("source_topic", m.topic.encode()), ("source_partition", str(m.partition).encode()),
                ("source_offset", str(m.offset).encode())]


@dataclass(slots=True)
class BatchResult:
    alerts: list[tuple[bytes, bytes]] = field(default_factory=list)  # (key, JSON value)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    snapshots: list[Snapshot] = field(default_factory=list)  # what was scored, in order
    processed: int = 0


class FraudPipeline:
    """Purchases to alerts and labels to learning, over a feature store and models.

    ``clock`` gives the current time in seconds (the wall clock live, the
    replay clock in a backtest).
    """

    def __init__(self, store: FeatureStore, models: ModelRuntime, threshold: float = 0.5,
                 metrics: Metrics | None = None, clock: Callable[[], float] = time.time,
                 max_event_bytes: int = 64 * 1024, monitor: ModelMonitor | None = None,
                 report_every_seconds: float = 2.0,
                 on_labelled: Callable[[list[tuple[Snapshot, bool]]], object] | None = None):
        self.store = store
        self.models = models
        self.threshold = threshold
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.max_event_bytes = max_event_bytes
        # Warm-up: at the start of a stream the feature windows fill; that is no drift.
        self.monitor = monitor or ModelMonitor(models=models.models(), psi_reference=20_000,
                                               psi_window=5_000, psi_warmup=50_000)
        self.report_every_seconds = report_every_seconds
        self.on_labelled = on_labelled  # e.g. a feature log of what was learned
        self._last_report = 0.0
        self.drift_log: deque[dict] = deque(maxlen=1000)  # recent drift signals, for reports
        self._catch_up()

    def _catch_up(self) -> None:
        """Learn the labels the store applied after the model version it starts from (a
        crash lost them between a commit and a publish; their redelivery is a duplicate)."""
        applied_since = getattr(self.store, "applied_since", None)
        if applied_since is None or self.models.registry is None:
            return
        missed = applied_since(self.models.label_seq)
        for snap in missed:
            self.models.learn(snap.features, snap.label)
        self.models.label_seq = self.store.label_seq
        if missed:
            log.info("learned %d labels applied after model version %d", len(missed),
                     self.models.version)

    def process_purchases(self, messages: Sequence[Message]) -> BatchResult:
        """Score a micro-batch of purchase messages; return alerts and dead letters."""
        m = self.metrics
        started = time.perf_counter()
        result = BatchResult(processed=len(messages))
        now = self.clock()
        purchases, sources = [], []
        for msg in messages:
            try:
                purchases.append(decode_purchase(msg.value, now=now,
                                                 max_bytes=self.max_event_bytes))
                sources.append(msg)
            except InvalidEvent as exc:
                result.dead_letters.append(DeadLetter(msg, exc.reason, exc.detail))
        if not purchases:
            self._count_rejected("purchase", result)
            return result

        t0 = time.perf_counter()
        snapshots = result.snapshots = self.store.process_purchases(purchases)
        t1 = time.perf_counter()
        decision = self.models.score_batch([s.features for s in snapshots])
        for snap, scores in zip(snapshots, decision.scores):
            snap.scores.update(scores)  # kept with the snapshot for live quality later
        t2 = time.perf_counter()
        self.store.commit()
        m.child(m.store_seconds, "purchases").observe(time.perf_counter() - t2 + t1 - t0)
        self._on_signals(self.monitor.observe_scored([s.features for s in snapshots],
                                                     decision.scores))

        scored_at = time.time()
        champion = decision.champion
        self._report_versions(decision.versions)
        for name in decision.scores[0]:
            observe_many(m.child(m.scores, name), [s[name] for s in decision.scores])
        latency = m.child(m.latency, "purchase")
        duplicates = 0
        for snap, scores, msg, p in zip(snapshots, decision.scores, sources, purchases):
            duplicates += snap.duplicate
            if decision.ready and scores[champion] > self.threshold:
                alert = self._alert(snap, p, scores, decision, scored_at, msg.timestamp)
                result.alerts.append((snap.transaction_id.encode(), orjson.dumps(alert)))
            if msg.timestamp:
                latency.observe(max(0.0, scored_at - msg.timestamp))
        m.child(m.events, "purchase", "scored").inc(len(snapshots) - duplicates)
        if duplicates:
            m.child(m.events, "purchase", "duplicate").inc(duplicates)
        if result.alerts:
            m.child(m.alerts, champion).inc(len(result.alerts))
        self._count_rejected("purchase", result)
        m.child(m.batch_seconds, "purchase").observe(time.perf_counter() - started)
        m.child(m.batch_size, "purchase").observe(len(messages))
        return result

    def _alert(self, snap: Snapshot, p, scores: dict[str, float], decision, scored_at: float,
               produced_at: float | None) -> dict:
        champion = decision.champion
        return {
            "transaction_id": snap.transaction_id,
            "event_time": format_time(snap.event_ts),
            "score": round(scores[champion], 6),
            "threshold": self.threshold,
            "model": {"name": champion, "version": decision.versions[champion]},
            "versions": decision.versions,
            "scores": {k: round(v, 6) for k, v in scores.items()},
            "reasons": self.models.reasons(champion, snap.features),
            "user_id": p.user_id,
            "seller_id": p.seller_id,
            "card_hash": p.card_hash,
            "price": p.price,
            "scored_at": format_time(scored_at),
            "latency_seconds": round(scored_at - produced_at, 6) if produced_at else None,
        }

    def process_labels(self, messages: Sequence[Message]) -> BatchResult:
        """Apply a micro-batch of label messages: state updates, then learning."""
        m = self.metrics
        started = time.perf_counter()
        result = BatchResult(processed=len(messages))
        labels, sources = [], []
        for msg in messages:
            try:
                labels.append(decode_label(msg.value, max_bytes=self.max_event_bytes))
                sources.append(msg)
            except InvalidEvent as exc:
                result.dead_letters.append(DeadLetter(msg, exc.reason, exc.detail))
        if labels:
            t0 = time.perf_counter()
            outcomes = self.store.process_labels(labels)
            # Nothing is learned or counted before the state is durable: a batch whose commit
            # fails is retried from scratch.
            self.store.commit()
            m.child(m.store_seconds, "labels").observe(time.perf_counter() - t0)
            statuses: dict[str, int] = {}
            learned = [0, 0]  # legitimate, fraud
            observe = self.monitor.observe_label
            # Learned together, in order; a drift signal (which may fork or swap the model)
            # is acted on after the labels before it are learned, as one by one.
            xs: list = []
            ys: list[bool] = []
            for outcome in outcomes:
                status = outcome.status
                statuses[status] = statuses.get(status, 0) + 1
                if status == "applied":
                    snap, is_fraud = outcome.snapshot, outcome.label.is_fraud
                    signals = observe(snap.scores, is_fraud, snap.card_hash, snap.event_ts,
                                      outcome.label.label_ts)
                    if signals:
                        if xs:
                            self.models.learn_many(xs, ys)
                            xs, ys = [], []
                        self._on_signals(signals)
                    xs.append(snap.features)
                    ys.append(is_fraud)
                    learned[is_fraud] += 1
            if xs:
                self.models.learn_many(xs, ys)
            for status, n in statuses.items():
                m.child(m.events, "label", status).inc(n)
            for is_fraud, n in enumerate(learned):
                if n:
                    m.child(m.labels_learned, "true" if is_fraud else "false").inc(n)
            self.models.label_seq = getattr(self.store, "label_seq", 0)
            if self.on_labelled is not None:
                self.on_labelled([(o.snapshot, o.label.is_fraud) for o in outcomes
                                  if o.status == "applied"])
            self.models.maybe_publish()
            self._report_versions(self.models.versions())
            done = time.time()
            latency = m.child(m.latency, "label")
            for msg in sources:
                if msg.timestamp:
                    latency.observe(max(0.0, done - msg.timestamp))
        self._count_rejected("label", result)
        m.child(m.batch_seconds, "label").observe(time.perf_counter() - started)
        m.child(m.batch_size, "label").observe(len(messages))
        return result

    def _count_rejected(self, kind: str, result: BatchResult) -> None:
        """Rejections are counted once the batch went through (not at every retry)."""
        for dead in result.dead_letters:
            self.metrics.events.labels(kind=kind, outcome="rejected").inc()
            self.metrics.rejected.labels(kind=kind, reason=dead.reason).inc()

    def _on_signals(self, signals) -> None:
        """Log every drift signal with its evidence; count drifts; adapt the dynamic model."""
        for signal in signals:
            log.warning("%s", signal)
            if signal.kind == "drift":
                self.metrics.drift_detections.labels(detector=signal.detector,
                                                     signal=signal.signal).inc()
                self.drift_log.append({"time": self.clock(), "detector": signal.detector,
                                       "signal": signal.signal, "statistic": signal.statistic,
                                       "stratum": signal.stratum})
            if signal.detector == "error" and signal.signal == "dynamic":
                if signal.kind == "drift":
                    self.models.on_drift()
                else:
                    self.models.on_drift_warning()

    def quality_report(self) -> Callable[[], None] | None:
        """The quality and drift gauges' update, when one is due (every
        ``report_every_seconds``): a function to call, on any thread.

        The labelled windows are copied now; the figures (tens of
        milliseconds of sorting per model over 50,000 labels) are computed
        when the function runs, so a worker runs it off its event loop and
        purchases keep flowing meanwhile.
        """
        now = time.monotonic()
        if now - self._last_report < self.report_every_seconds:
            return None
        self._last_report = now
        snapshot = self.monitor.quality_snapshot()
        statistics = self.monitor.statistics()
        m = self.metrics

        def report() -> None:
            for model, q in snapshot.report().items():
                m.model_roc_auc.labels(model=model).set(q["roc_auc"])
                m.model_average_precision.labels(model=model).set(q["average_precision"])
                m.model_card_precision_at_k.labels(model=model).set(q["card_precision_at_k"])
            for (detector, signal), value in statistics.items():
                if value is not None:
                    m.drift_statistic.labels(detector=detector, signal=signal).set(value)
        return report

    def _report_versions(self, versions: dict[str, int]) -> None:
        for name, version in versions.items():
            self.metrics.child(self.metrics.model_version, name).set(version)

    def tick(self) -> Callable[[], None] | None:
        """Work that is due by time, not by events (a worker calls it every second).

        Labels learned just before a quiet spell are published without
        waiting for the next label. Returns :meth:`quality_report`'s
        function when the gauges are due, for the caller to run.
        """
        self.models.maybe_publish()
        self._report_versions(self.models.versions())
        return self.quality_report()

    def close(self) -> None:
        self.models.maybe_publish(force=True)
        self.store.close()
