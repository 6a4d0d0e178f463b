"""The feature definitions: pure functions of a purchase and the prior state.

Every feature of a purchase is computed from the state of its user, card and
seller *before* the purchase (what was known at that moment) plus the purchase
itself. The same functions run online in the stream and offline in replay, so
training and serving cannot skew.

The seven seed ratios are in [0, 1]. The windowed features follow the
published baseline (Le Borgne et al.): per card and per user the count and
mean amount over 1, 7 and 30 days (the current purchase included), per seller
the count over 1, 7 and 30 days and the fraud risk over the same windows
shifted back by ``risk_delay`` (labels known at scoring time are those of
transactions old enough to have been labelled), night and weekend flags and
the amount.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass

from features.schemas import (FEATURE_NAMES, SEED_FEATURES, WINDOW_DAYS,  # noqa: F401
                              WINDOW_FEATURES, Purchase)
from features.state import DAY, HOUR, CardState, SellerState, UserState, hour_of, items_class

WINDOW_HOURS = tuple(24 * d for d in WINDOW_DAYS)


@dataclass(frozen=True, slots=True)
class FeatureConfig:
    """Tunable constants of the feature definitions.

    ``tenure_half_life`` is the age (seconds) at which a tenure ratio is 0.5;
    ``velocity_window`` the span (seconds) a card's purchases count as recent;
    ``velocity_half`` the number of recent purchases at which velocity is 0.5;
    ``risk_delay`` how far back (seconds) the seller risk windows end;
    ``late_tolerance`` how late (seconds behind the newest event of an
    entity) a purchase may arrive and still see its full windows.
    """

    tenure_half_life: float = 30 * DAY
    velocity_window: float = HOUR
    velocity_half: float = 3.0
    risk_delay: float = 7 * DAY
    late_tolerance: float = 2 * DAY

    @property
    def keep_hours(self) -> int:
        """Hourly buckets kept per user and card: the longest window, late arrivals too."""
        return max(WINDOW_DAYS) * 24 + math.ceil(self.late_tolerance / HOUR) + 1

    @property
    def seller_keep_hours(self) -> int:
        """Hourly buckets kept per seller: the longest window plus the delay."""
        return self.keep_hours + math.ceil(self.risk_delay / HOUR)




def tenure(now: float, since: float | None, half_life: float) -> float:
    """How long an entity has been registered, as a ratio in [0, 1).

    ``age / (age + half_life)``: 0 for a brand-new account, 0.5 at the
    half-life, approaching 1 for old accounts. An unknown registration time
    counts as new.

    >>> tenure(30 * DAY, 0.0, 30 * DAY), tenure(0.0, 0.0, 30 * DAY)
    (0.5, 0.0)
    """
    if since is None:
        return 0.0
    age = max(0.0, now - since)
    return age / (age + half_life)


def user_fraud_ratio(user: UserState) -> float:
    """How many of all the user's purchases were fraud, from labels known so far.

    >>> u = UserState(n_purchases=4, n_frauds=1)
    >>> user_fraud_ratio(u), user_fraud_ratio(UserState())
    (0.25, 0.0)
    """
    return min(1.0, user.n_frauds / user.n_purchases) if user.n_purchases else 0.0


def user_price_typicality(user: UserState, price: float) -> float:
    """How average this price is for the user: ``exp(-z**2 / 2)`` in log-price.

    ``z`` is the distance of ``log(price)`` from the mean of the user's earlier
    log-prices in standard deviations (floored at 0.1, about 10%); 1 means a
    perfectly usual price. With fewer than two earlier purchases nothing is
    unusual yet: 1.

    >>> lp = [math.log(20.0) - 0.5, math.log(20.0), math.log(20.0) + 0.5]
    >>> u = UserState(log_price_n=3, log_price_sum=sum(lp), log_price_sq=sum(v * v for v in lp))
    >>> round(user_price_typicality(u, 20.0), 3), round(user_price_typicality(u, 100.0), 3)
    (1.0, 0.006)
    """
    if user.log_price_n < 2:
        return 1.0
    n = user.log_price_n
    mean = user.log_price_sum / n
    variance = max(0.0, (user.log_price_sq - n * mean * mean) / (n - 1))
    std = max(0.1, math.sqrt(variance))
    z = (math.log(price) - mean) / std
    return math.exp(-0.5 * z * z)


def card_report_rate(card: CardState) -> float:
    """How often the card was reported: fraud reports per purchase so far.

    >>> card_report_rate(CardState(n_purchases=10, n_reports=2))
    0.2
    """
    return min(1.0, card.n_reports / card.n_purchases) if card.n_purchases else 0.0


def card_recent_velocity(card: CardState, now: float, window: float, half: float) -> float:
    """How often the card was used just before: ``n / (n + half)``.

    ``n`` counts the card's earlier purchases within ``window`` seconds before
    this one; 0 means none, 0.5 means ``half`` of them.

    >>> c = CardState(recent_ts=[0.0, 1000.0, 3000.0, 3500.0])
    >>> card_recent_velocity(c, 3600.0, 3600.0, 3.0)
    0.5
    """
    times = card.recent_ts  # sorted
    n = bisect.bisect_right(times, now) - bisect.bisect_right(times, now - window)
    return n / (n + half)


def seller_items_typicality(seller: SellerState, n_items: int) -> float:
    """How standard this number of items is for the seller.

    The seller's count of earlier purchases in the same item-count class,
    relative to its most common class, smoothed by one: 1 for the seller's
    usual count (and for a seller without history), near 0 for a count it
    has never sold.

    >>> s = SellerState(items_hist={1: 9, 2: 3})
    >>> seller_items_typicality(s, 1), seller_items_typicality(s, 2), seller_items_typicality(s, 40)
    (1.0, 0.4, 0.1)
    """
    if not seller.items_hist:
        return 1.0
    top = max(seller.items_hist.values())
    return (seller.items_hist.get(items_class(n_items), 0) + 1) / (top + 1)


def window_sums(buckets: dict[int, list[float]], end_hour: int,
                spans: tuple[int, ...] = WINDOW_HOURS) -> list[tuple[float, float]]:
    """Sums of both bucket values over ``(end_hour - span, end_hour]`` for three spans.

    One pass over the buckets serves the three windows (shortest first).

    >>> window_sums({10: [1, 5.0], 20: [2, 8.0], 30: [1, 1.0]}, 20, (5, 24, 100))
    [(2.0, 8.0), (3.0, 13.0), (3.0, 13.0)]
    """
    short, mid, long = spans
    c1 = c2 = c3 = v1 = v2 = v3 = 0.0
    for hour, slot in buckets.items():
        age = end_hour - hour
        if age < 0 or age >= long:
            continue
        c3 += slot[0]
        v3 += slot[1]
        if age < mid:
            c2 += slot[0]
            v2 += slot[1]
            if age < short:
                c1 += slot[0]
                v1 += slot[1]
    return [(c1, v1), (c2, v2), (c3, v3)]


def time_flags(ts: float) -> tuple[float, float]:
    """``(is_night, is_weekend)`` of an event time in UTC; night is hour <= 6.

    >>> time_flags(1522540800.0)  # Sunday 2018-04-01 00:00 UTC
    (1.0, 1.0)
    >>> time_flags(1522584000.0 + DAY)  # Monday noon
    (0.0, 0.0)
    """
    days, seconds = divmod(ts, DAY)
    weekday = (int(days) + 3) % 7  # 1970-01-01 was a Thursday; Monday is 0
    return float(seconds < 7 * HOUR), float(weekday >= 5)


_WINDOW_KEYS = {entity: [(f"{entity}_count_{d}d", f"{entity}_mean_amount_{d}d")
                         for d in WINDOW_DAYS] for entity in ("card", "user")}
_SELLER_KEYS = [(f"seller_count_{d}d", f"seller_risk_{d}d") for d in WINDOW_DAYS]


def compute_features(p: Purchase, user: UserState, card: CardState, seller: SellerState,
                     cfg: FeatureConfig) -> dict[str, float]:
    """Every feature of a purchase, from the prior state of its entities.

    >>> from features.schemas import Purchase
    >>> p = Purchase("t1", 1522584000.0, "u1", "s1", "i1", "c1", 40.0, 1)
    >>> f = compute_features(p, UserState(), CardState(), SellerState(), FeatureConfig())
    >>> f["card_count_1d"], f["card_mean_amount_7d"], f["seller_risk_30d"], f["amount"]
    (1.0, 40.0, 0.0, 40.0)
    >>> sorted(f) == sorted(FEATURE_NAMES)
    True
    """
    now = p.event_ts
    night, weekend = time_flags(now)
    out = {
        "user_tenure": tenure(now, p.user_registered_ts or user.registered_ts,
                              cfg.tenure_half_life),
        "seller_tenure": tenure(now, p.seller_registered_ts or seller.registered_ts,
                                cfg.tenure_half_life),
        "user_fraud_ratio": user_fraud_ratio(user),
        "user_price_typicality": user_price_typicality(user, p.price),
        "card_report_rate": card_report_rate(card),
        "card_recent_velocity": card_recent_velocity(card, now, cfg.velocity_window,
                                                     cfg.velocity_half),
        "seller_items_typicality": seller_items_typicality(seller, p.n_items),
        "amount": p.price,
        "is_night": night,
        "is_weekend": weekend,
    }
    hour = hour_of(now)
    price = p.price
    for name, buckets in (("card", card.buckets), ("user", user.buckets)):
        for (count_key, mean_key), (count, amount) in zip(_WINDOW_KEYS[name],
                                                          window_sums(buckets, hour)):
            out[count_key] = count + 1
            out[mean_key] = (amount + price) / (count + 1)
    recent = window_sums(seller.buckets, hour)
    delayed = window_sums(seller.buckets, hour_of(now - cfg.risk_delay))
    for (count_key, risk_key), (count, _), (old, frauds) in zip(_SELLER_KEYS, recent, delayed):
        out[count_key] = count + 1
        out[risk_key] = min(1.0, frauds / old) if old else 0.0
    return out
