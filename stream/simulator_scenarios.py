"""Array-level building blocks of the transaction simulator.

This module holds the vectorised numpy code behind
:func:`stream.simulator.simulate`: the customer/terminal population of the
handbook generator (Le Borgne et al., *Reproducible Machine Learning for
Credit Card Fraud Detection*), the daily transaction draws, the three
handbook fraud scenarios and the additional scenarios of this project.
Everything works on column arrays; turning rows into event dicts happens in
:mod:`stream.simulator`.

Times are integer milliseconds relative to the simulation start (midnight
UTC of the first day); registration times before the start are negative.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
MINUTE_MS = 60_000

SCENARIO_NAMES: dict[int, str] = {
    0: "legit",
    1: "amount_threshold",
    2: "compromised_terminal",
    3: "compromised_customer",
    4: "stolen_card",
    5: "new_seller",
    6: "odd_items",
    7: "new_user",
    8: "repeat_fraud",
    9: "drift",
}
"""Scenario id -> name; id 0 is a legitimate transaction."""

STREAMS = (
    "customers", "terminals", "transactions", "terminal_fraud",
    "customer_fraud", "cards", "users", "sellers", "items", "labels",
    "stolen_card", "new_seller", "odd_items", "new_user", "repeat_fraud",
    "drift",
)

COLUMNS = ("ts", "user", "card", "seller", "amount", "n_items", "scenario", "burst")


def random_streams(seed: int) -> dict[str, np.random.Generator]:
    """Independent generators, one per simulation component.

    Separate streams keep the handbook population and its transactions
    identical whatever extra scenarios or label settings are switched on.
    """
    children = np.random.SeedSequence(seed).spawn(len(STREAMS))
    return {name: np.random.Generator(np.random.PCG64(ss)) for name, ss in zip(STREAMS, children)}


def empty_columns() -> dict[str, np.ndarray]:
    """Columns of a transaction batch with no rows."""
    return make_columns(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0))


def make_columns(ts, user, seller, amount, *, card=None, n_items=None, scenario=0, burst=-1):
    """Build a transaction batch; ``card``/``n_items`` of -1/0 are drawn later."""
    n = len(ts)
    return {
        "ts": np.asarray(ts, np.int64),
        "user": np.asarray(user, np.int64),
        "card": np.full(n, -1, np.int64) if card is None else np.broadcast_to(np.asarray(card, np.int64), (n,)).copy(),
        "seller": np.asarray(seller, np.int64),
        "amount": np.round(np.asarray(amount, np.float64), 2),
        "n_items": np.zeros(n, np.int64) if n_items is None else np.asarray(n_items, np.int64),
        "scenario": np.full(n, scenario, np.int8),
        "burst": np.full(n, burst, np.int64),
    }


def concat_columns(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate transaction batches column by column."""
    parts = [p for p in parts if len(p["ts"])] or [empty_columns()]
    return {c: np.concatenate([p[c] for p in parts]) for c in COLUMNS}


@dataclass
class World:
    """Customers/users, cards, terminals/sellers and item catalogues."""

    mean_amount: np.ndarray
    std_amount: np.ndarray
    rate: np.ndarray
    nbr_ptr: np.ndarray
    nbr_idx: np.ndarray
    n_nbrs: np.ndarray
    term_ptr: np.ndarray
    term_cust: np.ndarray
    user_first_card: np.ndarray
    user_n_cards: np.ndarray
    user_reg: list[int]
    card_owner: list[int]
    seller_reg: list[int]
    seller_typical: list[int]
    seller_catalogue: list[int]
    n_customers: int
    n_terminals: int
    n_customer_cards: int
    next_burst: int = 0
    fraud_sellers: list[int] = field(default_factory=list)

    def add_user(self, reg_ms: int) -> int:
        """Register a new user (and one card); return the user index."""
        self.user_reg.append(int(reg_ms))
        return len(self.user_reg) - 1

    def add_card(self, user: int) -> int:
        """Issue a new card to ``user``; return the card index."""
        self.card_owner.append(int(user))
        return len(self.card_owner) - 1

    def add_seller(self, reg_ms: int, typical: int, catalogue: int) -> int:
        """Register a new seller; return the seller index."""
        self.seller_reg.append(int(reg_ms))
        self.seller_typical.append(int(typical))
        self.seller_catalogue.append(int(catalogue))
        return len(self.seller_reg) - 1


