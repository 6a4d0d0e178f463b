"""Drift detectors: on the error stream once labels arrive, on distributions before.

Two questions, two kinds of detector:

* is a model getting worse? :class:`MissedFraudDrift` (what the monitor
  runs) watches the share of labels that are frauds the model scored like
  legitimate purchases, with a CUSUM against a lagged reference; it raises
  a warning (start training a background model) before it confirms a drift
  (replace the model). :class:`ErrorDrift` watches the mean log-loss over
  all labels with ADWIN: simpler, but with late labels the class mix of the
  label stream moves by itself, and so does that mean.
* did the inputs or the scores change? :class:`DistributionDrift`. Labels
  come days or weeks late; the population stability index (PSI) of each
  feature and score against a frozen reference window needs no label at all.

All return :class:`DriftSignal` objects, with enough evidence to be logged as
they are. Nothing here knows about Prometheus or Kafka: the caller counts and
logs the signals.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
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
        Mean of the signal (or of the log-loss, or the rate of missed frauds
        or false alarms) before and after the change.
    stratum : str or None
        The label class whose errors changed (``"fraud"``: missed frauds,
        ``"legit"``: false alarms), for detectors that watch each class.

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
    stratum: str | None = None

    def __str__(self) -> str:
        where = f" ({self.stratum} labels)" if self.stratum else ""
        text = (f"{self.kind} {self.detector}/{self.signal}{where}: "
                f"statistic {self.statistic:.4g} "
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


class _Cusum:
    """One-sided Bernoulli CUSUM of an event rate against a lagged reference rate.

    The reference rate ``p0`` is the share of events among the ``reference``
    observations that ended ``lag`` observations ago, so a change is not
    absorbed into its own reference while it is being measured. The tested
    alternative multiplies the odds of an event by ``odds_ratio``, or, with
    ``rise``, adds ``rise`` to the rate (``p1 = p0 + rise``); the statistic is
    Page's ``S = max(0, S + log-likelihood ratio)``.

    >>> c = _Cusum(reference=10, lag=5, odds_ratio=3.0, rise=0.01)
    >>> [c.update(False) for _ in range(15)][-1], round(c.p0, 4)
    (0.0, 0.0455)
    >>> round(c.update(True), 3) == round(math.log(1 + 0.01 / c.p0), 3)
    True
    """

    __slots__ = ("reference", "lag", "odds_ratio", "rise", "recent", "ref", "ref_sum",
                 "recent_sum", "stat", "_llr_of")

    def __init__(self, reference: int, lag: int, odds_ratio: float, rise: float | None = None):
        self.reference, self.lag, self.odds_ratio, self.rise = reference, lag, odds_ratio, rise
        self.recent: deque[bool] = deque()
        self.ref: deque[bool] = deque()
        self.ref_sum = self.recent_sum = 0
        self.stat = 0.0
        # The log-likelihood ratios of an event and of a non-event for the reference they
        # were computed from, (ref_sum, len(ref)): it changes only when an event enters or
        # leaves the reference, far less often than once per observation.
        self._llr_of = (-1, -1, 0.0, 0.0)

    @property
    def p0(self) -> float:
        """The reference rate, smoothed by half an event."""
        return (self.ref_sum + 0.5) / (len(self.ref) + 1.0)

    @property
    def rate(self) -> float:
        """The rate over the last ``lag`` observations."""
        return self.recent_sum / max(1, len(self.recent))

    @property
    def ready(self) -> bool:
        return len(self.ref) >= self.reference

    def update(self, x: bool) -> float:
        recent = self.recent
        recent.append(x)
        self.recent_sum += x
        if len(recent) > self.lag:
            old = recent.popleft()
            self.recent_sum -= old
            ref = self.ref
            ref.append(old)
            self.ref_sum += old
            if len(ref) > self.reference:
                self.ref_sum -= ref.popleft()
        n_ref = len(self.ref)
        if n_ref < self.reference:
            return 0.0
        ref_sum, n_of, llr_event, llr_none = self._llr_of
        if ref_sum != self.ref_sum or n_of != n_ref:
            p0 = self.p0
            if self.rise is not None:
                p1 = min(p0 + self.rise, 0.5)
            else:
                p1 = self.odds_ratio * p0 / (1.0 - p0 + self.odds_ratio * p0)
            llr_event, llr_none = math.log(p1 / p0), math.log((1.0 - p1) / (1.0 - p0))
            self._llr_of = (self.ref_sum, n_ref, llr_event, llr_none)
        self.stat = max(0.0, self.stat + (llr_event if x else llr_none))
        return self.stat


class _RecentWindow:
    """The last ``size`` values, in a ring; a share is counted when asked (far more values
    come in than questions: one per fraud label)."""

    __slots__ = ("size", "ring", "pos", "n")

    def __init__(self, size: int):
        self.size = size
        self.ring = np.zeros(size)
        self.pos = self.n = 0

    def add(self, x: float) -> None:
        pos = self.pos
        self.ring[pos] = x
        self.pos = pos + 1 if pos + 1 < self.size else 0
        if self.n < self.size:
            self.n += 1

    def __len__(self) -> int:
        return self.n

    def share_at_least(self, x: float) -> float:
        """Share of the window's values that are >= x.

        >>> w = _RecentWindow(3)
        >>> for v in (0.1, 0.5, 0.2, 0.9):
        ...     w.add(v)
        >>> w.share_at_least(0.5), w.share_at_least(0.2), w.share_at_least(1.0)
        (0.6666666666666667, 1.0, 0.0)
        """
        return 1.0 - int(np.count_nonzero(self.ring[:self.n] < x)) / self.n


class MissedFraudDrift:
    """Drift of one model's error stream: the rate of frauds it scored as legitimate.

    A new fraud pattern shows in the error stream as frauds that the model
    scored like legitimate purchases. For each fraud label this detector
    asks whether its score is below the ``miss_quantile`` of the scores of
    the last ``legit_window`` legitimate labels: a *missed* fraud. The
    comparison is within the stream of labels itself, so it needs no score
    threshold whatever the calibration of the model (which moves a lot while
    the model is young: with late labels, the first labels are nearly all
    frauds and it scores everything high for weeks). What it watches is the
    share of missed frauds among all labels, with a one-sided Bernoulli
    CUSUM (Page) against a reference share measured on the ``reference``
    labels that ended ``lag`` labels ago, tuned to a rise of the odds of a
    missed fraud by ``odds_ratio``.

    A second CUSUM counts only the missed frauds labelled within
    ``quick_delay`` of their purchase (the caller gives the delay: the label
    event's own time minus the purchase time, so that labels delivered late
    or in a backfill are not taken for quick ones). A new pattern shows
    first in the frauds reported quickly (card holders who notice a charge,
    reviews): they concern recent purchases, scored by the model as it is
    now, while a chargeback weeks later concerns a purchase scored by a
    model that has learned since. With the simulator's label delays under
    1% of the usual frauds are labelled within 3 hours (about 6% within 6),
    so that CUSUM keeps most of a quickly reported pattern's evidence and
    almost none of the noise: one usual missed fraud in 30,000 to 45,000
    labels falls in it. For so rare an event the tested alternative is an
    absolute rise, ``quick_rise`` more quickly labelled missed frauds per
    label (by default one in 1,000 labels, about ten a day at 10,000 labels
    a day), rather than an odds ratio: an odds ratio of 5 would test a
    pattern adding one such fraud in 8,000 labels and weigh each event at
    ``log(5)``, 1.6 nats, only.
    Each event now weighs ``log(1 + quick_rise / p0)``, about 3.5 to 4.6 nats,
    and the statistic falls by ``quick_rise`` per label (1 nat per 1,000
    labels): two quick missed frauds a few hundred labels apart warn, and
    two to three within 2,000 labels confirm. The first CUSUM still sees a
    pattern found only by chargebacks, later. The signal names the CUSUM
    that crossed (``stratum``: ``"fraud"`` or ``"fraud, quick"``).

    Why not a mean error over all labels (as :class:`ErrorDrift`): frauds
    are reported within hours and legitimate outcomes confirmed one to four
    weeks later, so the class mix of arriving labels drifts for the first
    month, and the log-loss of legitimate labels, 99% of the stream, moves
    with the model's calibration; both swamp a new pattern of a few dozen
    frauds a day. Missed frauds are what such a pattern adds, and the only
    thing it adds at first.

    The statistic crossing ``warning_threshold`` opens a warning (the
    caller starts a background model); crossing ``threshold`` confirms a
    drift. The threshold sets the false-alarm rate: without a change the
    statistic rarely climbs far, about ``exp(-threshold)`` per excursion.
    A falling rate (a model that improves) keeps it at zero. After a drift
    the detector restarts and the adapted model builds a reference of its
    own. No detection happens during the first ``min_labels`` labels (nor
    as many after a drift), and a warning not confirmed within
    ``warning_timeout`` labels closes.

    Defaults, measured on replays of the simulator's ``drift`` preset
    (realistic label delays, 0.26 M labels and 2,700 frauds in the 45 days
    before its fraud ring starts; seeds 0, 1, 2): no false detection before
    the ring; on stationary streams with 0.35% of missed frauds among labels
    the first CUSUM crossed 10 once in four million labels (6, a warning,
    about 6 times per million); on 9 M labels of days drawn from those
    replays before their ring, the quick CUSUM never crossed 9 (a pair of
    quick missed frauds close together reaches about 8: that is why the
    level is 9, not 8) and the first CUSUM crossed 10 three times (0.12 per
    million events). See
    ``bench/drift.py`` for the detection delays and ``bench/drift_offline.py``
    for these checks.

    Parameters
    ----------
    signal : str
        Name of the watched model, reported in each :class:`DriftSignal`.
    threshold, warning_threshold : float
        Levels (log-likelihood ratio, nats) of a drift and a warning of the
        CUSUM over all missed frauds.
    quick_threshold, quick_warning_threshold : float
        The same for the CUSUM over quickly labelled missed frauds: lower,
        as its rare events make long excursions rarer.
    quick_rise : float or None
        The rise (missed frauds labelled quickly, per label) that the quick
        CUSUM is tuned to; None: it uses ``quick_odds_ratio`` instead.
    odds_ratio, quick_odds_ratio : float
        The rise of the odds of a missed fraud that each CUSUM (all missed
        frauds, those labelled quickly) is tuned to detect soonest (the quick
        one only when ``quick_rise`` is None).
    reference, lag : int
        Labels in the reference share, and how many labels ago it ends.
    min_labels : int
        Labels before any detection (and after each drift).
    legit_window : int
        Recent legitimate labels whose scores define "scored like legitimate".
    miss_quantile : float
        A fraud is missed when its score is below this quantile of the
        recent legitimate scores.
    quick_delay : float or None
        A second CUSUM counts only the missed frauds labelled within this
        many seconds of their purchase (None: no second CUSUM).
    warning_timeout : int
        Labels after which an unconfirmed warning ends.
    detector : str
        Name of this detector in the signals.

    Examples
    --------
    >>> import random
    >>> rng = random.Random(1)
    >>> def label(fraud_rate, caught):  # frauds: a share caught (scored high), others missed
    ...     y = rng.random() < fraud_rate
    ...     high = y and rng.random() < caught
    ...     return (rng.uniform(0.3, 0.9) if high else rng.uniform(0, 0.05)), y
    >>> d = MissedFraudDrift("dynamic", reference=5000, lag=1000, min_labels=10_000)
    >>> [d.update(*label(0.01, 0.7)) for _ in range(60_000)].count(None)
    60000
    >>> signals = []
    >>> for _ in range(5_000):  # a new pattern: more frauds, scored as legitimate
    ...     if (sig := d.update(*label(0.02, 0.35))) is not None:
    ...         signals.append((sig.kind, sig.stratum))
    >>> signals, d.n_drifts
    ([('warning', 'fraud'), ('drift', 'fraud')], 1)
    """

    def __init__(self, signal: str = "dynamic", *, threshold: float = 10.0,
                 warning_threshold: float = 6.0, quick_threshold: float = 9.0,
                 quick_warning_threshold: float = 5.0, odds_ratio: float = 3.0,
                 quick_odds_ratio: float = 5.0, reference: int = 50_000, lag: int = 5_000,
                 min_labels: int = 60_000,
                 legit_window: int = 5000, miss_quantile: float = 0.95,
                 quick_delay: float | None = 3 * 3600.0, warning_timeout: int = 20_000,
                 quick_rise: float | None = 1e-3, detector: str = "error"):
        if not (0.0 < warning_threshold < threshold
                and 0.0 < quick_warning_threshold < quick_threshold):
            raise ValueError("need 0 < warning threshold < threshold")
        if min(odds_ratio, quick_odds_ratio) <= 1.0 or not 0.0 < miss_quantile < 1.0:
            raise ValueError("need odds ratios > 1 and miss_quantile within (0, 1)")
        if quick_rise is not None and not 0.0 < quick_rise < 0.5:
            raise ValueError("need quick_rise within (0, 0.5)")
        self.signal = signal
        self.detector = detector
        self.threshold = threshold
        self.warning_threshold = warning_threshold
        self.levels = {"fraud": (warning_threshold, threshold),
                       "fraud, quick": (quick_warning_threshold, quick_threshold)}
        self.odds_ratio = odds_ratio
        self.quick_odds_ratio = quick_odds_ratio
        self.quick_rise = quick_rise
        self.reference = reference
        self.lag = lag
        self.min_labels = min_labels
        self.miss_quantile = miss_quantile
        self.quick_delay = quick_delay
        self.warning_timeout = warning_timeout
        self.n_seen = 0
        self.n_frauds = 0
        self.n_missed = 0
        self.n_warnings = 0
        self.n_drifts = 0
        self._legit_scores = _RecentWindow(legit_window)
        self._warning_since: int | None = None
        self._restart()

    def _restart(self) -> None:
        # One CUSUM over every missed fraud; one over those labelled quickly.
        self.cusums = {"fraud": _Cusum(self.reference, self.lag, self.odds_ratio)}
        if self.quick_delay is not None:
            self.cusums["fraud, quick"] = _Cusum(self.reference, self.lag,
                                                 self.quick_odds_ratio, self.quick_rise)
        self._since_drift = 0

    @property
    def cusum(self) -> _Cusum:
        """The CUSUM over every missed fraud."""
        return self.cusums["fraud"]

    @property
    def in_warning(self) -> bool:
        """True from a warning until the drift is confirmed or the warning times out."""
        return self._warning_since is not None

    @property
    def error(self) -> float:
        """The reference share of missed frauds among labels (what the CUSUM tests against)."""
        return self.cusum.p0

    @property
    def statistic(self) -> float:
        """The highest CUSUM statistic (nats)."""
        return max(c.stat for c in self.cusums.values())

    def update(self, score: float, is_fraud: bool,
               delay: float | None = None) -> DriftSignal | None:
        """Learn one label; return a signal when a warning opens or a drift is confirmed.

        ``delay``: seconds from the purchase to its label (None: unknown; the
        fraud then counts only in the CUSUM over all missed frauds).
        """
        self.n_seen += 1
        self._since_drift += 1
        missed = quick = False
        if is_fraud:
            self.n_frauds += 1
            missed = (len(self._legit_scores) > 0
                      and self._legit_scores.share_at_least(score) > 1.0 - self.miss_quantile)
            quick = missed and delay is not None and delay <= self.quick_delay
            self.n_missed += missed
        else:
            self._legit_scores.add(score)
        for stratum, cusum in self.cusums.items():
            cusum.update(quick if stratum == "fraud, quick" else missed)
        if self._since_drift < self.min_labels:
            return None if self._warning_since is None else self._timeout()
        # The CUSUM closest to its drift level speaks for the detector (the first of equals).
        stratum = cusum = None
        closest = 0.0
        levels = self.levels
        for k, c in self.cusums.items():
            if len(c.ref) >= c.reference:  # ready
                nearness = c.stat / levels[k][1]
                if cusum is None or nearness > closest:
                    stratum, cusum, closest = k, c, nearness
        if cusum is None:
            return None if self._warning_since is None else self._timeout()
        warning_level, drift_level = self.levels[stratum]
        if cusum.stat >= drift_level:
            signal = DriftSignal(self.detector, self.signal, "drift", cusum.stat, drift_level,
                                 self.n_seen, cusum.p0, cusum.rate, stratum)
            self.n_drifts += 1
            self._warning_since = None
            self._restart()
            return signal
        if cusum.stat >= warning_level:
            opened = self._warning_since is None
            self._warning_since = self.n_seen  # a repeated warning extends the zone
            if opened:
                self.n_warnings += 1
                return DriftSignal(self.detector, self.signal, "warning", cusum.stat,
                                   warning_level, self.n_seen, cusum.p0, cusum.rate, stratum)
            return None
        return None if self._warning_since is None else self._timeout()

    def _timeout(self) -> None:
        if (self._warning_since is not None
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
