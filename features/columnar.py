"""Entity states in arrays, updated and read by compiled kernels.

The embedded store keeps every live user, card and seller in memory. Objects
per entity (``features.state``) are the documented definitions; here the same
fields live in numpy arrays, one row per entity, and the hourly buckets of all
entities share one pool. Kernels compiled with numba process a micro-batch of
purchases in one call: per purchase, the stream clock moves on, entities idle
past their time-to-live start afresh, the features are computed from the prior
state (:func:`features.definitions.compute_features`) and the purchase is
applied (:func:`features.state.apply_purchase`).

The kernels repeat the arithmetic of the reference functions operation for
operation, in the same order (buckets are summed in the order they were
created, as a dict iterates them; no fast-math reassociation), so features
and states are equal to the last bit; ``tests/features/test_columnar.py``
checks this against the reference functions.

Layout. A row of ``rows[kind]`` (float64) holds the entity's scalars: first
seen, last seen, purchases, registration time (NaN: none), then per kind the
fraud and outcome counts and log-price sums (user), the report count and the
last ``RECENT_TIMES`` purchase times (card), the item-count histogram
(seller). Integer counters are exact in float64. ``heads[kind]`` (int64) holds
where the entity's buckets start in the pool, how many there are and how many
fit. The pool holds ``(hour, count, value)`` triples; an entity's buckets are
contiguous and in creation order; a full block moves to the end of the pool
with half as much room again, and :meth:`StateTables.compact` drops the holes left.
"""

from __future__ import annotations

import math
import mmap

import numpy as np
from numba import njit

from features.definitions import FeatureConfig, compute_features
from features.definitions import WINDOW_HOURS
from features.schemas import FEATURE_NAMES, Purchase
from features.state import (RECENT_TIMES, STATE_TYPES, CardState, EntityState, SellerState,
                            UserState)

KINDS = ("user", "card", "seller")
USER, CARD, SELLER = 0, 1, 2

# Columns shared by every kind.
FIRST, LAST, NPURCH, REG = 0, 1, 2, 3
# User.
U_FRAUDS, U_LEGIT, U_LPN, U_LPSUM, U_LPSQ = 4, 5, 6, 7, 8
# Card: the report count, how many recent times are kept, then the times (one spare).
C_REPORTS, C_NRECENT, C_RECENT = 4, 5, 6
# Seller: the item-count histogram, one column per class (1..8, then powers of two).
S_HIST = 4
ITEM_CLASSES = 29  # classes up to 2**24 items
MAX_ITEMS = 1 << (ITEM_CLASSES - 4)
WIDTH = (U_LPSQ + 1, C_RECENT + RECENT_TIMES + 1, S_HIST + ITEM_CLASSES)
# Bucket heads.
START, COUNT, ROOM = 0, 1, 2

# Feature columns of the kernel's output: FEATURE_NAMES order.
N_FEATURES = len(FEATURE_NAMES)
_COL = {name: i for i, name in enumerate(FEATURE_NAMES)}
assert [_COL[f"{e}_{s}_{d}d"] for e, s in (("card", "count"), ("card", "mean_amount"),
                                            ("user", "count"), ("user", "mean_amount"),
                                            ("seller", "count"), ("seller", "risk"))
        for d in (1, 7, 30)] == list(range(10, 28)), "kernel columns out of date"
# compute_features builds its dict in its own key order; snapshots keep it.
_PROBE = compute_features(Purchase("t", 0.0, "u", "s", "i", "c", 1.0, 1), UserState(),
                          CardState(), SellerState(), FeatureConfig())
REFERENCE_ORDER = tuple(_PROBE)
REFERENCE_COLUMNS = np.array([_COL[name] for name in REFERENCE_ORDER])
assert WINDOW_HOURS == (24, 168, 720), "kernel windows out of date"

_HOUR = 3600.0
_DAY = 86400.0


def item_class_column(n_items: int) -> int:
    """Histogram column of an item count (see :func:`features.state.items_class`).

    >>> [item_class_column(n) for n in (1, 8, 9, 16, 17, 1000)]
    [0, 7, 8, 8, 9, 14]
    """
    if n_items <= 8:
        return n_items - 1
    return 8 + (n_items - 1).bit_length() - 4