def _registration_offsets(rng, n, new_share, new_days, old_days):
    """Registration times (ms, negative) before the start: mostly old, some new."""
    new = rng.random(n) < new_share
    days = np.where(new, rng.uniform(new_days[0], new_days[1], n), rng.uniform(old_days[0], old_days[1], n))
    return -np.round(days * DAY_MS).astype(np.int64)


def build_world(cfg: Any, rngs: dict[str, np.random.Generator]) -> World:
    """Draw the handbook population plus cards, registrations and catalogues."""
    rc, rt = rngs["customers"], rngs["terminals"]
    nc, nt = cfg.n_customers, cfg.n_terminals
    cx = rc.uniform(0, cfg.grid_size, nc)
    cy = rc.uniform(0, cfg.grid_size, nc)
    mean_amount = rc.uniform(*cfg.mean_amount_range, nc)
    rate = rc.uniform(*cfg.tx_rate_range, nc)
    tx = rt.uniform(0, cfg.grid_size, nt)
    ty = rt.uniform(0, cfg.grid_size, nt)

    rows, cols = [], []
    chunk = max(1, 4_000_000 // max(nt, 1))
    for lo in range(0, nc, chunk):
        d2 = (cx[lo:lo + chunk, None] - tx[None, :]) ** 2 + (cy[lo:lo + chunk, None] - ty[None, :]) ** 2
        r, c = np.nonzero(np.sqrt(d2) < cfg.radius)
        rows.append(r + lo)
        cols.append(c)
    rows_a = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    nbr_idx = (np.concatenate(cols) if cols else np.zeros(0, np.int64)).astype(np.int64)
    n_nbrs = np.bincount(rows_a, minlength=nc).astype(np.int64)
    nbr_ptr = np.concatenate([[0], np.cumsum(n_nbrs)[:-1]]).astype(np.int64)
    by_term = np.argsort(nbr_idx, kind="stable")
    term_cust = rows_a[by_term].astype(np.int64)
    term_ptr = np.concatenate([[0], np.cumsum(np.bincount(nbr_idx, minlength=nt))]).astype(np.int64)

    rk = rngs["cards"]
    multi = rk.random(nc) < cfg.multi_card_share
    extra = rk.integers(2, max(2, cfg.max_cards_per_user) + 1, nc)
    user_n_cards = np.where(multi, extra, 1).astype(np.int64)
    user_first_card = np.concatenate([[0], np.cumsum(user_n_cards)[:-1]]).astype(np.int64)
    card_owner = np.repeat(np.arange(nc), user_n_cards)

    ru, rs = rngs["users"], rngs["sellers"]
    user_reg = _registration_offsets(ru, nc, cfg.new_user_share, (0.02, 30.0), (30.0, cfg.user_max_tenure_days))
    seller_reg = _registration_offsets(rs, nt, cfg.new_seller_share, (1.0, 30.0), (60.0, cfg.seller_max_tenure_days))
    typical = rs.choice(np.array([1, 2, 3]), size=nt, p=np.array([0.6, 0.3, 0.1]))
    catalogue = rs.integers(cfg.catalogue_size_range[0], cfg.catalogue_size_range[1] + 1, nt)

    return World(
        mean_amount=mean_amount, std_amount=mean_amount * cfg.std_amount_ratio, rate=rate,
        nbr_ptr=nbr_ptr, nbr_idx=nbr_idx, n_nbrs=n_nbrs, term_ptr=term_ptr, term_cust=term_cust,
        user_first_card=user_first_card, user_n_cards=user_n_cards,
        user_reg=user_reg.tolist(), card_owner=card_owner.tolist(),
        seller_reg=seller_reg.tolist(), seller_typical=typical.tolist(), seller_catalogue=catalogue.tolist(),
        n_customers=nc, n_terminals=nt, n_customer_cards=int(user_n_cards.sum()),
    )


def time_of_day(rng: np.random.Generator, n: int, cfg: Any) -> np.ndarray:
    """Normal times of day (ms) around noon, redrawn until inside the day."""
    out = np.floor(rng.normal(cfg.time_of_day_mean, cfg.time_of_day_std, n) * 1000).astype(np.int64)
    bad = (out <= 0) | (out >= DAY_MS)
    while bad.any():
        out[bad] = np.floor(rng.normal(cfg.time_of_day_mean, cfg.time_of_day_std, int(bad.sum())) * 1000)
        bad = (out <= 0) | (out >= DAY_MS)
    return out


def customer_amounts(rng, world: World, users: np.ndarray) -> np.ndarray:
    """Handbook amounts: Normal(mean, std), redrawn in U(0, 2 mean) when negative."""
    mean = world.mean_amount[users]
    amount = rng.normal(mean, world.std_amount[users])
    neg = amount < 0
    amount[neg] = rng.uniform(0, 2 * mean[neg])
    return np.round(amount, 2)


def nearby_terminals(rng, world: World, users: np.ndarray) -> np.ndarray:
    """One terminal per user, uniform among the terminals within the radius."""
    u = rng.random(len(users))
    return world.nbr_idx[world.nbr_ptr[users] + (u * world.n_nbrs[users]).astype(np.int64)]


def base_day(cfg: Any, world: World, rng: np.random.Generator, day: int) -> dict[str, np.ndarray]:
    """The handbook's legitimate transactions of one day, all customers at once.

    Draws are made for every Poisson transaction; those whose time of day
    falls outside the day, and those of customers without any terminal in
    their radius, are dropped, as in the handbook.
    """
    counts = rng.poisson(world.rate)
    users = np.repeat(np.arange(world.n_customers), counts)
    tod = np.floor(rng.normal(cfg.time_of_day_mean, cfg.time_of_day_std, len(users)) * 1000).astype(np.int64)
    amount = customer_amounts(rng, world, users)
    u = rng.random(len(users))
    keep = (tod > 0) & (tod < DAY_MS) & (world.n_nbrs[users] > 0)
    users, tod, amount, u = users[keep], tod[keep], amount[keep], u[keep]
    seller = world.nbr_idx[world.nbr_ptr[users] + (u * world.n_nbrs[users]).astype(np.int64)]
    return make_columns(day * DAY_MS + tod, users, seller, amount)


def apply_handbook_frauds(cfg: Any, world: World, tx: dict[str, np.ndarray], rngs) -> dict[str, list]:
    """Scenarios 1-3 of the handbook, in place on the base transactions.

    A transaction already fraudulent by an earlier scenario keeps its id.
    Returns the compromised ``(day, terminal)`` and ``(day, customer)`` pairs.
    """
    scen, amount, day = tx["scenario"], tx["amount"], tx["ts"] // DAY_MS
    truth: dict[str, list] = {"compromised_terminals": [], "compromised_customers": []}
    if cfg.amount_threshold is not None:
        scen[amount > cfg.amount_threshold] = 1

    k2 = min(cfg.compromised_terminals_per_day, world.n_terminals)
    if k2 > 0 and len(scen):
        rng = rngs["terminal_fraud"]
        window = np.zeros((world.n_terminals, cfg.n_days), bool)
        for d in range(cfg.n_days):
            terms = rng.choice(world.n_terminals, k2, replace=False)
            truth["compromised_terminals"].extend((d, int(t)) for t in terms)
            window[terms, d:d + cfg.terminal_compromise_days] = True
        hit = window[tx["seller"], day] & (scen == 0)
        scen[hit] = 2

    k3 = min(cfg.compromised_customers_per_day, world.n_customers)
    if k3 > 0 and len(scen):
        rng = rngs["customer_fraud"]
        order = np.argsort(tx["user"], kind="stable")
        users_sorted, days_sorted = tx["user"][order], day[order]
        for d in range(cfg.n_days):
            chosen = rng.choice(world.n_customers, k3, replace=False)
            truth["compromised_customers"].extend((d, int(c)) for c in chosen)
            cands = []
            for c in chosen:
                lo, hi = np.searchsorted(users_sorted, [c, c + 1])
                a, b = lo + np.searchsorted(days_sorted[lo:hi], [d, d + cfg.customer_compromise_days])
                cands.append(order[a:b])
            pool = np.sort(np.concatenate(cands))
            k = int(np.floor(len(pool) * cfg.customer_fraud_share + 1e-9))
            if k == 0:
                continue
            pick = rng.choice(pool, k, replace=False)
            pick = pick[scen[pick] == 0]
            amount[pick] = np.round(amount[pick] * cfg.customer_fraud_amount_factor, 2)
            scen[pick] = 3
    return truth


def apply_repeat_fraud(cfg: Any, world: World, tx: dict[str, np.ndarray], rng) -> list[tuple[int, int]]:
    """Scenario 8: some users turn fraudulent from a start day on (friendly fraud).

    Returns the ``(start_day, customer)`` pairs.
    """
    n = int(round(cfg.repeat_fraud_user_share * world.n_customers))
    if n == 0 or not len(tx["ts"]):
        return []
    users = rng.choice(world.n_customers, n, replace=False)
    start = np.full(world.n_customers, np.iinfo(np.int64).max, np.int64)
    start[users] = rng.integers(0, max(1, cfg.n_days // 2), n)
    hit = (tx["ts"] // DAY_MS >= start[tx["user"]]) & (tx["scenario"] == 0)
    hit &= rng.random(len(hit)) < cfg.repeat_fraud_tx_share
    tx["scenario"][hit] = 8
    return [(int(start[u]), int(u)) for u in users]


def stolen_card_day(cfg, world: World, rng, day: int) -> dict[str, np.ndarray]:
    """Scenario 4: stolen cards make a burst of purchases within minutes."""
    parts = []
    for _ in range(rng.poisson(cfg.stolen_cards_per_day)):
        card = int(rng.integers(0, world.n_customer_cards))
        size = int(rng.integers(cfg.stolen_burst_size[0], cfg.stolen_burst_size[1] + 1))
        start = day * DAY_MS + int(rng.uniform(0, DAY_MS - 2 * HOUR_MS))
        gaps = np.floor((5 + rng.exponential(cfg.stolen_burst_gap_seconds, size - 1)) * 1000)
        ts = start + np.concatenate([[0], np.cumsum(gaps)]).astype(np.int64)
        sellers = rng.integers(0, world.n_terminals, size)
        amount = rng.uniform(*cfg.stolen_amount_range, size)
        parts.append(make_columns(ts, np.full(size, world.card_owner[card]), sellers, amount,
                                  card=card, scenario=4, burst=world.next_burst))
        world.next_burst += 1
    return concat_columns(parts)


def new_seller_day(cfg, world: World, rng, day: int) -> dict[str, np.ndarray]:
    """Scenario 5: fraudulent sellers registered a few days before selling."""
    parts = []
    for _ in range(rng.poisson(cfg.new_sellers_per_day)):
        lead = rng.uniform(*cfg.new_seller_lead_days)
        seller = world.add_seller(day * DAY_MS - int(lead * DAY_MS), 1, int(rng.integers(2, 6)))
        world.fraud_sellers.append(seller)
        active = int(rng.integers(cfg.new_seller_active_days[0], cfg.new_seller_active_days[1] + 1))
        for d in range(day, min(day + active, cfg.n_days)):
            m = int(rng.poisson(cfg.new_seller_tx_per_day))
            users = rng.integers(0, world.n_customers, m)
            ts = d * DAY_MS + time_of_day(rng, m, cfg)
            amount = rng.uniform(*cfg.new_seller_amount_range, m)
            parts.append(make_columns(ts, users, np.full(m, seller), amount, scenario=5))
    return concat_columns(parts)


def odd_items_day(cfg, world: World, rng, day: int) -> dict[str, np.ndarray]:
    """Scenario 6: usual amounts but n_items far above the seller's typical count."""
    active = np.flatnonzero(world.n_nbrs > 0)
    m = int(rng.poisson(cfg.odd_items_per_day)) if len(active) else 0
    users = active[rng.integers(0, max(len(active), 1), m)]
    sellers = nearby_terminals(rng, world, users)
    typical = np.asarray(world.seller_typical, np.int64)[sellers]
    factor = rng.integers(cfg.odd_items_factor[0], cfg.odd_items_factor[1] + 1, m)
    amount = np.maximum(customer_amounts(rng, world, users), 0.01)
    ts = day * DAY_MS + time_of_day(rng, m, cfg)
    return make_columns(ts, users, sellers, amount, n_items=typical * factor, scenario=6)


def new_user_day(cfg, world: World, rng, day: int) -> dict[str, np.ndarray]:
    """Scenario 7: accounts registered minutes before their first purchases."""
    parts = []
    for _ in range(rng.poisson(cfg.new_users_per_day)):
        reg = day * DAY_MS + int(rng.uniform(0, DAY_MS - 4 * HOUR_MS))
        user = world.add_user(reg)
        card = world.add_card(user)
        size = int(rng.integers(cfg.new_user_tx[0], cfg.new_user_tx[1] + 1))
        first = reg + int(rng.uniform(1, 15) * MINUTE_MS)
        gaps = np.floor(rng.exponential(8 * MINUTE_MS, size - 1)) + 1000
        ts = first + np.concatenate([[0], np.cumsum(gaps)]).astype(np.int64)
        sellers = rng.integers(0, world.n_terminals, size)
        amount = rng.uniform(*cfg.new_user_amount_range, size)
        parts.append(make_columns(ts, np.full(size, user), sellers, amount, card=card, scenario=7))
    return concat_columns(parts)


def drift_sellers(cfg, world: World, rng) -> np.ndarray:
    """The colluding sellers of the fraud ring that starts on ``drift_day``."""
    return rng.choice(world.n_terminals, min(cfg.drift_sellers, world.n_terminals), replace=False)


def drift_day(cfg, world: World, rng, day: int, sellers: np.ndarray) -> dict[str, np.ndarray]:
    """Scenario 9, a fraud ring from ``drift_day`` on: a new pattern the model has never seen.

    ``drift_sellers`` colluding sellers (established ones, chosen at random)
    each charge about ``drift_tx_per_seller_per_day`` (Poisson) purchases a
    day to card numbers stolen in a breach: the cards of random customers,
    wherever they live. The charges are scripted, so they come at any hour
    (uniform time of day, nights included); each buys goods in bulk for
    resale, ``drift_extra_items`` more items than the seller usually sells,
    for an amount the card holder might well spend (their mean amount times
    U(0.8, 1.5), far below the 220 of scenario 1). Nothing in the history of
    the model looks like it: no seller risk yet (those windows lag a week),
    usual amounts, usual cards. A share ``drift_report_share`` of the card
    holders notice the charge and report it within hours (see
    :func:`label_columns`); the others are found by chargeback as any fraud.
    """
    if day < cfg.drift_day:
        return empty_columns()
    counts = rng.poisson(cfg.drift_tx_per_seller_per_day, len(sellers))
    seller = np.repeat(sellers, counts)
    users = rng.integers(0, world.n_customers, len(seller))
    typical = np.asarray(world.seller_typical, np.int64)[seller]
    n_items = typical + rng.integers(cfg.drift_extra_items[0], cfg.drift_extra_items[1] + 1, len(seller))
    amount = np.maximum(np.round(world.mean_amount[users] * rng.uniform(0.8, 1.5, len(seller)), 2), 0.01)
    ts = day * DAY_MS + rng.integers(1, DAY_MS, len(seller))
    return make_columns(ts, users, seller, amount, n_items=n_items, scenario=9)


def finish_columns(tx: dict[str, np.ndarray], world: World, rngs) -> None:
    """Draw the cards, item counts and item indices still open, in place."""
    n = len(tx["ts"])
    open_card = tx["card"] < 0
    r = rngs["cards"].random(n)
    users = tx["user"]
    first = world.user_first_card[np.minimum(users, world.n_customers - 1)]
    count = world.user_n_cards[np.minimum(users, world.n_customers - 1)]
    tx["card"][open_card] = (first + (r * count).astype(np.int64))[open_card]

    ri = rngs["items"]
    typical = np.asarray(world.seller_typical, np.int64)[tx["seller"]]
    v, w = ri.random((n, 2)).T
    drawn = np.where(v < 0.1, np.maximum(typical - 1, 1), np.where(v > 0.85, typical + 1, typical))
    tx["n_items"] = np.where(tx["n_items"] > 0, tx["n_items"], drawn)
    catalogue = np.asarray(world.seller_catalogue, np.int64)[tx["seller"]]
    tx["item"] = np.minimum((catalogue * w ** 2).astype(np.int64), catalogue - 1)


SOURCES = ("chargeback", "review", "card_report")


def _lognormal_ms(rng, median_ms: float, sigma: float, n: int) -> np.ndarray:
    return rng.lognormal(np.log(median_ms), sigma, n)


def label_columns(cfg: Any, tx: dict[str, np.ndarray], rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which transactions get a label, the label delay (ms) and its source index.

    Returns ``(labelled, delay_ms, source)`` where ``source`` indexes
    :data:`SOURCES`. Frauds are always labelled; legitimate transactions
    with probability ``legit_label_share``.
    """
    n = len(tx["ts"])
    fraud = tx["scenario"] > 0
    labelled = fraud | (rng.random(n) < cfg.legit_label_share)
    source = np.where(fraud, 0, 1).astype(np.int8)
    if cfg.label_delay_mode == "fixed":
        delay = np.full(n, float(round(cfg.label_delay_days * DAY_MS)))
    else:
        review = fraud & (rng.random(n) < cfg.fraud_review_share)
        chargeback = _lognormal_ms(rng, cfg.fraud_delay_median_hours * HOUR_MS, cfg.fraud_delay_sigma, n)
        reviewed = _lognormal_ms(rng, cfg.review_delay_median_hours * HOUR_MS, 0.8, n)
        legit = rng.uniform(cfg.legit_delay_days[0], cfg.legit_delay_days[1], n) * DAY_MS
        delay = np.where(fraud, np.where(review, reviewed, chargeback), legit)
        delay = np.clip(delay, HOUR_MS, cfg.label_horizon_days * DAY_MS)
        source[review] = 1
    burst = tx["burst"]
    n_bursts = int(burst.max()) + 1 if n else 0
    if n_bursts > 0:
        reported = rng.random(n_bursts) < cfg.card_report_share
        report_delay = np.clip(_lognormal_ms(rng, 2 * HOUR_MS, 0.7, n_bursts), 10 * MINUTE_MS, DAY_MS)
        in_burst = burst >= 0
        last = np.zeros(n_bursts, np.int64)
        np.maximum.at(last, burst[in_burst], tx["ts"][in_burst])
        hit = in_burst & reported[np.maximum(burst, 0)]
        delay[hit] = (last + report_delay)[burst[hit]] - tx["ts"][hit]
        source[hit] = 2
    if getattr(cfg, "drift", False):
        # Scenario 9: card holders who notice a charge of the ring report it within hours.
        ring = np.flatnonzero(tx["scenario"] == 9)
        reported = ring[rng.random(len(ring)) < cfg.drift_report_share]
        delay[reported] = np.clip(_lognormal_ms(rng, cfg.drift_report_median_hours * HOUR_MS, 0.7,
                                                len(reported)), 10 * MINUTE_MS, DAY_MS)
        source[reported] = 2
    return labelled, np.round(delay).astype(np.int64), source
