"""Monitoring of the models in the stream: quality from labels, drift before and after them.

One :class:`ModelMonitor` per worker watches

* every model's error stream as labels arrive: the share of frauds it
  scored like legitimate purchases (:class:`~models.drift.MissedFraudDrift`),
* the score and feature distributions of scored purchases against a
  reference window, before any label exists (:class:`~models.drift.DistributionDrift`),
* every model's rolling ROC AUC, average precision and card precision@k
  (:class:`~models.quality.LiveQuality`).

It only observes and returns :class:`~models.drift.DriftSignal` objects; the
caller logs them, counts them and adapts the dynamic model.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from models.drift import DistributionDrift, DriftSignal, MissedFraudDrift
from models.quality import LiveQuality, QualitySnapshot


class ModelMonitor:
    """Quality and drift of a set of models, fed with scored purchases and labels.

    ``sample_every``: the distribution detector sees one scored purchase in
    that many (it watches every feature; a sample keeps it off the hot path).
    ``psi_warmup``: scored purchases before its reference starts, so that the
    reference is not the cold start, when every window is still filling.
    Calendar flags (night, weekend) are not watched: they swing by design.
    ``error_min_labels``: labels before the error detector may signal.

    >>> mon = ModelMonitor(models=("dynamic",), psi_reference=100, psi_window=50,
    ...                    psi_check_every=50)
    >>> mon.observe_scored([{"amount": 10.0}], [{"dynamic": 0.1}])
    []
    >>> mon.observe_label({"dynamic": 0.9}, True, "card-1", 1_704_067_200.0)
    []
    >>> mon.report()["dynamic"]["n"]
    1
    """

    def __init__(self, models: Iterable[str] = ("dynamic",), window: int = 50_000,
                 k: int = 100, psi_reference: int = 5000, psi_window: int = 2000,
                 psi_threshold: float = 0.2, psi_check_every: int = 500, sample_every: int = 4,
                 psi_warmup: int = 0, error_min_labels: int = 30_000,
                 psi_ignore: Iterable[str] = ("is_night", "is_weekend")):
        self.models = tuple(models)
        self.quality = LiveQuality(window=window, k=k, models=self.models)
        self.error_min_labels = error_min_labels
        self.errors = {m: MissedFraudDrift(m, min_labels=error_min_labels) for m in self.models}
        self.distribution = DistributionDrift(
            reference_size=psi_reference, window_size=psi_window, threshold=psi_threshold,
            check_every=psi_check_every)
        self.sample_every = max(1, sample_every)
        self.psi_warmup = psi_warmup
        self.psi_ignore = frozenset(psi_ignore)
        self._seen = 0

    def observe_scored(self, features: Iterable[Mapping[str, float]],
                       scores: Iterable[Mapping[str, float]]) -> list[DriftSignal]:
        """Scored purchases: the distribution detector sees a sample of them."""
        signals: list[DriftSignal] = []
        for x, s in zip(features, scores):
            self._seen += 1
            if self._seen % self.sample_every or self._seen <= self.psi_warmup:
                continue
            values = {k: v for k, v in x.items() if k not in self.psi_ignore}
            for model, score in s.items():
                values[f"score:{model}"] = score
            signals.extend(self.distribution.update(values))
        return signals

    def observe_label(self, scores: Mapping[str, float], is_fraud: bool, card: str,
                      event_ts: float, label_ts: float | None = None) -> list[DriftSignal]:
        """A label joined with the scores its transaction got: quality and error drift.

        ``label_ts``: the label event's own time (its ``label_time``, not when a
        worker read it): the delay from the purchase tells quickly reported
        frauds from late chargebacks, also for labels delivered late or in a
        backfill.
        """
        delay = None if label_ts is None else label_ts - event_ts
        signals = []
        for model, score in scores.items():
            self.quality.update(model, score, is_fraud, card, event_ts)
            detector = self.errors.get(model)
            if detector is None:
                detector = self.errors[model] = MissedFraudDrift(
                    model, min_labels=self.error_min_labels)
            signal = detector.update(score, is_fraud, delay)
            if signal is not None:
                signals.append(signal)
        return signals

    def in_warning(self, model: str) -> bool:
        detector = self.errors.get(model)
        return bool(detector and detector.in_warning)

    def report(self) -> dict[str, dict[str, float]]:
        """Rolling quality per model (see :meth:`LiveQuality.report`)."""
        return self.quality.report()

    def quality_snapshot(self) -> QualitySnapshot:
        """The quality windows copied, to report from elsewhere (:meth:`LiveQuality.snapshot`)."""
        return self.quality.snapshot()

    def statistics(self) -> dict[tuple[str, str], float]:
        """Latest statistic per (detector, signal): the error CUSUM and the PSI."""
        out = {("error", m): d.statistic for m, d in self.errors.items()}
        for name in self.distribution.signals:
            out[("psi", name)] = self.distribution.psi(name)
        return out
