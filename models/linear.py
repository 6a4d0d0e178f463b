"""The default dynamic model: log scaling, running standardization and logistic regression.

It is river's ``FuncTransformer(log1p of counts and amounts, derived
features) | StandardScaler() | LogisticRegression(optimizer=SGD(lr))`` (the
same arithmetic, checked against river to 1e-12 in the tests, and the same
protocol: ``learn_one`` / ``predict_proba_one``), computed on numpy arrays
over a fixed feature order instead of dicts: measured side by side it costs
half as much per event, and the scaler was most of the model's cost.

A vector with every feature present (the usual case) is learned and scored
by compiled kernels (:func:`_learn_complete`, :func:`_predict_complete`):
the log scaling is numpy's as before, then one call does the derived
columns, the scaler, the dot product (numpy's BLAS ``dot``) and the update,
element by element in the order of the array code, so the result is the
same as the array code's to the last bit (``tests/models/test_linear.py``
compares them). A vector with a missing feature takes the array code.

Two kinds of derived features give the linear model shapes it cannot make
from the log-scaled features alone (see :func:`derived_features`):

* ``amount_to_<entity>_mean_<window>``: the log of the amount relative to
  the card's / user's mean amount over a window (``log1p(amount) -
  log1p(mean)``): a purchase several times the usual amount;
* ``amount_band_<i>``: which band of ``log1p(amount)`` (``band_width``
  wide) the amount falls in, one-hot: the weights of the bands form any
  step-wise shape of the amount, e.g. a jump in risk above some amount,
  which a weight on the log amount cannot.
"""

from __future__ import annotations

import bisect
import math
import operator

import numpy as np
from numba import njit
from river import base

from features.packed import PackedFeatures, packed_matrix


# Below this many rows a batch is scored row by row by the compiled kernel: measured,
# 7 µs a row against 31 µs for a one-row matrix; the matrix wins from about 8-16 rows.
MATRIX_MIN_ROWS = 8
BAND_LOW, BAND_HIGH = 0.5, 8.0  # log1p(amount) from about 0.65 to 3,000; the ends are open


def band_edges(width: float) -> np.ndarray:
    """Edges of the ``log1p(amount)`` bands: ``len(edges) + 1`` bands, the outer ones open.

    >>> band_edges(2.5).tolist()
    [0.5, 3.0, 5.5, 8.0]
    """
    return np.arange(BAND_LOW, BAND_HIGH + 1e-9, width)


def derived_features(names, band_width: float = 0.0) -> list[str]:
    """Names of the features derived from ``names`` (in order; see the module doc).

    >>> derived_features(["amount", "card_mean_amount_7d", "is_night"], band_width=2.5)
    ['amount_to_card_mean_7d', 'amount_band_0', 'amount_band_1', 'amount_band_2', 'amount_band_3', \
'amount_band_4']
    """
    if "amount" not in names:
        return []
    out = [f"amount_to_{n.replace('_mean_amount_', '_mean_')}" for n in names
           if "_mean_amount_" in n]
    if band_width > 0:
        out += [f"amount_band_{i}" for i in range(len(band_edges(band_width)) + 1)]
    return out


def derive(x: dict, band_width: float = 0.0) -> dict:
    """``x`` (counts and amounts already ``log1p``-scaled) with its derived features added.

    The plain-dict definition of what :class:`LinearFraudModel` computes on arrays.

    >>> d = derive({"amount": 3.0, "card_mean_amount_7d": 2.0}, band_width=2.5)
    >>> d["amount_to_card_mean_7d"], [d[f"amount_band_{i}"] for i in range(5)]  # 3.0 is in [3, 5.5)
    (1.0, [0.0, 0.0, 1.0, 0.0, 0.0])
    """
    out = dict(x)
    if "amount" not in x:
        return out
    amount = x["amount"]
    for n in x:
        if "_mean_amount_" in n:
            out[f"amount_to_{n.replace('_mean_amount_', '_mean_')}"] = amount - x[n]
    if band_width > 0:
        edges = band_edges(band_width)
        band = int(np.searchsorted(edges, amount, side="right"))
        out.update((f"amount_band_{i}", float(i == band)) for i in range(len(edges) + 1))
    return out


