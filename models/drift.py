"""Drift detectors: on the error stream once labels arrive, on distributions before.

Two questions, two detectors:

* :class:`ErrorDrift` -- is a model getting worse? It watches each label's
  log-loss against the score the model gave, with ADWIN, and raises a warning
  (start training a background model) before it confirms a drift (replace the
  model).
* :class:`DistributionDrift` -- did the inputs or the scores change? Labels
  come days or weeks late; the population stability index (PSI) of each
  feature and score against a frozen reference window needs no label at all.

Both return :class:`DriftSignal` objects, with enough evidence to be logged as
they are. Nothing here knows about Prometheus or Kafka: the caller counts and
logs the signals.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from dataclasses import dataclass
from typing import Mapping

import numpy as np
from river import drift as river_drift


@dataclass(frozen=True, slots=True)
class DriftSignal:
    """One warning or confirmed drift, with its evidence.

    Attributes
    ----------
    detector, signal : str
        Which detector raised it (``"error"``, ``"psi"``) and what it
        watched (a model name, ``"score:dynamic"``, a feature name).
    kind : str
        ``"warning"`` or ``"drift"``.
    statistic : float
        The measured value: the PSI, or the mean log-loss (nats) of the recent
        window for the error detector.
    threshold : float
        What the statistic was held against: the PSI threshold, or the
        confidence ``delta`` the ADWIN detector ran with.
    n_seen : int
        Values (or labels) the detector had seen for this signal.
    reference_mean, current_mean : float or None
        Mean of the signal (or of the log-loss) before and after the change.

    Examples
    --------
    >>> s = DriftSignal("psi", "amount", "drift", 0.31, 0.2, 12000, 42.0, 118.5)
    >>> str(s)
    'drift psi/amount: statistic 0.31 vs threshold 0.2 after 12000 values (mean 42 -> 118.5)'
    """

    detector: str
    signal: str
    kind: str
    statistic: float
    threshold: float
    n_seen: int
    reference_mean: float | None = None
    current_mean: float | None = None

    def __str__(self) -> str:
        text = (f"{self.kind} {self.detector}/{self.signal}: statistic {self.statistic:.4g} "
                f"vs threshold {self.threshold:.4g} after {self.n_seen} values")
        if self.reference_mean is not None and self.current_mean is not None:
            text += f" (mean {self.reference_mean:.4g} -> {self.current_mean:.4g})"
        return text


def log_loss(score: float, is_fraud: bool, eps: float = 1e-3) -> float:
    """The log-loss of one label against its score, with the score clipped to ``[eps, 1 - eps]``.

    >>> round(log_loss(0.9, True), 4), round(log_loss(0.9, False), 4)
    (0.1054, 2.3026)
    >>> round(log_loss(0.0, True), 4) == round(-math.log(1e-3), 4)
    True
    """
    p = score if is_fraud else 1.0 - score
    return -math.log(min(max(p, eps), 1.0 - eps))


class ErrorDrift:
    """Drift of one model's error stream, as labels arrive.

    Why ADWIN on the log-loss: with about 1% fraud, a misclassification
    stream (the input of DDM or EDDM) is almost all "legitimate scored low"
    and a new fraud pattern moves its rate by a fraction of a percent, under
    a threshold that is itself arbitrary. The log-loss needs no threshold and
    punishes exactly what a new pattern causes, frauds scored confidently
    legitimate (about 4 nats each at a score of 0.02, against 0.02 for a
    typical legitimate event): its mean shows such a rise with about a tenth
    of the labels the mean of ``|y - score|`` needs. ADWIN compares every split
    of an adaptive window with a Bernstein bound that uses the window's
    variance, which suits this heavy-tailed stream; the loss is divided by its
    clipped maximum ``-log(eps)`` so values lie in [0, 1] as the bound
    assumes.

    Two ADWINs run side by side, as in an adaptive random forest: the
    sensitive one (``warning_delta``) opens a warning zone, in which the
    caller starts a background model; the strict one (``drift_delta``)
    confirms the drift, and the caller swaps the background model in. A
    warning not confirmed within ``warning_timeout`` labels closes by itself.
    Only increases of the error are signalled; a falling error (a model that
    improves) only shrinks the windows. No detection happens during the first
    ``min_labels`` labels, nor during as many after a drift, when the
    replaced model builds its new baseline.

    Defaults, measured on synthetic streams at 1% fraud (legitimate scores
    ~ Beta(1, 50), fraud ~ Beta(4, 2)): no warning and no drift in 4 million
    independent labels; a new pattern adding 1% of frauds scored as
    legitimate opens a warning after a median of 520 labels and is confirmed
    after a median of 930 (79 of 80 runs within 2,000); a subtler one adding
    0.4% is confirmed after a median of 3,300. A burst of missed
    frauds (one compromised terminal, many frauds in a few hundred labels) is
    a real local rise for ADWIN and does raise detections.

    Parameters
    ----------
    signal : str
        Name of the watched model, reported in each :class:`DriftSignal`.
    drift_delta, warning_delta : float
        ADWIN confidence of the drift and warning detectors; larger values
        react sooner and err more often.
    min_labels : int
        Labels before any detection (and after each drift).
    warning_timeout : int
        Labels after which an unconfirmed warning ends.
    eps : float
        Scores are clipped to ``[eps, 1 - eps]`` in the log-loss.
    detector : str
        Name of this detector in the signals.

    Examples
    --------
    >>> import random
    >>> rng = random.Random(1)
    >>> d = ErrorDrift("dynamic")
    >>> for _ in range(20_000):  # a good model: frauds scored high, others low
    ...     y = rng.random() < 0.02
    ...     assert d.update(rng.uniform(0.6, 0.9) if y else rng.uniform(0, 0.05), y) is None
    >>> signals = []
    >>> for _ in range(5_000):  # new frauds the model scores as legitimate
    ...     y = rng.random() < 0.04
    ...     s = d.update(rng.uniform(0, 0.05), y)
    ...     if s is not None:
    ...         signals.append(s.kind)
    >>> signals[:2], d.n_drifts
    (['warning', 'drift'], 1)
    """

    def __init__(self, signal: str = "dynamic", *, drift_delta: float = 0.05,
                 warning_delta: float = 0.5, min_labels: int = 1000,
                 warning_timeout: int = 5000, eps: float = 1e-3, detector: str = "error"):
        if not 0.0 < drift_delta < warning_delta:
            raise ValueError("need 0 < drift_delta < warning_delta")
        self.signal = signal
        self.detector = detector
        self.drift_delta = drift_delta
        self.warning_delta = warning_delta
        self.min_labels = min_labels
        self.warning_timeout = warning_timeout
        self.eps = eps
        self._scale = -math.log(eps)  # the largest clipped loss: values fall in [0, 1]
        self.n_seen = 0
        self.n_frauds = 0
        self.n_warnings = 0
        self.n_drifts = 0
        self._warning_since: int | None = None
        self._fresh_detectors()

    def _fresh_detectors(self) -> None:
        # clock=32 checks for a cut every 32 labels: a third cheaper, at most 31 labels later.
        self._drift = river_drift.ADWIN(delta=self.drift_delta, clock=32,
                                        grace_period=self.min_labels)
        self._warn = river_drift.ADWIN(delta=self.warning_delta, clock=32,
                                       grace_period=self.min_labels)

    @property
    def in_warning(self) -> bool:
        """True from a warning until the drift is confirmed or the warning times out."""
        return self._warning_since is not None

    @property
    def error(self) -> float:
        """Mean log-loss (nats) over the drift detector's current window."""
        return self._drift.estimation * self._scale

    def _rose(self, adwin: river_drift.ADWIN, x: float) -> tuple[bool, float]:
        """Update one ADWIN: did it cut its window because the error rose, and the old mean."""
        width, total = adwin.width, adwin.total
        adwin.update(x)
        if not adwin.drift_detected:
            return False, 0.0
        # After a cut the window holds the recent part only: what went is the old part.
        cut = width + 1 - adwin.width
        old_mean = (total + x - adwin.total) / cut if cut > 0 else 0.0
        rose = adwin.estimation > old_mean
        if not rose:
            # river forgets the whole window on the next update after any
            # detection; after a fall keep the recent part instead (ADWIN as
            # published), so a rise that follows is still measured against it.
            adwin._drift_detected = False
        return rose, old_mean

    def update(self, score: float, is_fraud: bool) -> DriftSignal | None:
        """Learn one label; return a signal when a warning opens or a drift is confirmed."""
        self.n_seen += 1
        self.n_frauds += bool(is_fraud)
        x = log_loss(score, is_fraud, self.eps) / self._scale
        warned, warn_old = self._rose(self._warn, x)
        self._warn._drift_detected = False  # the warning detector always keeps its recent part
        drifted, old = self._rose(self._drift, x)
        if drifted:
            current = self._drift.estimation * self._scale
            self.n_drifts += 1
            self._warning_since = None
            self._fresh_detectors()  # the next model starts with a baseline of its own
            return DriftSignal(self.detector, self.signal, "drift", current, self.drift_delta,
                               self.n_seen, old * self._scale, current)
        if warned:
            opened = self._warning_since is None
            self._warning_since = self.n_seen  # a repeated warning extends the zone
            if opened:
                self.n_warnings += 1
                current = self._warn.estimation * self._scale
                return DriftSignal(self.detector, self.signal, "warning", current,
                                   self.warning_delta, self.n_seen, warn_old * self._scale,
                                   current)
        elif (self._warning_since is not None
              and self.n_seen - self._warning_since >= self.warning_timeout):
            self._warning_since = None
        return None


