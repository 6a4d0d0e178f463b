"""Entity state: what the store keeps per user, card and seller.

A state is the history of one entity compressed into counters, running
statistics and sparse hourly buckets (``hour -> [count, value]``). Updates are
plain functions so that every backend applies exactly the same arithmetic; the
Aerospike backend maps the same fields onto bins and map operations.

Event time drives everything: a bucket is the hour of the event's own
timestamp, so an event that arrives late lands in its own hour and replaying
history rebuilds the very same state.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import orjson

from features.schemas import Label, Purchase

HOUR = 3600.0
DAY = 24 * HOUR
RECENT_TIMES = 16  # card purchase times kept for the velocity feature


def hour_of(ts: float) -> int:
    """The hourly bucket of an event time.

    >>> hour_of(7200.0), hour_of(7199.9)
    (2, 1)
    """
    return int(ts // HOUR)


@dataclass(slots=True)
class UserState:
    registered_ts: float | None = None
    first_seen_ts: float = math.inf
    last_ts: float = -math.inf
    n_purchases: int = 0
    n_frauds: int = 0
    n_legit: int = 0
    log_price_n: int = 0
    log_price_sum: float = 0.0  # plain sums, not a running mean: a backend can
    log_price_sq: float = 0.0   # increment them atomically and subtract them exactly
    buckets: dict[int, list[float]] = field(default_factory=dict)  # hour -> [count, amount]


@dataclass(slots=True)
class CardState:
    first_seen_ts: float = math.inf
    last_ts: float = -math.inf
    n_purchases: int = 0
    n_reports: int = 0
    recent_ts: list[float] = field(default_factory=list)
    buckets: dict[int, list[float]] = field(default_factory=dict)  # hour -> [count, amount]


@dataclass(slots=True)
class SellerState:
    registered_ts: float | None = None
    first_seen_ts: float = math.inf
    last_ts: float = -math.inf
    n_purchases: int = 0
    items_hist: dict[int, int] = field(default_factory=dict)  # items class -> count
    buckets: dict[int, list[float]] = field(default_factory=dict)  # hour -> [count, frauds]


EntityState = UserState | CardState | SellerState
STATE_TYPES: dict[str, type] = {"user": UserState, "card": CardState, "seller": SellerState}


def items_class(n_items: int) -> int:
    """Histogram class of an item count: exact up to 8, then powers of two.

    Counts far from the usual ones share a class, so the histogram of a seller
    stays small however odd its orders get.

    >>> [items_class(n) for n in (1, 8, 9, 16, 17, 1000)]
    [1, 8, 16, 16, 32, 1024]
    """
    if n_items <= 8:
        return n_items
    return 1 << (n_items - 1).bit_length()


def _add_bucket(buckets: dict[int, list[float]], hour: int, count: float, value: float) -> bool:
    """Add to an hour's bucket; True when the bucket is new."""
    slot = buckets.get(hour)
    if slot is None:
        buckets[hour] = [count, value]
        return True
    slot[0] += count
    slot[1] += value
    return False


def _trim(buckets: dict[int, list[float]], newest_hour: int, keep_hours: int) -> None:
    oldest = newest_hour - keep_hours
    if buckets and min(buckets) < oldest:
        for hour in [h for h in buckets if h < oldest]:
            del buckets[hour]


def _seen(state: EntityState, ts: float) -> None:
    if ts < state.first_seen_ts:
        state.first_seen_ts = ts
    if ts > state.last_ts:
        state.last_ts = ts


def apply_purchase(p: Purchase, user: UserState, card: CardState, seller: SellerState,
                   keep_hours: int, seller_keep_hours: int) -> None:
    """Add one purchase to the three entity states it touches."""
    hour = hour_of(p.event_ts)

    _seen(user, p.event_ts)
    if p.user_registered_ts is not None:
        user.registered_ts = p.user_registered_ts
    user.n_purchases += 1
    log_price = math.log(p.price)
    user.log_price_n += 1
    user.log_price_sum += log_price
    user.log_price_sq += log_price * log_price
    if _add_bucket(user.buckets, hour, 1, p.price):  # only a new bucket can make one too old
        _trim(user.buckets, hour_of(user.last_ts), keep_hours)

    _seen(card, p.event_ts)
    card.n_purchases += 1
    recent = card.recent_ts
    recent.append(p.event_ts)
    if len(recent) > 1 and recent[-2] > p.event_ts:
        recent.sort()
    del recent[:-RECENT_TIMES]
    if _add_bucket(card.buckets, hour, 1, p.price):
        _trim(card.buckets, hour_of(card.last_ts), keep_hours)

    _seen(seller, p.event_ts)
    if p.seller_registered_ts is not None:
        seller.registered_ts = p.seller_registered_ts
    seller.n_purchases += 1
    cls = items_class(p.n_items)
    seller.items_hist[cls] = seller.items_hist.get(cls, 0) + 1
    if _add_bucket(seller.buckets, hour, 1, 0):
        _trim(seller.buckets, hour_of(seller.last_ts), seller_keep_hours)