def is_log_scaled(name: str) -> bool:
    """Counts and amounts are heavy-tailed: they are put on a log scale.

    >>> is_log_scaled("card_count_1d"), is_log_scaled("amount"), is_log_scaled("is_night")
    (True, True, False)
    """
    return "count" in name or "amount" in name


class LinearFraudModel(base.Classifier):
    """Logistic regression by SGD on log-scaled, standardized features.

    Parameters
    ----------
    lr : float
        Learning rate of the weights.
    intercept_lr : float
        Learning rate of the intercept (river's default).
    derived : bool
        Add the amount-to-mean features (see :func:`derived_features`).
    band_width : float
        Width of the one-hot ``log1p(amount)`` bands; 0 for none.

    Examples
    --------
    >>> m = LinearFraudModel()
    >>> m.predict_proba_one({"amount": 10.0})[True]
    0.5
    >>> for _ in range(200):
    ...     m.learn_one({"amount": 900.0}, True)
    ...     m.learn_one({"amount": 20.0}, False)
    >>> m.predict_proba_one({"amount": 900.0})[True] > 0.5 > m.predict_proba_one({"amount": 20.0})[True]
    True
    """

    # Defaults for models pickled before the derived features existed.
    derived = False
    band_width = 0.0
    columns: list[str] = []
    _n_base = 0
    _ratios = slice(1, 1)
    _n_ratios = 0
    _edges = np.zeros(0)
    _edge_list: list[float] = []
    _amount = -1
    _n_log = 0

    def __init__(self, lr: float = 0.005, intercept_lr: float = 0.01, derived: bool = False,
                 band_width: float = 0.0):
        self.lr = lr
        self.intercept_lr = intercept_lr
        self.derived = derived
        self.band_width = band_width
        self.names: list[str] = []  # the input features, in the order first seen
        self.columns: list[str] = []  # what the weights apply to: the inputs, then derived ones
        self._index: dict[str, int] = {}
        self._log = np.zeros(0, dtype=bool)
        self.count = np.zeros(0)  # per column: values seen, running mean and M2 (Welford)
        self.mean = np.zeros(0)
        self.m2 = np.zeros(0)
        self.weights = np.zeros(0)
        self._inv_std = np.zeros(0)  # 1 / standard deviation, 0 for a column without spread
        self._getter = None
        self.intercept = 0.0
        if not _warm:
            warm_up()

    def _add_names(self, names) -> None:
        old = {c: i for i, c in enumerate(self.columns or self.names)}
        # The log-scaled inputs first: scaling them is then one slice of the vector.
        # The amount and the mean amounts lead: the ratios are then a slice minus a scalar.
        every = self.names + [n for n in names if n not in self._index]
        rank = {n: (0 if n == "amount" else 1 if "_mean_amount_" in n else
                    2 if is_log_scaled(n) else 3) for n in every}
        self.names = sorted(every, key=rank.__getitem__)  # stable: first seen first
        self._index = {n: i for i, n in enumerate(self.names)}
        self._n_log = sum(map(is_log_scaled, self.names))
        self._n_base = len(self.names)
        extra = derived_features(self.names, self.band_width) if self.derived else []
        self.columns = self.names + extra
        self._n_ratios = sum("_mean_amount_" in n for n in self.names) if extra else 0
        self._ratios = slice(1, 1 + self._n_ratios)  # after the amount, at 0 when there are any
        self._amount = self._index.get("amount", -1) if extra and self.band_width > 0 else -1
        self._edges = band_edges(self.band_width) if self._amount >= 0 else np.zeros(0)
        # Learned statistics follow their column to its new place.
        where = np.array([old.get(c, -1) for c in self.columns], dtype=np.intp)
        known = where >= 0

        def move(a):
            out = np.zeros(len(self.columns), a.dtype)
            out[known] = a[where[known]]
            return out
        self._log = np.array([is_log_scaled(k) for k in self.names], dtype=bool)
        self._edge_list = self._edges.tolist()
        self.count, self.mean, self.m2, self.weights = (
            move(self.count), move(self.mean), move(self.m2), move(self.weights))
        self._getter = operator.itemgetter(*self.names) if len(self.names) > 1 else None
        self._update_spread()

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        if "_n_log" not in state:  # pickled before the derived features existed
            self._add_names([])

    def _complete_inputs(self, x: dict) -> np.ndarray | None:
        """The inputs in this model's order, log-scaled, when ``x`` has exactly the known
        features (the kernels' case); None otherwise."""
        if len(x) != self._n_base or self._getter is None:
            return None
        if type(x) is PackedFeatures:
            x = x.as_dict()
        try:
            row = self._getter(x)
        except KeyError:
            return None
        b = np.array(row, np.float64)
        head = b[:self._n_log]
        np.log1p(np.maximum(head, 0.0, out=head), out=head)
        return b

    def _band_start(self) -> int:
        """The first amount-band column, -1 without bands."""
        return self._n_base + self._n_ratios if self._amount >= 0 else -1

    def _vector(self, x: dict) -> tuple[np.ndarray, bool]:
        """The columns in this model's order (inputs log-scaled); and whether all are present.

        The usual case, every feature present, takes a fast path; a missing
        feature is NaN (and so is what is derived from it) and is left out
        of every update, as river leaves out a missing key.
        """
        n = self._n_base
        if type(x) is PackedFeatures:
            x = x.as_dict()
        if len(x) == n and self._getter is not None:
            try:
                row = self._getter(x)
            except KeyError:
                pass
            else:  # the fast path: one array for the inputs and the derived columns
                v = np.zeros(len(self.columns))
                v[:n] = row
                head = v[:self._n_log]
                np.log1p(np.maximum(head, 0.0, out=head), out=head)
                if len(self.columns) > n:
                    self._derive(v)
                return v, True
        new = [k for k in x if k not in self._index]
        if new:
            self._add_names(new)
            n = self._n_base
        v = np.zeros(len(self.columns))
        v[:n] = np.fromiter((x.get(k, math.nan) for k in self.names), float, n)
        complete = len(x) == n and not np.isnan(v[:n]).any()
        if complete:
            head = v[:self._n_log]
            np.log1p(np.maximum(head, 0.0, out=head), out=head)
        else:
            logged = v[:n][self._log]
            v[:n][self._log] = np.log1p(np.where(logged > 0.0, logged, 0.0),
                                        where=~np.isnan(logged),
                                        out=np.full_like(logged, math.nan))
        if len(self.columns) > n:
            self._derive(v)
        return v, complete

    def _derive(self, v: np.ndarray) -> None:
        """Fill in the derived columns after the inputs (see :func:`derive`)."""
        n = self._n_base
        k = n + self._n_ratios
        amount = v.item(0)
        np.subtract(amount, v[self._ratios], out=v[n:k])
        if self._amount >= 0:
            if amount != amount:  # a missing amount: its bands are missing too
                v[k:] = math.nan
            else:
                v[k + bisect.bisect_right(self._edge_list, amount)] = 1.0

    def _standardize(self, v: np.ndarray, complete: bool = True) -> np.ndarray:
        if complete:
            return (v - self.mean) * self._inv_std
        z = np.zeros_like(v)
        present = ~np.isnan(v)
        z[present] = (v[present] - self.mean[present]) * self._inv_std[present]
        return z

    def _update_spread(self) -> None:
        # 1 / sqrt(m2 / count) where m2 > 0, else 0; without a division by zero.
        m2 = self.m2
        self._inv_std = np.sqrt(self.count / np.maximum(m2, 1e-200)) * (m2 > 0.0)

    def transform_one(self, x: dict) -> dict:
        """The standardized columns the weights apply to (inputs and derived ones)."""
        z = self._standardize(*self._vector(x))
        return {k: float(v) for k, v in zip(self.columns, z)}

    def predict_proba_one(self, x: dict) -> dict:
        b = self._complete_inputs(x)
        if b is not None:
            p = _predict_complete(b, self._n_ratios, self._band_start(), self._edges,
                                  self.mean, self.weights, self._inv_std, self.intercept)
        else:
            p = self._predict_arrays(x)
        return {False: 1.0 - p, True: p}

    def _predict_arrays(self, x: dict) -> float:
        """The probability of fraud in array code, for any input (the reference of the kernel)."""
        z = self._standardize(*self._vector(x))
        return _sigmoid(float(self.weights @ z) + self.intercept)

    def predict_proba_many(self, xs) -> list[float]:
        """The probability of fraud of each feature dict, for a micro-batch at once.

        Equal to :meth:`predict_proba_one` for each (to rounding in the dot
        product); one matrix instead of a vector per event. Dicts with a
        missing or a new feature go through :meth:`predict_proba_one`, and so
        does a batch of fewer than :data:`MATRIX_MIN_ROWS` (a live stream's
        usual one to a few events), for which building the matrix costs more.

        >>> m = LinearFraudModel(derived=True, band_width=0.1)
        >>> m.learn_one({"amount": 900.0, "card_mean_amount_1d": 100.0}, True)
        >>> xs = [{"amount": a, "card_mean_amount_1d": 100.0} for a in (20.0, 900.0)]
        >>> many = m.predict_proba_many(xs)
        >>> one = [m.predict_proba_one(x)[True] for x in xs]
        >>> max(abs(a - b) for a, b in zip(many, one)) < 1e-12
        True
        """
        n, getter = self._n_base, self._getter
        if getter is None or len(xs) < MATRIX_MIN_ROWS or any(len(x) != n for x in xs):
            return [self.predict_proba_one(x)[True] for x in xs]
        rows = packed_matrix(xs, tuple(self.names))
        if rows is None:
            try:
                rows = [getter(x) for x in xs]
            except KeyError:
                return [self.predict_proba_one(x)[True] for x in xs]
        v = np.zeros((len(rows), len(self.columns)))
        v[:, :n] = rows
        head = v[:, :self._n_log]
        np.log1p(np.maximum(head, 0.0, out=head), out=head)
        if len(self.columns) > n:
            k = n + self._n_ratios
            amount = v[:, 0]
            np.subtract(amount[:, None], v[:, self._ratios], out=v[:, n:k])
            if self._amount >= 0:
                bands = np.searchsorted(self._edges, amount, side="right")
                v[np.arange(len(rows)), k + bands] = 1.0
        raw = ((v - self.mean) * self._inv_std) @ self.weights + self.intercept
        p = 1.0 / (1.0 + np.exp(-np.clip(raw, -30.0, 30.0)))
        p[raw < -30.0] = 0.0
        p[raw > 30.0] = 1.0
        return p.tolist()

    def learn_one(self, x: dict, y: bool, w: float = 1.0) -> None:
        b = self._complete_inputs(x)
        if b is not None:
            self.intercept = _learn_complete(
                b, bool(y), float(w), self._n_ratios, self._band_start(), self._edges,
                self.count, self.mean, self.m2, self.weights, self._inv_std, self.intercept,
                self.lr, self.intercept_lr)
            return
        self._learn_arrays(x, y, w)

    def learn_many(self, xs, ys, ws, steps=None, scored: str | None = None) -> list[float] | None:
        """:meth:`learn_one` of each ``(x, y, w)`` in order (``steps[i]`` times for the i-th,
        when given), with the same result to the last bit: dicts with every known feature
        are learned by one call of the compiled kernel over their matrix, as it would learn
        them one by one; a batch with any other dict is learned one by one.

        With ``scored`` ``"before"`` (or ``"after"``), also returns the probability of
        fraud of each ``x`` as :meth:`predict_proba_one` gives it just before it is
        learned (or just after), to the last bit.

        >>> m, one = LinearFraudModel(derived=True, band_width=0.5), LinearFraudModel(derived=True, band_width=0.5)
        >>> xs = [{"amount": a, "card_mean_amount_7d": 20.0} for a in (900.0, 20.0, 35.0)]
        >>> for model in (m, one):
        ...     model.learn_one(xs[0], True)
        >>> got = m.learn_many(xs, [True, False, False], [1.0, 1.0, 1.0], [1, 2, 1], "before")
        >>> expected = []
        >>> for x, y, k in zip(xs, [True, False, False], [1, 2, 1]):
        ...     expected.append(one.predict_proba_one(x)[True])
        ...     for _ in range(k):
        ...         one.learn_one(x, y)
        >>> got == expected and bool((m.weights == one.weights).all()) and m.intercept == one.intercept
        True
        """
        when = _SCORED[scored]
        b = self._complete_rows(xs)
        if b is None:
            out = []
            for i, (x, y, w) in enumerate(zip(xs, ys, ws)):
                if when == _BEFORE:
                    out.append(self.predict_proba_one(x)[True])
                for _ in range(1 if steps is None else steps[i]):
                    self.learn_one(x, y, w)
                if when == _AFTER:
                    out.append(self.predict_proba_one(x)[True])
            return out if when else None
        scores = np.empty(len(b) if when else 0)
        self.intercept = _learn_rows(
            b, np.array(ys, np.bool_), np.array(ws, np.float64),
            np.ones(len(b), np.int64) if steps is None else np.array(steps, np.int64),
            when, self._n_ratios, self._band_start(), self._edges, self.count, self.mean,
            self.m2, self.weights, self._inv_std, self.intercept, self.lr, self.intercept_lr,
            scores)
        return scores.tolist() if when else None

    def _complete_rows(self, xs) -> np.ndarray | None:
        """The inputs of each dict, log-scaled, as rows of a matrix when every dict has
        exactly the known features (the kernels' case); None otherwise (or for none)."""
        n, getter = self._n_base, self._getter
        if not xs or getter is None:
            return None
        b = packed_matrix(xs, tuple(self.names))  # snapshots read back for their labels
        if b is None:
            if any(len(x) != n for x in xs):
                return None
            try:
                b = np.array([getter(x) for x in xs], np.float64)
            except KeyError:
                return None
        # Row by row as :meth:`_complete_inputs` scales one vector (the same inner loop).
        head = b[:, :self._n_log]
        np.log1p(np.maximum(head, 0.0, out=head), out=head)
        return b

    def _learn_arrays(self, x: dict, y: bool, w: float = 1.0) -> None:
        """:meth:`learn_one` in array code, for any input (the reference of the kernel)."""
        v, complete = self._vector(x)
        # The scaler learns first, then the regression learns on what it outputs.
        if complete:
            self.count += 1.0
            delta = v - self.mean
            self.mean += delta / self.count
            self.m2 += delta * (v - self.mean)
        else:
            present = ~np.isnan(v)
            self.count[present] += 1.0
            delta = v[present] - self.mean[present]
            self.mean[present] += delta / self.count[present]
            self.m2[present] += delta * (v[present] - self.mean[present])
        self._update_spread()
        z = self._standardize(v, complete)
        g = _log_loss_gradient(bool(y), float(self.weights @ z) + self.intercept) * w
        self.intercept -= self.intercept_lr * g
        self.weights -= self.lr * g * z

    def contributions(self, x: dict) -> dict[str, float]:
        """``weight * standardized value`` per column: what pushes this score.

        The amount bands are one column for a reader: their pushes are added
        to the amount's.
        """
        z = self._standardize(*self._vector(x))
        push = self.weights * z
        out = {k: float(p) for k, p in zip(self.columns, push) if not k.startswith("amount_band_")}
        if self._amount >= 0 and "amount" in out:
            out["amount"] += float(push[self._n_base + self._n_ratios:].sum())
        return {k: v for k, v in out.items() if k in x or k.startswith("amount_to_")}

    def explain(self, x: dict, top: int = 3) -> list[tuple[str, float, float]]:
        """The ``top`` columns that push the score up most: ``(name, value, push)``, largest first.

        What :meth:`contributions` and :meth:`values` give, ranked (positive,
        finite pushes only; ties in column order), from one pass over the
        vector: it runs for every alert.

        >>> m = LinearFraudModel(derived=True, band_width=0.5)
        >>> for a in (900.0, 20.0) * 50:
        ...     m.learn_one({"amount": a, "card_mean_amount_7d": 20.0, "is_night": 0.0}, a > 100)
        >>> [(k, round(v, 3)) for k, v, _ in m.explain({"amount": 900.0, "card_mean_amount_7d": 20.0,
        ...                                             "is_night": 0.0})]
        [('amount', 900.0), ('amount_to_card_mean_7d', 42.905)]
        """
        v, complete = self._vector(x)
        push = self.weights * self._standardize(v, complete)
        n, k = self._n_base, self._n_base + self._n_ratios
        head = push[:k]
        if self._amount >= 0:
            head[self._amount] += push[k:].sum()
        ranked = np.flatnonzero((head > 0.0) & np.isfinite(head))
        ranked = ranked[np.argsort(-head[ranked], kind="stable")][:top].tolist()
        columns = self.columns
        return [(columns[i], float(x[columns[i]]) if i < n else math.exp(v.item(i)),
                 head.item(i)) for i in ranked]

    def values(self, x: dict) -> dict[str, float]:
        """The inputs and, for the amount-to-mean columns, the plain ratio ``(1 + amount) / (1 + mean)``."""
        v, _ = self._vector(x)
        out = dict(x)
        n = self._n_base
        for k, value in zip(self.columns[n:n + self._n_ratios], v[n:]):
            out[k] = math.exp(value) if value == value else math.nan
        return out


