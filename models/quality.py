"""Live model quality from labels: ROC AUC, average precision and card precision@k.

Labels arrive late and one at a time; :class:`LiveQuality` keeps the last
``window`` labelled transactions of each model in fixed-size arrays (an
update is a few array writes) and computes the metrics exactly when asked,
which a worker does every few seconds for its gauges.

The functions below are the reference implementations, over numpy arrays:

* :func:`roc_auc` -- the probability that a fraud outscores a legitimate
  transaction, ties counting one half (Mann-Whitney);
* :func:`average_precision` -- precision at each distinct score, weighted by
  the recall gained there (scikit-learn's definition, no interpolation);
* :func:`card_precision_at_k` -- the fraud-detection handbook's measure of
  what a team of investigators checking ``k`` cards a day would find.
"""

from __future__ import annotations

import hashlib
import math
from typing import Iterable, Sequence

import numpy as np

DAY = 86_400.0


def roc_auc(y: Sequence[bool], s: Sequence[float]) -> float:
    """Area under the ROC curve; NaN unless both classes are present.

    Examples
    --------
    >>> roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    >>> roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.9])  # a tie counts one half
    0.875
    >>> math.isnan(roc_auc([0, 0], [0.1, 0.2]))
    True
    """
    y = np.asarray(y, dtype=bool)
    s = np.asarray(s, dtype=float)
    n_pos = int(y.sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(s, kind="mergesort")
    s_sorted = s[order]
    # Average ranks over ties: each group of equal scores shares the mean of its ranks.
    starts = np.flatnonzero(np.r_[True, s_sorted[1:] != s_sorted[:-1]])
    ends = np.r_[starts[1:], len(s)]
    ranks = np.empty(len(s))
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def average_precision(y: Sequence[bool], s: Sequence[float]) -> float:
    """Average precision: sum over distinct thresholds of precision times recall gained.

    Equal scores form one threshold, as in scikit-learn's
    ``average_precision_score``. NaN without any positive.

    Examples
    --------
    >>> average_precision([0, 1, 0, 1], [0.1, 0.4, 0.35, 0.8])
    1.0
    >>> round(average_precision([1, 0, 1], [0.2, 0.9, 0.5]), 4)  # (1/2 + 2/3) / 2
    0.5833
    """
    y = np.asarray(y, dtype=bool)
    s = np.asarray(s, dtype=float)
    n_pos = int(y.sum())
    if n_pos == 0:
        return math.nan
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    # The last index of each group of equal scores is a threshold.
    last = np.flatnonzero(np.r_[s_sorted[1:] != s_sorted[:-1], True])
    tp = np.cumsum(y_sorted)[last]
    precision = tp / (last + 1.0)
    recall_gain = np.diff(np.r_[0, tp]) / n_pos
    return float(np.sum(precision * recall_gain))


def card_precision_at_k(days: Sequence[int], cards: Sequence, y: Sequence[bool],
                        s: Sequence[float], k: int = 100, exclude_known: bool = True) -> float:
    """Card precision@k, averaged over days, as the fraud-detection handbook defines it.

    Each day, every card gets its highest score of that day and is
    compromised if any of that day's transactions on it is a fraud; the ``k``
    cards with the highest scores are checked, and the day's precision is
    the share of compromised cards among them, divided by ``k`` even when the
    day has fewer cards. With ``exclude_known`` a card found compromised
    (compromised and in the top ``k``) on an earlier day is left out of the
    later days, as investigators would have blocked it. Ties of score are
    broken by card, for a result that does not depend on input order.

    Parameters
    ----------
    days : sequence of int
        Day of each transaction (for example its UTC day number).
    cards : sequence
        Card of each transaction (any sortable, hashable values).
    y : sequence of bool
        Fraud label of each transaction.
    s : sequence of float
        Score of each transaction.
    k : int
        Cards checked per day.
    exclude_known : bool
        Leave out cards found compromised on earlier days.

    Returns
    -------
    float
        Mean over the days present; NaN without any transaction.

    Examples
    --------
    >>> days = [0, 0, 0, 0, 1, 1, 1]
    >>> cards = ["a", "a", "b", "c", "a", "b", "c"]
    >>> y = [0, 1, 0, 0, 1, 0, 1]
    >>> s = [0.9, 0.1, 0.8, 0.2, 0.9, 0.8, 0.3]
    >>> card_precision_at_k(days, cards, y, s, k=2)  # day 0: a, b -> 1/2; day 1: b, c -> 1/2
    0.5
    >>> card_precision_at_k(days, cards, y, s, k=2, exclude_known=False)  # day 1: a, b -> 1/2
    0.5
    >>> card_precision_at_k(days, cards, y, s, k=1, exclude_known=False)  # a both days
    1.0
    >>> card_precision_at_k(days, cards, y, s, k=1)  # day 1 without a: b, legitimate
    0.5
    """
    days = np.asarray(days)
    cards = np.asarray(cards)
    y = np.asarray(y, dtype=bool)
    s = np.asarray(s, dtype=float)
    if len(days) == 0:
        return math.nan
    # One row per (day, card): the highest score and whether any transaction was a fraud.
    order = np.lexsort((cards, days))
    d_o, c_o = days[order], cards[order]
    first = np.flatnonzero(np.r_[True, (d_o[1:] != d_o[:-1]) | (c_o[1:] != c_o[:-1])])
    g_day, g_card = d_o[first], c_o[first]
    g_score = np.maximum.reduceat(s[order], first)
    g_fraud = np.logical_or.reduceat(y[order], first)
    day_starts = np.flatnonzero(np.r_[True, g_day[1:] != g_day[:-1]])
    day_ends = np.r_[day_starts[1:], len(g_day)]
    known: set = set()
    precisions = []
    for a, b in zip(day_starts, day_ends):
        card, score, fraud = g_card[a:b], g_score[a:b], g_fraud[a:b]
        if exclude_known and known:
            keep = np.array([c not in known for c in card.tolist()], dtype=bool)
            card, score, fraud = card[keep], score[keep], fraud[keep]
        # Rows are sorted by card within the day, so a stable sort breaks ties by card.
        top = np.argsort(-score, kind="mergesort")[:k]
        found = card[top][fraud[top]]
        precisions.append(len(found) / k)
        if exclude_known:
            known.update(found.tolist())
    return float(np.mean(precisions))


class _Window:
    """A ring of the last ``size`` labelled transactions of one model."""

    __slots__ = ("score", "fraud", "card", "day", "pos", "n")

    def __init__(self, size: int):
        self.score = np.zeros(size)
        self.fraud = np.zeros(size, dtype=bool)
        self.card = np.zeros(size, dtype=np.int64)
        self.day = np.zeros(size, dtype=np.int64)
        self.pos = 0
        self.n = 0


_UPDATES_KEPT = 1024  # updates of a model gathered before they go into its ring


def card_id(card: str) -> int:
    """A card as a 64-bit integer, the same in every process.

    Card precision@k breaks ties between equal scores by this id; Python's own
    ``hash`` of a string changes from one process to the next, and so did the
    figure of two identical replays.

    >>> card_id("card-1") == card_id("card-1") != card_id("card-2")
    True
    """
    found = _CARD_IDS.get(card)
    if found is None:
        if len(_CARD_IDS) >= _CARD_IDS_KEPT:
            _CARD_IDS.clear()
        found = _CARD_IDS[card] = int.from_bytes(
            hashlib.blake2b(card.encode(), digest_size=8).digest(), "little", signed=True)
    return found


# The ids of recent cards: a card labelled once is usually labelled again (its other
# purchases), and a look-up costs a tenth of the digest. Emptied when full.
_CARD_IDS: dict[str, int] = {}
_CARD_IDS_KEPT = 65_536


class LiveQuality:
    """Sliding-window ROC AUC, average precision and card precision@k per model.

    Each model keeps its last ``window`` labels (an update is added to a
    short list; the list goes into the arrays in one step when it is full or
    a report is made). Cards are kept as 64-bit
    hashes, so memory stays fixed however many cards pass (two cards share a
    hash with negligible probability). Card precision@k groups the window by
    the UTC day of the event time; the window should span several days of
    labels, and its oldest day is usually only partly inside it.

    Parameters
    ----------
    window : int
        Labels kept per model.
    k : int
        Cards checked per day in card precision@k.
    models : iterable of str
        Models reported even before their first label; others are added as
        they come.
    exclude_known : bool
        See :func:`card_precision_at_k`.

    Examples
    --------
    >>> q = LiveQuality(window=1000, k=2, models=("dynamic", "static"))
    >>> for i, (s, y) in enumerate([(0.9, True), (0.2, False), (0.7, False), (0.1, False)]):
    ...     q.update("dynamic", s, y, card=f"card-{i}", event_ts=1_704_067_200.0 + i)
    >>> r = q.report()
    >>> r["dynamic"]
    {'roc_auc': 1.0, 'average_precision': 1.0, 'card_precision_at_k': 0.5, 'n': 4}
    >>> r["static"]["n"], math.isnan(r["static"]["roc_auc"])
    (0, True)
    """

    def __init__(self, window: int = 50_000, k: int = 100, models: Iterable[str] = ("dynamic",),
                 exclude_known: bool = True):
        if window < 1 or k < 1:
            raise ValueError("window and k must be positive")
        self.window = window
        self.k = k
        self.exclude_known = exclude_known
        self._windows: dict[str, _Window] = {}
        self._new: dict[str, list] = {}  # per model: (score, fraud, card, day) not yet in the ring
        for model in models:
            self._windows[model] = _Window(window)
            self._new[model] = []

    @property
    def models(self) -> list[str]:
        return list(self._windows)

    def update(self, model: str, score: float, is_fraud: bool, card: str,
               event_ts: float) -> None:
        """Add one labelled transaction: the score ``model`` gave it and its outcome."""
        new = self._new.get(model)
        if new is None:
            self._windows[model] = _Window(self.window)
            new = self._new[model] = []
        new.append((float(score), bool(is_fraud), card_id(card), math.floor(event_ts / DAY)))
        if len(new) >= _UPDATES_KEPT:
            self._write(model)

    def _write(self, model: str) -> None:
        """Move the updates not yet in ``model``'s ring into it, in order."""
        new = self._new[model]
        if not new:
            return
        w = self._windows[model]
        size = self.window
        n = len(new)
        first = max(0, n - size)  # more updates than the ring holds: the last ones stay
        where = (w.pos + first + np.arange(n - first)) % size
        score, fraud, card, day = zip(*new[first:])
        w.score[where] = score
        w.fraud[where] = fraud
        w.card[where] = card
        w.day[where] = day
        w.pos = (w.pos + n) % size
        w.n = min(size, w.n + n)
        new.clear()

    def report(self) -> dict[str, dict[str, float]]:
        """Each model's metrics over its window (NaN where a class is missing)."""
        return self.snapshot().report()

    def snapshot(self) -> "QualitySnapshot":
        """A copy of every window, to compute the metrics from later or on another thread.

        Copying is cheap (a few arrays per model); the metrics take tens of
        milliseconds per model over 50,000 labels, which a worker's event
        loop should not wait for.
        """
        for model in self._new:
            self._write(model)
        return QualitySnapshot({model: (w.score[:w.n].copy(), w.fraud[:w.n].copy(),
                                        w.card[:w.n].copy(), w.day[:w.n].copy())
                                for model, w in self._windows.items()},
                               self.k, self.exclude_known)


class QualitySnapshot:
    """The labelled windows of :class:`LiveQuality` at one moment, apart from it."""

    def __init__(self, windows: dict[str, tuple[np.ndarray, ...]], k: int, exclude_known: bool):
        self.windows = windows
        self.k = k
        self.exclude_known = exclude_known

    def report(self) -> dict[str, dict[str, float]]:
        """Each model's metrics over its window (see :meth:`LiveQuality.report`)."""
        out = {}
        for model, (s, y, card, day) in self.windows.items():
            n = len(s)
            out[model] = {
                "roc_auc": roc_auc(y, s),
                "average_precision": average_precision(y, s),
                "card_precision_at_k": (card_precision_at_k(day, card, y, s, self.k,
                                                            self.exclude_known)
                                        if n else math.nan),
                "n": n,
            }
        return out