class _Reference:
    """One signal's reference bins and its sliding window of bin indices."""

    __slots__ = ("collected", "edges", "ref_frac", "ref_mean", "ring", "values", "pos",
                 "filled", "counts", "n_seen", "level")

    def __init__(self) -> None:
        self.collected: list[float] | None = []  # the reference while it is being built
        self.edges: list[float] = []
        self.ref_frac: np.ndarray | None = None
        self.ref_mean = 0.0
        self.ring: list[int] = []  # bin index of each value of the window
        self.values: list[float] = []
        self.pos = self.filled = self.n_seen = 0
        self.counts: list[int] = []
        self.level = 0  # 0 stable, 1 warning, 2 drift: a signal is raised when it goes up


class DistributionDrift:
    """Population stability index of named signals against a frozen reference.

    For each signal (a model's score, a feature) the first ``reference_size``
    values are the reference; their deciles (``bins`` quantile bins, merged
    where values tie, as for a binary flag) fix the bins for good. The
    current window is the last ``window_size`` values, kept as a ring of bin
    indices with running bin counts, so an update costs one bisection and two
    increments per value. Every ``check_every`` updates the PSI of each signal
    is computed from the counts, ``sum((c - r) * ln(c / r))`` over the bins'
    shares, each count smoothed by half an observation so an empty bin does
    not make it infinite.

    PSI above 0.1 is usually read as a moderate shift and above 0.2 as a
    significant one; with no shift its expected value is about
    ``(bins - 1) * (1 / window_size + 1 / reference_size)`` (0.006 with the
    defaults), far below either. A signal is raised when a signal's PSI
    crosses ``warning_threshold`` or ``threshold`` upwards, once: it is raised
    again only after the PSI fell below half of that level.

    Parameters
    ----------
    reference_size, window_size : int
        Values in the reference and in the sliding window, per signal.
    threshold : float
        PSI of a drift.
    bins : int
        Quantile bins of the reference.
    warning_threshold : float or None
        PSI of a warning (``None``: drifts only).
    check_every : int
        Updates between two PSI computations.
    name : str
        Name of this detector in the signals.

    Examples
    --------
    >>> import random
    >>> rng = random.Random(0)
    >>> d = DistributionDrift(reference_size=2000, window_size=1000, threshold=0.2,
    ...                       check_every=500)
    >>> raised = []
    >>> for i in range(6000):
    ...     shift = 0.0 if i < 4000 else 1.0  # the amount's distribution moves at 4000
    ...     raised += d.update({"amount": rng.gauss(shift, 1.0), "flag": float(i % 3 == 0)})
    >>> [(s.signal, s.kind, s.n_seen) for s in raised]
    [('amount', 'warning', 4500), ('amount', 'drift', 4500)]
    >>> d.psi("flag") < 0.01
    True
    """

    def __init__(self, reference_size: int = 5000, window_size: int = 2000,
                 threshold: float = 0.2, bins: int = 10, *,
                 warning_threshold: float | None = 0.1, check_every: int = 500,
                 name: str = "psi"):
        if warning_threshold is not None and not 0 < warning_threshold < threshold:
            raise ValueError("need 0 < warning_threshold < threshold")
        if min(reference_size, window_size, check_every) < 1 or bins < 2:
            raise ValueError("sizes must be positive and bins at least 2")
        self.reference_size = reference_size
        self.window_size = window_size
        self.threshold = threshold
        self.warning_threshold = warning_threshold
        self.bins = bins
        self.check_every = check_every
        self.name = name
        self.n_updates = 0
        self._signals: dict[str, _Reference] = {}

    @property
    def signals(self) -> list[str]:
        """Names of the signals seen so far."""
        return list(self._signals)

    def reset(self, signal: str | None = None) -> None:
        """Forget the reference of one signal (or all): the next values build a new one."""
        for name in ([signal] if signal is not None else list(self._signals)):
            self._signals[name] = _Reference()

    def _freeze(self, ref: _Reference) -> None:
        values = np.asarray(ref.collected, dtype=float)
        inner = np.quantile(values, np.linspace(0.0, 1.0, self.bins + 1)[1:-1])
        ref.edges = np.unique(inner).tolist()
        n_bins = len(ref.edges) + 1
        counts = np.bincount(np.searchsorted(ref.edges, values, side="right"), minlength=n_bins)
        ref.ref_frac = (counts + 0.5) / (len(values) + 0.5 * n_bins)
        ref.ref_mean = float(values.mean())
        ref.collected = None
        ref.ring = [0] * self.window_size
        ref.values = [0.0] * self.window_size
        ref.counts = [0] * n_bins

    def update(self, values: Mapping[str, float]) -> list[DriftSignal]:
        """Add one value per named signal; return the signals raised by this update."""
        for name, value in values.items():
            if not math.isfinite(value):
                continue  # a missing feature is not evidence of anything
            ref = self._signals.get(name)
            if ref is None:
                ref = self._signals[name] = _Reference()
            ref.n_seen += 1
            if ref.collected is not None:
                ref.collected.append(value)
                if len(ref.collected) >= self.reference_size:
                    self._freeze(ref)
                continue
            b = bisect_right(ref.edges, value)
            pos = ref.pos
            if ref.filled == self.window_size:
                ref.counts[ref.ring[pos]] -= 1
            else:
                ref.filled += 1
            ref.ring[pos] = b
            ref.values[pos] = value
            ref.counts[b] += 1
            ref.pos = pos + 1 if pos + 1 < self.window_size else 0
        self.n_updates += 1
        if self.n_updates % self.check_every:
            return []
        return self._check()

    def psi(self, signal: str) -> float | None:
        """The current PSI of a signal; None until its reference and window are full."""
        ref = self._signals.get(signal)
        if ref is None or ref.ref_frac is None or ref.filled < self.window_size:
            return None
        counts = np.asarray(ref.counts, dtype=float)
        cur = (counts + 0.5) / (ref.filled + 0.5 * len(counts))
        return float(np.sum((cur - ref.ref_frac) * np.log(cur / ref.ref_frac)))

    def _limit(self, level: int) -> float:
        if level == 1 and self.warning_threshold is not None:
            return self.warning_threshold
        return self.threshold

    def _check(self) -> list[DriftSignal]:
        raised = []
        for name, ref in self._signals.items():
            value = self.psi(name)
            if value is None:
                continue
            if value >= self.threshold:
                level = 2
            elif self.warning_threshold is not None and value >= self.warning_threshold:
                level = 1
            else:
                level = 0
            if level > ref.level:
                current_mean = math.fsum(ref.values) / ref.filled
                for lvl in range(ref.level + 1, level + 1):
                    if lvl == 2 or self.warning_threshold is not None:
                        raised.append(DriftSignal(
                            self.name, name, "drift" if lvl == 2 else "warning", value,
                            self._limit(lvl), ref.n_seen, ref.ref_mean, current_mean))
                ref.level = level
            elif level < ref.level and value < 0.5 * self._limit(ref.level):
                # Re-arm only well below the level: a PSI hovering around a
                # threshold would otherwise raise a signal at every other check.
                ref.level = level
        return raised