_warm = False


def warm_up() -> None:
    """Compile (or load from numba's cache) the kernels now, not in the first label's latency."""
    global _warm
    _warm = True
    m = LinearFraudModel(derived=True, band_width=1.0)
    x = {"amount": 10.0, "card_mean_amount_1d": 5.0, "is_night": 0.0}
    for y in (True, False):  # the first one adds the features, the second is the kernel's
        m.learn_one(x, y)
    m.learn_many([x], [False], [1.0])
    m.predict_proba_one(x)


def _sigmoid(raw: float) -> float:
    if raw < -30:
        return 0.0
    if raw > 30:
        return 1.0
    return 1.0 / (1.0 + math.exp(-raw))


def _log_loss_gradient(y: bool, raw: float) -> float:
    """d log-loss / d raw score, as river's ``optim.losses.Log``."""
    sign = 1 if y else -1
    z = raw * sign
    if z > 18.0:
        return math.exp(-z) * -sign
    if z < -18.0:
        return -sign
    return -sign / (math.exp(z) + 1.0)


# -- kernels: the array code above for a vector with every input present ------------------

@njit(cache=True)
def _fill(b, n_ratios, band_start, edges, v):
    """``v``: the log-scaled inputs ``b``, then the derived columns (see :meth:`_derive`)."""
    n = b.shape[0]
    for i in range(n):
        v[i] = b[i]
    if v.shape[0] == n:
        return
    amount = v[0]
    for j in range(n_ratios):
        v[n + j] = amount - v[1 + j]
    if band_start >= 0:
        if amount != amount:  # a missing amount: its bands are missing too
            for i in range(band_start, v.shape[0]):
                v[i] = np.nan
        else:
            lo, hi = 0, edges.shape[0]  # band: bisect_right(edges, amount)
            while lo < hi:
                mid = (lo + hi) // 2
                if amount < edges[mid]:
                    hi = mid
                else:
                    lo = mid + 1
            for i in range(band_start, v.shape[0]):
                v[i] = 0.0
            v[band_start + lo] = 1.0