def column_item_class(column: int) -> int:
    """The item-count class of a histogram column (the inverse of the above)."""
    return column + 1 if column < 8 else 1 << (column - 4)


# -- kernels -------------------------------------------------------------------------------

@njit(cache=True)
def _hour_of(ts):
    return int(ts // _HOUR)


@njit(cache=True)
def _reset(rows, heads, kind, slot):  # StateTables._blank, one entity
    """A brand-new entity in ``slot`` (its bucket block, if any, is kept for reuse)."""
    row = rows[slot]
    row[:] = 0.0
    row[FIRST] = np.inf
    row[LAST] = -np.inf
    row[REG] = np.nan
    heads[slot, COUNT] = 0


@njit(cache=True)
def _expire(rows, heads, kind, slot, horizon):
    """Idle since before the horizon: forgotten (an entity never updated has nothing to expire)."""
    last = rows[slot, LAST]
    if last > -np.inf and last < horizon:
        _reset(rows, heads, kind, slot)


@njit(cache=True)
def _grown_room(room):
    return max(4, room + room // 2)


@njit(cache=True)
def _room_needed(heads, slot):
    if heads[slot, COUNT] < heads[slot, ROOM]:
        return 0
    return _grown_room(heads[slot, ROOM])


@njit(cache=True)
def _add_bucket(heads, slot, hour, count, value, ph, pc, pv, pool):
    """Add to an hour's bucket; True when the bucket is new (room was checked before)."""
    start = heads[slot, START]
    n = heads[slot, COUNT]
    for j in range(start + n - 1, start - 1, -1):  # the newest hour is usually the last
        if ph[j] == hour:
            pc[j] += count
            pv[j] += value
            return False
    if n == heads[slot, ROOM]:  # move to the end of the pool with half as much room again
        room = _grown_room(n)
        new = pool[0]
        for j in range(n):
            ph[new + j] = ph[start + j]
            pc[new + j] = pc[start + j]
            pv[new + j] = pv[start + j]
        pool[0] += room
        pool[1] += heads[slot, ROOM]
        heads[slot, START] = new
        heads[slot, ROOM] = room
        start = new
    ph[start + n] = hour
    pc[start + n] = count
    pv[start + n] = value
    heads[slot, COUNT] = n + 1
    return True


@njit(cache=True)
def _trim(heads, slot, newest_hour, keep_hours, ph, pc, pv):
    """Drop the buckets older than ``keep_hours`` before the newest, keeping the order."""
    oldest = newest_hour - keep_hours
    start = heads[slot, START]
    n = heads[slot, COUNT]
    k = 0
    for j in range(start, start + n):
        if ph[j] >= oldest:
            ph[start + k] = ph[j]
            pc[start + k] = pc[j]
            pv[start + k] = pv[j]
            k += 1
    heads[slot, COUNT] = k


@njit(cache=True)
def _window_sums(heads, slot, end_hour, ph, pc, pv, out):
    """``features.definitions.window_sums`` over the 1, 7 and 30 days ending at ``end_hour``."""
    c1 = c2 = c3 = v1 = v2 = v3 = 0.0
    start = heads[slot, START]
    for j in range(start, start + heads[slot, COUNT]):
        age = end_hour - ph[j]
        if age < 0 or age >= 720:
            continue
        c3 += pc[j]
        v3 += pv[j]
        if age < 168:
            c2 += pc[j]
            v2 += pv[j]
            if age < 24:
                c1 += pc[j]
                v1 += pv[j]
    out[0] = c1
    out[1] = c2
    out[2] = c3
    out[3] = v1
    out[4] = v2
    out[5] = v3


@njit(cache=True)
def _amount_windows(sums, price, out, base):
    for w in range(3):
        count = sums[w]
        out[base + w] = count + 1
        out[base + 3 + w] = (sums[3 + w] + price) / (count + 1)


@njit(cache=True)
def _share(part, total):  # min(1, part / total), 0 without a total
    if total == 0.0:
        return 0.0
    r = part / total
    return r if r < 1.0 else 1.0


@njit(cache=True)
def _tenure(now, since, half_life):
    if np.isnan(since):
        return 0.0
    age = now - since
    if not age > 0.0:
        age = 0.0
    return age / (age + half_life)


@njit(cache=True)
def _features(ts, price, n_items, cls, ureg, sreg, u, c, s, U, C, S, UH, CH, SH, ph, pc, pv,
              half_life, velocity_window, velocity_half, risk_delay, out, sums):
    """``features.definitions.compute_features`` into ``out`` (FEATURE_NAMES order)."""
    now = ts
    since = ureg if (not np.isnan(ureg) and ureg != 0.0) else U[u, REG]
    out[0] = _tenure(now, since, half_life)
    since = sreg if (not np.isnan(sreg) and sreg != 0.0) else S[s, REG]
    out[1] = _tenure(now, since, half_life)
    out[2] = _share(U[u, U_FRAUDS], U[u, NPURCH])  # user fraud ratio
    # user price typicality
    if U[u, U_LPN] < 2:
        out[3] = 1.0
    else:
        n = U[u, U_LPN]
        mean = U[u, U_LPSUM] / n
        variance = (U[u, U_LPSQ] - n * mean * mean) / (n - 1)
        if not variance > 0.0:
            variance = 0.0
        std = math.sqrt(variance)
        if not std > 0.1:
            std = 0.1
        z = (math.log(price) - mean) / std
        out[3] = math.exp(-0.5 * z * z)
    out[4] = _share(C[c, C_REPORTS], C[c, NPURCH])  # card report rate
    # card recent velocity: bisect_right(times, now) - bisect_right(times, now - window)
    nrecent = int(C[c, C_NRECENT])
    lo = now - velocity_window
    k = 0
    for j in range(nrecent):
        t = C[c, C_RECENT + j]
        if t <= now and not t <= lo:
            k += 1
    out[5] = k / (k + velocity_half)
    # seller items typicality
    top = 0.0
    for j in range(ITEM_CLASSES):
        if S[s, S_HIST + j] > top:
            top = S[s, S_HIST + j]
    if top == 0.0:
        out[6] = 1.0
    else:
        out[6] = (S[s, S_HIST + cls] + 1) / (top + 1)
    out[7] = price
    days = ts // _DAY
    seconds = ts % _DAY
    out[8] = 1.0 if seconds < 7 * _HOUR else 0.0
    weekday = (int(days) + 3) % 7
    out[9] = 1.0 if weekday >= 5 else 0.0
    hour = _hour_of(now)
    _window_sums(CH, c, hour, ph, pc, pv, sums)
    _amount_windows(sums, price, out, 10)
    _window_sums(UH, u, hour, ph, pc, pv, sums)
    _amount_windows(sums, price, out, 16)
    _window_sums(SH, s, hour, ph, pc, pv, sums)
    for w in range(3):
        out[22 + w] = sums[w] + 1
    _window_sums(SH, s, _hour_of(now - risk_delay), ph, pc, pv, sums)
    for w in range(3):
        old = sums[w]
        if old != 0.0:
            r = sums[3 + w] / old
            out[25 + w] = r if r < 1.0 else 1.0
        else:
            out[25 + w] = 0.0


@njit(cache=True)
def _seen(row, ts):
    if ts < row[FIRST]:
        row[FIRST] = ts
    if ts > row[LAST]:
        row[LAST] = ts


@njit(cache=True)
def apply_purchases(ts, price, n_items, ureg, sreg, uslot, cslot, sslot, start, clock, ttl,
                    keep_hours, seller_keep_hours, half_life, velocity_window, velocity_half,
                    risk_delay, featurize, out, U, C, S, UH, CH, SH, ph, pc, pv, pool):
    """Featurize (when asked) and apply purchases ``start..`` in order.

    Returns ``(next, clock)``: ``next`` is the number of purchases done, less
    than their number when the bucket pool ran out of room (make room and
    call again from there).
    """
    sums = np.empty(6)
    size = ph.shape[0]
    for i in range(start, ts.shape[0]):
        u, c, s = uslot[i], cslot[i], sslot[i]
        need = _room_needed(UH, u) + _room_needed(CH, c) + _room_needed(SH, s)
        if pool[0] + need > size:
            return i, clock
        t = ts[i]
        if t > clock:
            clock = t
        horizon = clock - ttl
        _expire(U, UH, USER, u, horizon)
        _expire(C, CH, CARD, c, horizon)
        _expire(S, SH, SELLER, s, horizon)
        p = price[i]
        n = n_items[i]
        cls = n - 1 if n <= 8 else 8
        if n > 8:
            m = n - 1
            bits = 0
            while m:
                m >>= 1
                bits += 1
            cls = 8 + bits - 4
        if featurize:
            _features(t, p, n, cls, ureg[i], sreg[i], u, c, s, U, C, S, UH, CH, SH, ph, pc, pv,
                      half_life, velocity_window, velocity_half, risk_delay, out[i], sums)
        hour = _hour_of(t)
        # user
        row = U[u]
        _seen(row, t)
        if not np.isnan(ureg[i]):
            row[REG] = ureg[i]
        row[NPURCH] += 1
        log_price = math.log(p)
        row[U_LPN] += 1
        row[U_LPSUM] += log_price
        row[U_LPSQ] += log_price * log_price
        if _add_bucket(UH, u, hour, 1, p, ph, pc, pv, pool):
            _trim(UH, u, _hour_of(row[LAST]), keep_hours, ph, pc, pv)
        # card
        row = C[c]
        _seen(row, t)
        row[NPURCH] += 1
        k = int(row[C_NRECENT])
        j = k
        while j > 0 and row[C_RECENT + j - 1] > t:  # sorted insert: append, then sort
            row[C_RECENT + j] = row[C_RECENT + j - 1]
            j -= 1
        row[C_RECENT + j] = t
        k += 1
        if k > RECENT_TIMES:
            for j in range(RECENT_TIMES):
                row[C_RECENT + j] = row[C_RECENT + j + 1]
            k = RECENT_TIMES
        row[C_NRECENT] = k
        if _add_bucket(CH, c, hour, 1, p, ph, pc, pv, pool):
            _trim(CH, c, _hour_of(row[LAST]), keep_hours, ph, pc, pv)
        # seller
        row = S[s]
        _seen(row, t)
        if not np.isnan(sreg[i]):
            row[REG] = sreg[i]
        row[NPURCH] += 1
        row[S_HIST + cls] += 1
        if _add_bucket(SH, s, hour, 1, 0.0, ph, pc, pv, pool):
            _trim(SH, s, _hour_of(row[LAST]), seller_keep_hours, ph, pc, pv)
    return ts.shape[0], clock


@njit(cache=True)
def apply_labels(ts, fraud, uslot, cslot, sslot, start, clock, ttl, U, C, S, UH, CH, SH,
                 ph, pc, pv, pool):
    """``features.state.apply_label`` for labels ``start..`` in order; returns the next to do."""
    size = ph.shape[0]
    horizon = clock - ttl
    for i in range(start, ts.shape[0]):
        u, c, s = uslot[i], cslot[i], sslot[i]
        if pool[0] + _room_needed(SH, s) > size:
            return i
        _expire(U, UH, USER, u, horizon)
        _expire(C, CH, CARD, c, horizon)
        _expire(S, SH, SELLER, s, horizon)
        if fraud[i]:
            U[u, U_FRAUDS] += 1
            C[c, C_REPORTS] += 1
            _add_bucket(SH, s, _hour_of(ts[i]), 0, 1.0, ph, pc, pv, pool)
        else:
            U[u, U_LEGIT] += 1
    return ts.shape[0]


@njit(cache=True)
def _compact(UH, CH, SH, ph, pc, pv, nh, nc, nv):
    end = 0
    for heads in (UH, CH, SH):
        for slot in range(heads.shape[0]):
            room = heads[slot, ROOM]
            if room == 0:
                continue
            start = heads[slot, START]
            for j in range(heads[slot, COUNT]):
                nh[end + j] = ph[start + j]
                nc[end + j] = pc[start + j]
                nv[end + j] = pv[start + j]
            heads[slot, START] = end
            end += room
    return end


@njit(cache=True)
def gather_buckets(heads, slots, ph, pc, pv, hours, counts, values):
    """The buckets of ``slots``, one entity after the other, into the last three arrays."""
    k = 0
    for i in range(slots.shape[0]):
        start = heads[slots[i], START]
        for j in range(heads[slots[i], COUNT]):
            hours[k] = ph[start + j]
            counts[k] = pc[start + j]
            values[k] = pv[start + j]
            k += 1


# -- the tables ----------------------------------------------------------------------------

class StateTables:
    """Every entity of a store: ids, rows of scalars and the bucket pool.

    >>> from features.schemas import Purchase, Label
    >>> t = StateTables(FeatureConfig(), entity_ttl=90 * 86400.0)
    >>> p = Purchase("t1", 1522584000.0, "u1", "s1", "i1", "c1", 40.0, 1)
    >>> f = t.apply_columns(np.array([p.event_ts]), np.array([p.price]), np.array([1]),
    ...                     np.array([np.nan]), np.array([np.nan]), ["u1"], ["c1"], ["s1"],
    ...                     featurize=True)
    >>> float(f[0, FEATURE_NAMES.index("card_count_1d")]), t.get("card", "c1").n_purchases
    (1.0, 1)
    >>> t.apply_labels([(p.event_ts, True, "u1", "c1", "s1")])
    >>> t.get("user", "u1").n_frauds, t.get("seller", "s1").buckets
    (1, {422940: [1, 1]})
    """

    def __init__(self, features: FeatureConfig, entity_ttl: float):
        self.cfg = features
        self.ttl = entity_ttl
        self.keep_hours = features.keep_hours
        self.seller_keep_hours = features.seller_keep_hours
        self.clock = -math.inf
        self.index: list[dict[str, int]] = [{}, {}, {}]
        self.ids: list[list[str | None]] = [[], [], []]
        self.free: list[list[int]] = [[], [], []]
        self.rows = [np.empty((0, w)) for w in WIDTH]
        self.heads = [np.zeros((0, 3), np.int64) for _ in KINDS]
        self.ph = np.zeros(1 << 16, np.int32)
        self.pc = np.zeros(1 << 16, np.int32)
        self.pv = np.zeros(1 << 16, np.float64)
        self.pool = np.zeros(2, np.int64)  # end of the used part, room lost to moves

    # -- slots ----------------------------------------------------------------------------
    def slots(self, kind: int, ids) -> np.ndarray:
        """The row of each id, new rows for new ids."""
        if not isinstance(ids, list):
            ids = list(ids)
        index = self.index[kind]
        get = index.get
        found = list(map(get, ids))
        if None in found:
            new = []
            for k in [k for k, slot in enumerate(found) if slot is None]:
                entity_id = ids[k]
                slot = get(entity_id)  # the same new id twice in a batch
                if slot is None:
                    slot = index[entity_id] = self._new_slot(kind, entity_id)
                    new.append(slot)
                found[k] = slot
            self._blank(kind, np.array(new, np.int64))
        return np.array(found, np.int64)

    def _blank(self, kind: int, slots: np.ndarray) -> None:
        """Brand-new entities in rows ``slots`` (their bucket blocks are kept for reuse)."""
        rows = self.rows[kind]
        rows[slots] = 0.0
        rows[slots, FIRST] = np.inf
        rows[slots, LAST] = -np.inf
        rows[slots, REG] = np.nan
        self.heads[kind][slots, COUNT] = 0

    def _new_slot(self, kind: int, entity_id: str) -> int:
        if self.free[kind]:
            slot = self.free[kind].pop()
            self.ids[kind][slot] = entity_id
            return slot
        slot = len(self.ids[kind])
        if slot == self.rows[kind].shape[0]:
            size = max(1024, slot + slot // 2)
            rows = zeros((size, WIDTH[kind]), np.float64)
            rows[:slot] = self.rows[kind]
            heads = zeros((size, 3), np.int64)
            heads[:slot] = self.heads[kind]
            self.rows[kind], self.heads[kind] = rows, heads
        self.ids[kind].append(entity_id)
        return slot

    def slot(self, kind: str, entity_id: str) -> int | None:
        """The row of a live entity, or None (unknown, or idle past its time-to-live)."""
        k = KINDS.index(kind)
        slot = self.index[k].get(entity_id)
        if slot is None:
            return None
        last = self.rows[k][slot, LAST]
        return None if -math.inf < last < self.clock - self.ttl else slot

    # -- pool -----------------------------------------------------------------------------
    def _make_room(self) -> None:
        used, lost = int(self.pool[0]), int(self.pool[1])
        live = used - lost
        size = max(1 << 16, live + live // 2 + (1 << 16))
        if lost * 5 < used:  # few holes: grow; else compact
            size = max(size, used + used // 4)
            self.ph = _grown(self.ph, size)
            self.pc = _grown(self.pc, size)
            self.pv = _grown(self.pv, size)
            return
        self.compact(size)

    def compact(self, size: int | None = None) -> None:
        """Move every entity's buckets together, dropping the holes."""
        live = int(self.pool[0] - self.pool[1])
        size = size or max(1 << 16, live + live // 2)
        nh, nc, nv = zeros(size, np.int32), zeros(size, np.int32), zeros(size, np.float64)
        end = _compact(*self.heads, self.ph, self.pc, self.pv, nh, nc, nv)
        self.ph, self.pc, self.pv = nh, nc, nv
        self.pool[0], self.pool[1] = end, 0

    # -- updates --------------------------------------------------------------------------
    def apply_columns(self, ts, price, n_items, ureg, sreg, users, cards, sellers,
                      featurize: bool) -> np.ndarray | None:
        n = ts.shape[0]
        u, c, s = self.slots(USER, users), self.slots(CARD, cards), self.slots(SELLER, sellers)
        out = np.empty((n if featurize else 0, N_FEATURES))
        cfg = self.cfg
        done = 0
        while True:
            done, self.clock = apply_purchases(
                ts, price, n_items, ureg, sreg, u, c, s, done, self.clock, self.ttl,
                self.keep_hours, self.seller_keep_hours, cfg.tenure_half_life,
                cfg.velocity_window, cfg.velocity_half, cfg.risk_delay, featurize, out,
                *self.rows, *self.heads, self.ph, self.pc, self.pv, self.pool)
            if done == n:
                return out if featurize else None
            self._make_room()

    def apply_labels(self, labels) -> None:
        """Apply ``(event_ts, is_fraud, user_id, card_hash, seller_id)`` outcomes in order."""
        if not labels:
            return
        ts = np.array([x[0] for x in labels], np.float64)
        fraud = np.array([bool(x[1]) for x in labels], np.bool_)
        u = self.slots(USER, [x[2] for x in labels])
        c = self.slots(CARD, [x[3] for x in labels])
        s = self.slots(SELLER, [x[4] for x in labels])
        done = 0
        while True:
            done = apply_labels(ts, fraud, u, c, s, done, self.clock, self.ttl, *self.rows,
                                *self.heads, self.ph, self.pc, self.pv, self.pool)
            if done == len(labels):
                return
            self._make_room()

    # -- entities as objects --------------------------------------------------------------
    def get(self, kind: str, entity_id: str) -> EntityState | None:
        """A copy of one live entity's state as its ``features.state`` object."""
        slot = self.slot(kind, entity_id)
        if slot is None:
            return None
        return self.state_at(KINDS.index(kind), slot)

    def state_at(self, kind: int, slot: int) -> EntityState:
        row = self.rows[kind][slot].tolist()
        head = self.heads[kind][slot]
        start, count = int(head[START]), int(head[COUNT])
        hours = self.ph[start:start + count].tolist()
        counts = self.pc[start:start + count].tolist()
        values = self.pv[start:start + count].tolist()
        if kind == SELLER:
            values = [int(v) for v in values]
        buckets = {h: [c, v] for h, c, v in zip(hours, counts, values)}
        common = dict(first_seen_ts=row[FIRST], last_ts=row[LAST], n_purchases=int(row[NPURCH]),
                      buckets=buckets)
        reg = None if math.isnan(row[REG]) else row[REG]
        if kind == USER:
            return UserState(registered_ts=reg, n_frauds=int(row[U_FRAUDS]),
                             n_legit=int(row[U_LEGIT]), log_price_n=int(row[U_LPN]),
                             log_price_sum=row[U_LPSUM], log_price_sq=row[U_LPSQ], **common)
        if kind == CARD:
            k = int(row[C_NRECENT])
            return CardState(n_reports=int(row[C_REPORTS]),
                             recent_ts=row[C_RECENT:C_RECENT + k], **common)
        hist = {column_item_class(j): int(v) for j, v in enumerate(row[S_HIST:]) if v}
        return SellerState(registered_ts=reg, items_hist=hist, **common)

    def put(self, kind: str, entity_id: str, state: EntityState) -> None:
        """Set one entity's state from its ``features.state`` object."""
        k = KINDS.index(kind)
        (slot,) = self.slots(k, [entity_id])
        self._blank(k, np.array([slot]))
        row = self.rows[k][slot]
        row[FIRST], row[LAST], row[NPURCH] = state.first_seen_ts, state.last_ts, state.n_purchases
        if k != CARD and state.registered_ts is not None:
            row[REG] = state.registered_ts
        if k == USER:
            row[U_FRAUDS], row[U_LEGIT] = state.n_frauds, state.n_legit
            row[U_LPN], row[U_LPSUM], row[U_LPSQ] = (state.log_price_n, state.log_price_sum,
                                                     state.log_price_sq)
        elif k == CARD:
            row[C_REPORTS] = state.n_reports
            recent = sorted(state.recent_ts)[-RECENT_TIMES:]
            row[C_NRECENT] = len(recent)
            row[C_RECENT:C_RECENT + len(recent)] = recent
        else:
            for cls, count in state.items_hist.items():
                row[S_HIST + item_class_column(cls)] = count
        self._set_buckets(k, slot, list(state.buckets.items()))

    def _set_buckets(self, kind: int, slot: int, items) -> None:
        heads = self.heads[kind]
        n = len(items)
        if n > heads[slot, ROOM]:
            room = max(4, n)
            if self.pool[0] + room > self.ph.shape[0]:
                self._make_room()
                if self.pool[0] + room > self.ph.shape[0]:
                    size = int(self.pool[0]) + room + (1 << 16)
                    self.ph, self.pc, self.pv = (_grown(self.ph, size), _grown(self.pc, size),
                                                 _grown(self.pv, size))
            self.pool[1] += heads[slot, ROOM]
            heads[slot, START], heads[slot, ROOM] = self.pool[0], room
            self.pool[0] += room
        start = heads[slot, START]
        heads[slot, COUNT] = n
        for j, (hour, (count, value)) in enumerate(items):
            self.ph[start + j], self.pc[start + j], self.pv[start + j] = hour, count, value

    # -- bulk -----------------------------------------------------------------------------
    def live_slots(self, kind: int) -> np.ndarray:
        """Rows of the entities alive on the stream clock (updated within the TTL)."""
        n = len(self.ids[kind])
        last = self.rows[kind][:n, LAST]
        return np.flatnonzero(last >= self.clock - self.ttl)

    def kept_slots(self, kind: int) -> np.ndarray:
        """Rows of every entity not idle past the TTL (those never updated included)."""
        n = len(self.ids[kind])
        last = self.rows[kind][:n, LAST]
        keep = (last >= self.clock - self.ttl) | (last == -math.inf)
        keep &= np.array([i is not None for i in self.ids[kind]], np.bool_)
        return np.flatnonzero(keep)

    def entity_count(self) -> int:
        return sum(len(index) for index in self.index)

    def count(self, kind: str) -> int:
        return int(self.live_slots(KINDS.index(kind)).shape[0])

    def forget_idle(self) -> None:
        """Free the rows of entities idle past the TTL."""
        for k in range(3):
            n = len(self.ids[k])
            last = self.rows[k][:n, LAST]
            idle = (last < self.clock - self.ttl) & (last > -math.inf)
            idle_slots = np.flatnonzero(idle)
            for slot in idle_slots.tolist():
                entity_id = self.ids[k][slot]
                if entity_id is None:
                    continue
                del self.index[k][entity_id]
                self.ids[k][slot] = None
                self.free[k].append(slot)
            self._blank(k, idle_slots)

    def export(self, kind: int, slots: np.ndarray) -> tuple:
        """Entities ``slots`` of a kind as ids and arrays (see :meth:`load`)."""
        ids = [self.ids[kind][s] for s in slots.tolist()]
        rows = zeros((len(slots), WIDTH[kind]), np.float64)
        np.take(self.rows[kind], slots, axis=0, out=rows)
        counts = self.heads[kind][slots, COUNT]
        total = int(counts.sum())
        hours, bc, bv = zeros(total, np.int32), zeros(total, np.int32), zeros(total, np.float64)
        gather_buckets(self.heads[kind], slots, self.ph, self.pc, self.pv, hours, bc, bv)
        return ids, rows, counts, hours, bc, bv

    def load(self, kind: int, ids: list[str], rows: bytes, counts: bytes, hours: bytes,
             bc: bytes, bv: bytes) -> None:
        """Add entities exported by :meth:`export`."""
        slots = self.slots(kind, ids)
        self.rows[kind][slots] = np.frombuffer(rows, np.float64).reshape(len(ids), WIDTH[kind])
        counts = np.frombuffer(counts, np.int64)
        hours = np.frombuffer(hours, np.int32)
        bc = np.frombuffer(bc, np.int32)
        bv = np.frombuffer(bv, np.float64)
        total = int(counts.sum())
        rooms = np.maximum(counts, 4) * (counts > 0)
        need = int(rooms.sum())
        if self.pool[0] + need > self.ph.shape[0]:
            size = int(self.pool[0]) + need + (1 << 16)
            self.ph, self.pc, self.pv = (_grown(self.ph, size), _grown(self.pc, size),
                                         _grown(self.pv, size))
        heads = self.heads[kind]
        starts = int(self.pool[0]) + np.concatenate(([0], np.cumsum(rooms)[:-1]))
        heads[slots, START] = starts
        heads[slots, COUNT] = counts
        heads[slots, ROOM] = rooms
        assert total == hours.shape[0]
        dest = np.repeat(starts, counts) + (np.arange(total) - np.repeat(
            np.concatenate(([0], np.cumsum(counts)[:-1])), counts))
        self.ph[dest], self.pc[dest], self.pv[dest] = hours, bc, bv
        self.pool[0] += need


def warm_up(features: FeatureConfig | None = None) -> None:
    """Compile (or load from numba's cache) the kernels of a purchase and a label now.

    Otherwise the first micro-batch a worker takes waits for them: up to a
    second, in the latency of its events.
    """
    tables = StateTables(features or FeatureConfig(), entity_ttl=86_400.0)
    one = lambda dtype, value: np.array([value], dtype)  # noqa: E731
    tables.apply_columns(one(np.float64, 1e9), one(np.float64, 1.0), one(np.int64, 1),
                         one(np.float64, np.nan), one(np.float64, 1e9), ["u"], ["c"], ["s"],
                         featurize=True)
    tables.apply_labels([(1e9, True, "u", "c", "s")])


def zeros(shape, dtype) -> np.ndarray:
    """A zero-filled array; a large one is mapped from the kernel on its own, so that the
    memory goes back to the system as soon as the array is dropped (the C heap tends to keep
    large blocks once it has seen a few)."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape)) * dtype.itemsize
    if size < 1 << 20:
        return np.zeros(shape, dtype)
    return np.frombuffer(mmap.mmap(-1, size), dtype).reshape(shape)


def _grown(a: np.ndarray, size: int) -> np.ndarray:
    out = zeros(size, a.dtype)
    out[:a.shape[0]] = a
    return out


__all__ = ["KINDS", "StateTables", "REFERENCE_ORDER", "REFERENCE_COLUMNS"]
