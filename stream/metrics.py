"""Every Prometheus metric of a worker, declared in one place.

Names follow Prometheus conventions: the ``fraudstream_`` prefix, base units
(seconds), ``_total`` for counters. Labels have bounded values only (never a
user, card or transaction id). A registry is injected, so each test gets a
fresh one.

>>> from prometheus_client import CollectorRegistry
>>> m = Metrics(CollectorRegistry())
>>> m.events.labels(kind="purchase", outcome="scored").inc()
>>> m.registry.get_sample_value("fraudstream_events_total",
...                             {"kind": "purchase", "outcome": "scored"})
1.0
"""

from __future__ import annotations

from bisect import bisect_left

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0, 10.0)
SCORE_BUCKETS = tuple(i / 20 for i in range(1, 21))


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.events = Counter(
            "fraudstream_events", "Input events by kind (purchase, label) and outcome "
            "(scored, duplicate, rejected for purchases; applied, duplicate, unknown, rejected "
            "for labels)", ["kind", "outcome"], registry=r)
        self.rejected = Counter(
            "fraudstream_rejected_events", "Input events sent to a dead-letter topic, by reason",
            ["kind", "reason"], registry=r)
        self.latency = Histogram(
            "fraudstream_event_latency_seconds", "From an event's Kafka timestamp to the end "
            "of its processing (alert sent or state updated)", ["kind"],
            buckets=LATENCY_BUCKETS, registry=r)
        self.batch_seconds = Histogram(
            "fraudstream_batch_processing_seconds", "Time to process one micro-batch",
            ["kind"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram(
            "fraudstream_batch_size_events", "Events per micro-batch", ["kind"],
            buckets=(1, 10, 50, 100, 250, 500, 1000, 2000), registry=r)
        self.scores = Histogram(
            "fraudstream_score", "Fraud score of each scored purchase, per model", ["model"],
            buckets=SCORE_BUCKETS, registry=r)
        self.alerts = Counter(
            "fraudstream_alerts", "Alerts sent to the alerts topic, by deciding model",
            ["model"], registry=r)
        self.labels_learned = Counter(
            "fraudstream_labels_learned", "Labels the dynamic model learned from, by class",
            ["is_fraud"], registry=r)
        self.model_version = Gauge(
            "fraudstream_model_version", "Version of the model this worker scores with",
            ["model"], registry=r)
        self.model_roc_auc = Gauge(
            "fraudstream_model_roc_auc", "ROC AUC of each model over its last labels "
            "(sliding window)", ["model"], registry=r)
        self.model_average_precision = Gauge(
            "fraudstream_model_average_precision", "Average precision of each model over its "
            "last labels (sliding window)", ["model"], registry=r)
        self.model_card_precision_at_k = Gauge(
            "fraudstream_model_card_precision_at_k", "Card precision@k per day of each model "
            "over its last labels, averaged over the days in the window", ["model"], registry=r)
        self.drift_detections = Counter(
            "fraudstream_drift_detections", "Confirmed drifts, by detector (error, psi) and "
            "signal (a model, a score or a feature)", ["detector", "signal"], registry=r)
        self.drift_statistic = Gauge(
            "fraudstream_drift_statistic", "Latest drift statistic per detector and signal "
            "(PSI for distributions, CUSUM of missed frauds for errors)", ["detector", "signal"],
            registry=r)
        self.consumer_lag = Gauge(
            "fraudstream_consumer_lag_messages", "Messages on a partition not yet processed by "
            "this worker", ["topic", "partition"], registry=r)
        self.store_up = Gauge(
            "fraudstream_store_up", "1 while the feature store answers, 0 during an outage "
            "(the worker stops consuming and retries)", registry=r)
        self.store_up.set(1)
        self.store_errors = Counter(
            "fraudstream_store_errors", "Micro-batches that failed because the feature store "
            "was unavailable (each is retried)", registry=r)
        self.store_seconds = Histogram(
            "fraudstream_store_seconds", "Feature store time per micro-batch, by operation",
            ["operation"], buckets=LATENCY_BUCKETS, registry=r)
        self._children: dict = {}

    def child(self, metric, *values: str):
        """``metric.labels(*values)`` (values in the order of its label names), looked up once.

        The pipeline asks for a few children per micro-batch; ``labels``
        validates and locks each time, which costs more than the update.

        >>> m = Metrics()
        >>> m.child(m.events, "purchase", "scored") is m.events.labels(kind="purchase", outcome="scored")
        True
        """
        key = (id(metric), values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found


def observe_many(histogram, values) -> None:
    """``histogram.observe(v)`` of each value in order (``histogram``: a labelled child),
    with one update per bucket that got any and one of the sum (added up in the same order).

    >>> m = Metrics()
    >>> observe_many(m.child(m.scores, "dynamic"), [0.01, 0.5, 0.05, float("nan")])
    >>> [m.registry.get_sample_value("fraudstream_score_bucket", {"model": "dynamic", "le": le})
    ...  for le in ("0.05", "0.5", "+Inf")]
    [2.0, 3.0, 3.0]
    """
    try:
        bounds, buckets, total = histogram._upper_bounds, histogram._buckets, histogram._sum
    except AttributeError:  # not the histogram this was written for: one by one
        for v in values:
            histogram.observe(v)
        return
    histogram._raise_if_not_observable()
    counts = [0] * len(bounds)
    acc = total.get()
    for v in values:
        acc += v
        if v == v:  # NaN falls in no bucket
            counts[bisect_left(bounds, v)] += 1
    total.set(acc)
    for bucket, n in zip(buckets, counts):
        if n:
            bucket.inc(n)