_gradient = njit(cache=True)(_log_loss_gradient)  # the same function, compiled for the kernels


@njit(cache=True)
def _learn_complete(b, y, w, n_ratios, band_start, edges, count, mean, m2, weights, inv_std,
                    intercept, lr, intercept_lr):
    """:meth:`LinearFraudModel.learn_one` of complete log-scaled inputs ``b``, in place;
    returns the new intercept."""
    m = count.shape[0]
    v = np.empty(m)
    _fill(b, n_ratios, band_start, edges, v)
    for i in range(m):  # the scaler (Welford), then its spread
        count[i] += 1.0
        delta = v[i] - mean[i]
        mean[i] += delta / count[i]
        m2[i] += delta * (v[i] - mean[i])
    for i in range(m):  # sqrt(count / maximum(m2, 1e-200)) * (m2 > 0), NaN included
        q = m2[i]
        d = q if (q >= 1e-200 or q != q) else 1e-200
        inv_std[i] = math.sqrt(count[i] / d) * (1.0 if q > 0.0 else 0.0)
    z = np.empty(m)
    for i in range(m):
        z[i] = (v[i] - mean[i]) * inv_std[i]
    g = _gradient(y, np.dot(weights, z) + intercept) * w
    intercept -= intercept_lr * g
    step = lr * g
    for i in range(m):
        weights[i] -= step * z[i]
    return intercept