def unapply_purchase(p: Purchase, user: UserState, card: CardState, seller: SellerState) -> None:
    """Take one applied purchase back out of the three entity states.

    The inverse of :func:`apply_purchase` for everything the features read:
    the counters, the log-price sums, the item-count histogram, the
    purchase's hourly buckets and the card's recent times. A store that
    reads an entity back *after* applying a purchase gets the state the
    purchase was featurized against from this. Integer fields come back
    exactly, float sums to within rounding (``(a + x) - x`` may differ from
    ``a`` in the last bit). ``recent_ts`` comes back exactly when it holds
    one time more than ``RECENT_TIMES`` (the oldest time the purchase pushed
    out). What the purchase overwrote is left as it is: first and last seen
    times and registration times (a purchase that carries a registration
    time is featurized with its own).

    Parameters
    ----------
    p : Purchase
        The purchase to take out.
    user, card, seller : UserState, CardState, SellerState
        The states after the purchase, changed in place.

    >>> u, c, s = UserState(), CardState(), SellerState()
    >>> p = Purchase("t1", 7200.0, "u1", "s1", "i1", "c1", 20.0, 1)
    >>> apply_purchase(p, u, c, s, keep_hours=721, seller_keep_hours=889)
    >>> unapply_purchase(p, u, c, s)
    >>> u.n_purchases, u.log_price_sum, u.buckets, c.recent_ts, s.items_hist, s.buckets
    (0, 0.0, {}, [], {}, {})
    """
    hour = hour_of(p.event_ts)

    def take_from_bucket(buckets: dict[int, list[float]], amount: float | None) -> None:
        slot = buckets.get(hour)
        if slot is None:
            return
        slot[0] -= 1
        if amount is not None:
            slot[1] -= amount
        # An amount bucket goes with its last purchase (its sum is only a
        # residue then); a seller's [count, frauds] stays while it counts frauds.
        if slot[0] <= 0 and (amount is not None or not slot[1]):
            del buckets[hour]

    user.n_purchases -= 1
    log_price = math.log(p.price)
    user.log_price_n -= 1
    if user.log_price_n:
        user.log_price_sum -= log_price
        user.log_price_sq -= log_price * log_price
    else:  # nothing left: exactly zero rather than a rounding residue
        user.log_price_sum = user.log_price_sq = 0.0
    take_from_bucket(user.buckets, p.price)

    card.n_purchases -= 1
    if p.event_ts in card.recent_ts:
        card.recent_ts.remove(p.event_ts)
    del card.recent_ts[:-RECENT_TIMES]
    take_from_bucket(card.buckets, p.price)

    seller.n_purchases -= 1
    cls = items_class(p.n_items)
    left = seller.items_hist.get(cls, 0) - 1
    if left > 0:
        seller.items_hist[cls] = left
    else:
        seller.items_hist.pop(cls, None)
    take_from_bucket(seller.buckets, None)


def apply_label(label: Label, event_ts: float, user: UserState, card: CardState,
                seller: SellerState) -> None:
    """Add a transaction's outcome to its entities.

    A fraud raises the user's fraud count, the card's report count and the
    fraud count of the seller's bucket of the transaction's own event hour; a
    legitimate outcome counts as a known outcome of the user.
    """
    if label.is_fraud:
        user.n_frauds += 1
        card.n_reports += 1
        _add_bucket(seller.buckets, hour_of(event_ts), 0, 1)
    else:
        user.n_legit += 1


def state_to_json(state: EntityState) -> bytes:
    """The JSON form of a state (the store's on-disk format).

    >>> s = CardState(); s.buckets[5] = [1, 9.5]
    >>> state_from_json("card", state_to_json(s)).buckets
    {5: [1, 9.5]}
    """
    return orjson.dumps(state, option=orjson.OPT_NON_STR_KEYS)


def state_from_json(kind: str, raw: bytes) -> EntityState:
    data = orjson.loads(raw)
    data["first_seen_ts"] = _or(data["first_seen_ts"], math.inf)
    data["last_ts"] = _or(data["last_ts"], -math.inf)
    data["buckets"] = {int(k): v for k, v in data["buckets"].items()}
    if "items_hist" in data:
        data["items_hist"] = {int(k): v for k, v in data["items_hist"].items()}
    return STATE_TYPES[kind](**data)


def _or(value, default):
    return default if value is None else value
