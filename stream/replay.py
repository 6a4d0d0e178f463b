"""Replay / backtest: the stream's pipeline over files, in event-time order.

Purchases are processed in event-time order and each label is released at its
label time, so the model learns exactly as it would have live, with the same
delays. The very same :class:`~stream.pipeline.FraudPipeline` runs as in the
Faust worker; only the transport differs (micro-batches come from a merge of
two sorted files instead of Kafka).
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator

import orjson

from features.schemas import InvalidEvent, parse_time, text_times_kept
from stream.pipeline import FraudPipeline, new_message


@dataclass(slots=True)
class ScoredPurchase:
    transaction_id: str
    event_ts: float
    card_hash: str
    scores: dict[str, float]
    alerted: bool
    is_fraud: bool = False
    scenario: int = 0


@dataclass
class ReplayResult:
    scored: list[ScoredPurchase]
    n_purchases: int = 0
    n_labels: int = 0
    n_rejected: int = 0
    seconds: float = 0.0
    alerts: list[dict] = field(default_factory=list)

    @property
    def events_per_second(self) -> float:
        return (self.n_purchases + self.n_labels) / self.seconds if self.seconds else 0.0


# Objects allocated between two collections of the young generation during a replay.
YOUNG_OBJECTS = 20_000


def merge_in_time(purchases: Iterable[dict], labels: Iterable[dict]
                  ) -> Iterator[tuple[str, float, dict]]:
    """``(kind, time, event)`` in time order; a label comes after purchases of the same time.

    Events of a kind and time keep their order; an event without a valid time goes first
    (and to the pipeline's dead letters).

    >>> p = [{"event_time": "2018-04-02T00:00:00Z", "transaction_id": "b"},
    ...      {"event_time": "2018-04-01T00:00:00Z", "transaction_id": "a"}]
    >>> lb = [{"label_time": "2018-04-01T12:00:00Z", "transaction_id": "a"}]
    >>> [(k, e["transaction_id"]) for k, _, e in merge_in_time(p, lb)]
    [('purchase', 'a'), ('label', 'a'), ('purchase', 'b')]
    """
    events = list(purchases)
    n_purchases = len(events)
    events += labels
    times = []
    add = times.append
    for key, part in (("event_time", events[:n_purchases]), ("label_time", events[n_purchases:])):
        for e in part:
            try:
                add(parse_time(e.get(key), key))
            except InvalidEvent:
                add(float("-inf"))
    # A stable sort by time alone: at equal times the purchases (first in the list) stay
    # ahead of the labels, and events of a kind keep their order.
    order = sorted(range(len(events)), key=times.__getitem__)
    return iter([("purchase" if i < n_purchases else "label", times[i], events[i])
                 for i in order])


def replay(pipeline: FraudPipeline, purchases: list[dict], labels: list[dict],
           batch_size: int = 500, progress: Callable[[int, int], None] | None = None,
           keep_alerts: bool = False) -> ReplayResult:
    """Run the pipeline over purchases and labels as the stream would have.

    The merged stream is cut into micro-batches of ``batch_size`` events, as
    a worker takes them from its two topics: a micro-batch's purchases go
    through the pipeline first, then its labels (so a label never comes
    before its own purchase; a label released a few minutes before a
    purchase of the same micro-batch is learned just after it, as live).

    Truth for the evaluation comes from the labels (``is_fraud``, and the
    simulator's ``scenario`` when present); an unlabelled purchase counts as
    legitimate. The pipeline's clock follows the replay's event time.
    """
    # The input events (and whatever the caller holds) live through the whole replay: the
    # garbage collector's full passes need not walk them again and again. Nor what each
    # micro-batch leaves behind (results, snapshots, the model's state): it is frozen too
    # after each micro-batch, so a pass walks only the objects of the last one.
    # The young generation is collected about once per micro-batch too, not every few
    # hundred objects (nearly all of which the micro-batch still holds).
    freeze = gc.get_freeze_count() == 0
    thresholds = gc.get_threshold()
    if freeze:
        gc.freeze()
        gc.set_threshold(max(thresholds[0], YOUNG_OBJECTS), *thresholds[1:])
    try:
        # Every event's time is parsed to order the events, then looked up when decoded.
        with text_times_kept(3 * len(purchases) + len(labels)):
            return _replay(pipeline, purchases, labels, batch_size, progress, keep_alerts,
                           gc.freeze if freeze else None)
    finally:
        if freeze:
            gc.set_threshold(*thresholds)
            gc.unfreeze()


def _replay(pipeline: FraudPipeline, purchases: list[dict], labels: list[dict], batch_size: int,
            progress: Callable[[int, int], None] | None, keep_alerts: bool,
            settle: Callable[[], None] | None) -> ReplayResult:
    truth = {lb.get("transaction_id"): lb for lb in labels}
    result = ReplayResult(scored=[])
    total = len(purchases) + len(labels)
    clock = [float("-inf")]
    pipeline.clock = lambda: clock[0]
    chunk_purchases: list[dict] = []
    chunk_labels: list[dict] = []
    done = 0
    started = time.perf_counter()

    def run_purchases() -> None:
        out = pipeline.process_purchases([new_message(e, None, "purchase", -1, -1, None)
                                          for e in chunk_purchases])
        result.n_purchases += len(chunk_purchases)
        result.n_rejected += len(out.dead_letters)
        alerted = set()
        for _, value in out.alerts:
            alert = orjson.loads(value)
            alerted.add(alert["transaction_id"])
            if keep_alerts:
                result.alerts.append(alert)
        scored = result.scored
        for snap in out.snapshots:
            tx = snap.transaction_id
            label = truth.get(tx)
            if label:
                is_fraud = bool(label.get("is_fraud", False))
                scenario = int(label.get("scenario", int(is_fraud)))
            else:
                is_fraud, scenario = False, 0
            scored.append(ScoredPurchase(tx, snap.event_ts, snap.card_hash, dict(snap.scores),
                                         tx in alerted, is_fraud, scenario))

    def run_labels() -> None:
        out = pipeline.process_labels([new_message(e, None, "label", -1, -1, None)
                                       for e in chunk_labels])
        result.n_labels += len(chunk_labels)
        result.n_rejected += len(out.dead_letters)

    def flush() -> None:
        nonlocal done
        if chunk_purchases:
            run_purchases()
        if chunk_labels:
            run_labels()
        done += len(chunk_purchases) + len(chunk_labels)
        chunk_purchases.clear()
        chunk_labels.clear()
        if settle is not None:
            settle()
        if progress is not None:
            progress(done, total)

    add_purchase, add_label = chunk_purchases.append, chunk_labels.append
    n = 0  # events in the chunk
    for event_kind, ts, event in merge_in_time(purchases, labels):
        if n >= batch_size:
            flush()
            n = 0
        if ts > clock[0]:
            clock[0] = ts
        if event_kind == "purchase":
            add_purchase(event)
        else:
            add_label(event)
        n += 1
    flush()
    result.seconds = time.perf_counter() - started
    return result