# When :func:`_learn_rows` scores each row: not at all, just before it is learned, just after.
_SCORED = {None: 0, "before": 1, "after": 2}
_BEFORE, _AFTER = _SCORED["before"], _SCORED["after"]


@njit(cache=True)
def _learn_rows(b, ys, ws, steps, when, n_ratios, band_start, edges, count, mean, m2, weights,
                inv_std, intercept, lr, intercept_lr, scores):
    """:func:`_learn_complete` of each row of ``b`` in order, ``steps[i]`` times the i-th,
    with ``scores[i]``: :func:`_predict_complete` of the i-th row just before it is
    learned (``when`` 1) or just after (2), none with 0; returns the new intercept."""
    for r in range(b.shape[0]):
        if when == 1:
            scores[r] = _predict_complete(b[r], n_ratios, band_start, edges, mean, weights,
                                          inv_std, intercept)
        for _ in range(steps[r]):
            intercept = _learn_complete(b[r], ys[r], ws[r], n_ratios, band_start, edges, count,
                                        mean, m2, weights, inv_std, intercept, lr, intercept_lr)
        if when == 2:
            scores[r] = _predict_complete(b[r], n_ratios, band_start, edges, mean, weights,
                                          inv_std, intercept)
    return intercept


@njit(cache=True)
def _predict_complete(b, n_ratios, band_start, edges, mean, weights, inv_std, intercept):
    """The probability of fraud of complete log-scaled inputs ``b``."""
    m = mean.shape[0]
    z = np.empty(m)
    _fill(b, n_ratios, band_start, edges, z)
    for i in range(m):
        z[i] = (z[i] - mean[i]) * inv_std[i]
    raw = np.dot(weights, z) + intercept
    if raw < -30:
        return 0.0
    if raw > 30:
        return 1.0
    return 1.0 / (1.0 + math.exp(-raw))
