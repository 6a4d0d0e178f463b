"""Deterministic transaction simulator for fraudstream.

Re-implements the transaction generator of the *Reproducible Machine Learning
for Credit Card Fraud Detection* handbook (Le Borgne et al.): customers and
terminals on a 100 x 100 grid, Poisson daily activity, normal amounts and
times of day, and the three handbook fraud scenarios (amount above 220,
compromised terminals, compromised customers). Its rows are mapped to this
system's purchase and label events (customers -> users with cards,
terminals -> sellers with item catalogues) and can be enriched with
additional fraud scenarios (stolen-card bursts, new fraudulent sellers, odd
item counts, brand-new fraudulent users, repeat fraudsters, late drift).

The same configuration and seed always give identical events.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .simulator_scenarios import (
    SCENARIO_NAMES,
    SOURCES,
    apply_handbook_frauds,
    apply_repeat_fraud,
    base_day,
    build_world,
    concat_columns,
    drift_day,
    drift_sellers,
    finish_columns,
    label_columns,
    new_seller_day,
    new_user_day,
    odd_items_day,
    random_streams,
    stolen_card_day,
)

__all__ = [
    "LABEL_FIELDS",
    "PRESETS",
    "PURCHASE_FIELDS",
    "SCENARIO_NAMES",
    "Simulation",
    "SimulationConfig",
    "interleave",
    "preset",
    "read_events",
    "simulate",
    "write_events",
]

PURCHASE_FIELDS = (
    "transaction_id", "event_time", "user_id", "seller_id", "item_id", "card_hash", "price",
    "n_items", "user_registered_at", "seller_registered_at", "currency",
)
LABEL_FIELDS = ("transaction_id", "is_fraud", "label_time", "source", "scenario")


@dataclass(frozen=True)
class SimulationConfig:
    """All parameters of a simulation run.

    Defaults are the handbook population with this project's realistic
    labelling; use :func:`preset` for the named configurations.

    Attributes
    ----------
    name : str
        Preset name, for provenance only.
    n_customers, n_terminals, n_days : int
        Population sizes (customers become users, terminals become sellers)
        and number of simulated days.
    start_date : str
        First day, ISO date, interpreted as midnight UTC.
    grid_size, radius : float
        Side of the square grid and the radius within which a customer buys.
    mean_amount_range, std_amount_ratio, tx_rate_range : tuple, float, tuple
        Customer mean amount ~ U(range), std = mean * ratio, daily rate ~ U(range).
    time_of_day_mean, time_of_day_std : float
        Normal distribution of the time of day, in seconds.
    amount_threshold : float or None
        Scenario 1: every amount above it is fraud (None disables).
    compromised_terminals_per_day, terminal_compromise_days : int
        Scenario 2: terminals compromised each day and for how many days.
    compromised_customers_per_day, customer_compromise_days : int
        Scenario 3: customers compromised each day and for how many days.
    customer_fraud_share, customer_fraud_amount_factor : float
        Scenario 3: share of the window's transactions made fraudulent and
        the factor applied to their amount.
    multi_card_share, max_cards_per_user : float, int
        Share of users holding 2..max cards (the others hold one).
    new_user_share, user_max_tenure_days : float
        Share of users registered in the 30 days before the start; the
        others registered 30 days to ``user_max_tenure_days`` before.
    new_seller_share, seller_max_tenure_days : float
        Same for sellers (old sellers: 60 days to the maximum).
    catalogue_size_range : tuple of int
        Number of item ids per seller.
    currency : str
        Currency code of every purchase.
    legit_label_share : float
        Probability that a legitimate transaction gets a label (frauds
        always do).
    label_delay_mode : {"fixed", "realistic"}
        ``"fixed"``: every label arrives ``label_delay_days`` after the
        purchase. ``"realistic"``: chargebacks after a lognormal delay
        (median ``fraud_delay_median_hours``, ``fraud_delay_sigma``), a
        ``fraud_review_share`` of frauds found by review sooner (median
        ``review_delay_median_hours``), legitimate outcomes after
        U(``legit_delay_days``) days; all within ``label_horizon_days``.
    card_report_share : float
        Share of stolen-card bursts whose holder reports the card within
        hours (labels with ``source="card_report"``).
    stolen_card, new_seller, odd_items, new_user, repeat_fraud, drift : bool
        Switches of the extra scenarios 4, 5, 6, 7, 8 and 9; their rates
        are given by the fields sharing the prefix.
    drift_day : int
        Day (0-based) on which the drift scenario starts.
    """

    name: str = "custom"
    n_customers: int = 5000
    n_terminals: int = 10000
    n_days: int = 183
    start_date: str = "2018-04-01"
    grid_size: float = 100.0
    radius: float = 5.0
    mean_amount_range: tuple[float, float] = (5.0, 100.0)
    std_amount_ratio: float = 0.5
    tx_rate_range: tuple[float, float] = (0.0, 4.0)
    time_of_day_mean: float = 43200.0
    time_of_day_std: float = 20000.0
    amount_threshold: float | None = 220.0
    compromised_terminals_per_day: int = 2
    terminal_compromise_days: int = 28
    compromised_customers_per_day: int = 3
    customer_compromise_days: int = 14
    customer_fraud_share: float = 1 / 3
    customer_fraud_amount_factor: float = 5.0
    multi_card_share: float = 0.1
    max_cards_per_user: int = 3
    new_user_share: float = 0.05
    user_max_tenure_days: float = 5 * 365.0
    new_seller_share: float = 0.05
    seller_max_tenure_days: float = 10 * 365.0
    catalogue_size_range: tuple[int, int] = (3, 20)
    currency: str = "EUR"
    legit_label_share: float = 1.0
    label_delay_mode: str = "realistic"
    label_delay_days: float = 7.0
    fraud_delay_median_hours: float = 72.0
    fraud_delay_sigma: float = 1.2
    fraud_review_share: float = 0.2
    review_delay_median_hours: float = 12.0
    legit_delay_days: tuple[float, float] = (7.0, 30.0)
    label_horizon_days: float = 30.0
    card_report_share: float = 0.5
    stolen_card: bool = False
    stolen_cards_per_day: float = 1.0
    stolen_burst_size: tuple[int, int] = (3, 8)
    stolen_burst_gap_seconds: float = 40.0
    stolen_amount_range: tuple[float, float] = (20.0, 200.0)
    new_seller: bool = False
    new_sellers_per_day: float = 0.3
    new_seller_lead_days: tuple[float, float] = (1.0, 5.0)
    new_seller_active_days: tuple[int, int] = (2, 6)
    new_seller_tx_per_day: float = 6.0
    new_seller_amount_range: tuple[float, float] = (20.0, 150.0)
    odd_items: bool = False
    odd_items_per_day: float = 2.0
    odd_items_factor: tuple[int, int] = (6, 15)
    new_user: bool = False
    new_users_per_day: float = 1.0
    new_user_tx: tuple[int, int] = (1, 4)
    new_user_amount_range: tuple[float, float] = (30.0, 200.0)
    repeat_fraud: bool = False
    repeat_fraud_user_share: float = 0.01
    repeat_fraud_tx_share: float = 0.5
    drift: bool = False
    drift_day: int = 122
    drift_sellers: int = 10
    drift_tx_per_seller_per_day: float = 4.0
    drift_extra_items: tuple[int, int] = (4, 9)

    def __post_init__(self) -> None:
        if self.n_customers < 1 or self.n_terminals < 1 or self.n_days < 1:
            raise ValueError("n_customers, n_terminals and n_days must be >= 1")
        if self.label_delay_mode not in ("fixed", "realistic"):
            raise ValueError(f"label_delay_mode must be 'fixed' or 'realistic', not {self.label_delay_mode!r}")
        for name in ("multi_card_share", "new_user_share", "new_seller_share", "legit_label_share",
                     "fraud_review_share", "card_report_share", "customer_fraud_share",
                     "repeat_fraud_user_share", "repeat_fraud_tx_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1]")
        if self.label_delay_days <= 0 or self.label_horizon_days <= 0:
            raise ValueError("label delays must be positive")
        np.datetime64(self.start_date, "ms")

    @property
    def scenario_ids(self) -> tuple[int, ...]:
        """Ids of the fraud scenarios this configuration can produce."""
        on = {
            1: self.amount_threshold is not None,
            2: self.compromised_terminals_per_day > 0,
            3: self.compromised_customers_per_day > 0 and self.customer_fraud_share > 0,
            4: self.stolen_card, 5: self.new_seller, 6: self.odd_items,
            7: self.new_user, 8: self.repeat_fraud, 9: self.drift,
        }
        return tuple(k for k, v in on.items() if v)


_HANDBOOK = dict(name="handbook", multi_card_share=0.0, label_delay_mode="fixed", label_delay_days=7.0,
                 legit_label_share=1.0)
_EXTRAS = dict(stolen_card=True, new_seller=True, odd_items=True, new_user=True, repeat_fraud=True)
PRESETS: dict[str, dict] = {
    "handbook": _HANDBOOK,
    "demo": dict(name="demo", n_customers=500, n_terminals=1000, n_days=10,
                 compromised_terminals_per_day=1, compromised_customers_per_day=1,
                 new_sellers_per_day=0.4, odd_items_per_day=3.0, repeat_fraud_user_share=0.02, **_EXTRAS),
    "drift": dict(name="drift", drift=True),
}
"""Named configurations: overrides of the :class:`SimulationConfig` defaults."""


def preset(name: str, **overrides) -> SimulationConfig:
    """Return a named configuration, optionally with some fields overridden.

    Parameters
    ----------
    name : {"handbook", "demo", "drift"}
        ``"handbook"``: the handbook's exact parameters (5,000 customers,
        10,000 terminals, 183 days from 2018-04-01, scenarios 1-3), one card
        per user, every transaction labelled exactly 7 days later.
        ``"demo"``: 500 users, 1,000 sellers, 10 days, all extra scenarios,
        realistic label delays. ``"drift"``: the handbook population with
        realistic labels plus the drift scenario from ``drift_day`` on.
    **overrides
        Any :class:`SimulationConfig` field.

    Returns
    -------
    SimulationConfig

    Raises
    ------
    ValueError
        If ``name`` is unknown.
    TypeError
        If an override is not a configuration field.

    Examples
    --------
    >>> cfg = preset("handbook", n_customers=50, n_terminals=100, n_days=3)
    >>> cfg.n_customers, cfg.label_delay_mode, cfg.label_delay_days, cfg.scenario_ids
    (50, 'fixed', 7.0, (1, 2, 3))
    >>> preset("demo").scenario_ids
    (1, 2, 3, 4, 5, 6, 7, 8)
    """
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; valid presets: {', '.join(PRESETS)}")
    return dataclasses.replace(SimulationConfig(), **{**PRESETS[name], **overrides})


@dataclass
class Simulation:
    """Events of a simulation run.

    Attributes
    ----------
    purchases : list of dict
        Purchase events sorted by ``event_time``.
    labels : list of dict
        Label events sorted by ``label_time``.
    config : SimulationConfig or None
        The configuration that produced the events, if known.
    seed : int or None
        The seed that produced the events, if known.
    ground_truth : dict
        Hidden state for benchmarks and tests: ``compromised_terminals``
        and ``compromised_customers`` (``{"day", "seller_id"/"user_id"}``
        dicts: compromised from that day on), ``repeat_fraud_users``
        (``{"day", "user_id"}``: first day of fraud), ``fraud_sellers``
        and ``drift_sellers`` (seller ids).
    """

    purchases: list[dict]
    labels: list[dict]
    config: SimulationConfig | None = field(default=None, repr=False)
    seed: int | None = None
    ground_truth: dict[str, list] = field(default_factory=dict, repr=False)

    def daily_summary(self) -> list[dict]:
        """Per-day counts.

        Returns
        -------
        list of dict
            One dict per day (UTC date of ``event_time``) with ``date``,
            ``n_transactions``, ``n_frauds``, ``n_compromised_cards``
            (distinct cards with at least one fraud that day) and
            ``frauds_by_scenario`` (scenario id -> frauds).
        """
        fraud_scenario = {lb["transaction_id"]: int(lb.get("scenario") or 1)
                          for lb in self.labels if lb["is_fraud"]}
        ids = set(self.config.scenario_ids) if self.config else set()
        ids.update(fraud_scenario.values())
        days: dict[str, list] = {}
        if self.config is not None:
            first = np.datetime64(self.config.start_date, "D")
            for d in range(self.config.n_days):
                days[str(first + d)] = [0, set(), {}]
        for p in self.purchases:
            row = days.setdefault(p["event_time"][:10], [0, set(), {}])
            row[0] += 1
            s = fraud_scenario.get(p["transaction_id"])
            if s:
                row[1].add(p["card_hash"])
                row[2][s] = row[2].get(s, 0) + 1
        return [
            {"date": date, "n_transactions": n, "n_frauds": sum(by.values()),
             "n_compromised_cards": len(cards),
             "frauds_by_scenario": {k: by.get(k, 0) for k in sorted(ids)}}
            for date, (n, cards, by) in sorted(days.items())
        ]

    def summary(self) -> dict:
        """Totals over the run.

        Returns
        -------
        dict
            ``n_days``, ``n_transactions``, ``n_frauds``, ``fraud_rate``,
            per-day means (``transactions_per_day``, ``frauds_per_day``,
            ``compromised_cards_per_day``), ``n_labels``, ``n_users``,
            ``n_sellers``, ``n_cards``, ``frauds_by_scenario`` and
            ``fraud_share_by_scenario`` (scenario id -> count / share of
            all frauds); names are in :data:`SCENARIO_NAMES`.
        """
        daily = self.daily_summary()
        n_days = max(len(daily), 1)
        n_tx = sum(d["n_transactions"] for d in daily)
        n_fraud = sum(d["n_frauds"] for d in daily)
        by: dict[int, int] = {}
        for d in daily:
            for k, v in d["frauds_by_scenario"].items():
                by[k] = by.get(k, 0) + v
        return {
            "n_days": len(daily),
            "n_transactions": n_tx,
            "n_frauds": n_fraud,
            "fraud_rate": n_fraud / n_tx if n_tx else 0.0,
            "transactions_per_day": n_tx / n_days,
            "frauds_per_day": n_fraud / n_days,
            "compromised_cards_per_day": sum(d["n_compromised_cards"] for d in daily) / n_days,
            "n_labels": len(self.labels),
            "n_users": len({p["user_id"] for p in self.purchases}),
            "n_sellers": len({p["seller_id"] for p in self.purchases}),
            "n_cards": len({p["card_hash"] for p in self.purchases}),
            "frauds_by_scenario": by,
            "fraud_share_by_scenario": {k: (v / n_fraud if n_fraud else 0.0) for k, v in by.items()},
        }


def _iso(start: np.datetime64, offsets_ms) -> list[str]:
    stamps = start + np.asarray(offsets_ms, np.int64).astype("timedelta64[ms]")
    return np.datetime_as_string(stamps, unit="ms", timezone="UTC").tolist()


def simulate(config: SimulationConfig, seed: int = 0,
             progress: Callable[[int, int], None] | None = None) -> Simulation:
    """Generate purchase and label events.

    Parameters
    ----------
    config : SimulationConfig
        Parameters, usually from :func:`preset`.
    seed : int, default 0
        Seed of every random draw; equal seeds give equal events.
    progress : callable, optional
        Called as ``progress(days_done, total_days)`` while generating; the
        final ``(total, total)`` call comes once the events are built.

    Returns
    -------
    Simulation
        Purchases sorted by ``event_time`` and labels sorted by
        ``label_time``. Purchase ``price`` is the transaction amount
        (total paid, rounded to cents, at least 0.01); a label's
        ``scenario`` is 0 for legitimate transactions, else the id of the
        fraud scenario (see :data:`SCENARIO_NAMES`).

    Examples
    --------
    >>> cfg = preset("handbook", n_customers=40, n_terminals=100, n_days=2)
    >>> sim = simulate(cfg, seed=1)
    >>> sim.purchases == simulate(cfg, seed=1).purchases
    True
    >>> p = sim.purchases[0]
    >>> p["transaction_id"], p["currency"], len(p["card_hash"])
    ('tx-000000000', 'EUR', 64)
    >>> len(sim.labels) == len(sim.purchases)
    True
    """
    n_days = config.n_days
    rngs = random_streams(seed)
    world = build_world(config, rngs)
    drift_set = drift_sellers(config, world, rngs["drift"]) if config.drift else None
    base, extra = [], []
    for day in range(n_days):
        base.append(base_day(config, world, rngs["transactions"], day))
        if config.stolen_card:
            extra.append(stolen_card_day(config, world, rngs["stolen_card"], day))
        if config.new_seller:
            extra.append(new_seller_day(config, world, rngs["new_seller"], day))
        if config.odd_items:
            extra.append(odd_items_day(config, world, rngs["odd_items"], day))
        if config.new_user:
            extra.append(new_user_day(config, world, rngs["new_user"], day))
        if drift_set is not None:
            extra.append(drift_day(config, world, rngs["drift"], day, drift_set))
        if progress is not None and day + 1 < n_days:
            progress(day + 1, n_days)

    tx = concat_columns(base)
    truth = apply_handbook_frauds(config, world, tx, rngs)
    repeaters = apply_repeat_fraud(config, world, tx, rngs["repeat_fraud"]) if config.repeat_fraud else []
    tx = concat_columns([tx, *extra])
    finish_columns(tx, world, rngs)
    order = np.argsort(tx["ts"], kind="stable")
    tx = {k: v[order] for k, v in tx.items()}
    labelled, delay, source = label_columns(config, tx, rngs["labels"])

    start = np.datetime64(config.start_date, "ms")
    user_ids = [f"u-{i}" for i in range(len(world.user_reg))]
    user_reg = _iso(start, world.user_reg)
    seller_ids = [f"s-{i}" for i in range(len(world.seller_reg))]
    seller_reg = _iso(start, world.seller_reg)
    cards = [hashlib.sha256(f"fraudstream-sim:{seed}:card:{k}".encode()).hexdigest()
             for k in range(len(world.card_owner))]
    item_base = np.concatenate([[0], np.cumsum(world.seller_catalogue)]).tolist()
    item_names = [f"i-{s}-{k}" for s, size in enumerate(world.seller_catalogue) for k in range(size)]
    n = len(tx["ts"])
    tx_ids = [f"tx-{i:09d}" for i in range(n)]
    users, sellers = tx["user"].tolist(), tx["seller"].tolist()
    purchases = [
        {"transaction_id": t, "event_time": e, "user_id": user_ids[u], "seller_id": seller_ids[s],
         "item_id": item_names[item_base[s] + it], "card_hash": cards[c], "price": pr, "n_items": ni,
         "user_registered_at": user_reg[u], "seller_registered_at": seller_reg[s], "currency": config.currency}
        for t, e, u, s, it, c, pr, ni in zip(
            tx_ids, _iso(start, tx["ts"]), users, sellers, tx["item"].tolist(), tx["card"].tolist(),
            np.maximum(tx["amount"], 0.01).tolist(), tx["n_items"].tolist())
    ]

    idx = np.flatnonzero(labelled)
    label_ms = tx["ts"][idx] + delay[idx]
    by_time = np.lexsort((idx, label_ms))
    idx, label_ms = idx[by_time], label_ms[by_time]
    scen = tx["scenario"][idx].tolist()
    labels = [
        {"transaction_id": tx_ids[i], "is_fraud": s > 0, "label_time": lt, "source": SOURCES[src], "scenario": s}
        for i, lt, src, s in zip(idx.tolist(), _iso(start, label_ms), source[idx].tolist(), scen)
    ]
    ground_truth = {
        "compromised_terminals": [{"day": d, "seller_id": seller_ids[t]} for d, t in truth["compromised_terminals"]],
        "compromised_customers": [{"day": d, "user_id": user_ids[c]} for d, c in truth["compromised_customers"]],
        "repeat_fraud_users": [{"day": d, "user_id": user_ids[c]} for d, c in repeaters],
        "fraud_sellers": [seller_ids[s] for s in world.fraud_sellers],
        "drift_sellers": [seller_ids[s] for s in (drift_set if drift_set is not None else [])],
    }
    if progress is not None:
        progress(n_days, n_days)
    return Simulation(purchases=purchases, labels=labels, config=config, seed=seed, ground_truth=ground_truth)


_SUFFIXES = (".jsonl", ".csv", ".parquet")
_INT_FIELDS = frozenset({"n_items", "scenario"})
_FLOAT_FIELDS = frozenset({"price"})
_BOOL_FIELDS = frozenset({"is_fraud"})


def _suffix(path: Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIXES:
        raise ValueError(f"unsupported event file suffix {suffix!r} for {path}; use one of {', '.join(_SUFFIXES)}")
    return suffix


def _field_names(events: list[dict]) -> list[str]:
    names: dict[str, None] = {}
    for ev in events:
        for k in ev:
            names.setdefault(k, None)
    return list(names)


def write_events(events: list[dict], path: Path) -> None:
    """Write events to a file whose format follows its suffix.

    Parameters
    ----------
    events : list of dict
        Purchase or label events (one kind per file).
    path : Path
        ``.jsonl`` (one JSON object a line), ``.csv`` (header = union of
        keys; booleans as ``true``/``false``) or ``.parquet``.

    Raises
    ------
    ValueError
        For any other suffix.
    """
    path = Path(path)
    suffix = _suffix(path)
    if suffix == ".jsonl":
        encode = json.JSONEncoder(separators=(",", ":")).encode
        with path.open("w", encoding="utf-8", newline="\n") as fh:
            for lo in range(0, len(events), 65536):
                fh.write("".join([encode(ev) + "\n" for ev in events[lo:lo + 65536]]))
    elif suffix == ".csv":
        names = _field_names(events)
        with path.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(names)
            for ev in events:
                writer.writerow(["" if (v := ev.get(k)) is None else ("true" if v else "false")
                                 if isinstance(v, bool) else v for k in names])
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        names = _field_names(events)
        table = pa.table({k: [ev.get(k) for ev in events] for k in names})
        pq.write_table(table, path)


def _from_csv(key: str, value: str):
    if value == "":
        return None
    if key in _INT_FIELDS:
        return int(value)
    if key in _FLOAT_FIELDS:
        return float(value)
    if key in _BOOL_FIELDS:
        return value.lower() == "true"
    return value


def read_events(path: Path) -> list[dict]:
    """Read events written by :func:`write_events`.

    Parameters
    ----------
    path : Path
        A ``.jsonl``, ``.csv`` or ``.parquet`` file.

    Returns
    -------
    list of dict
        The events; CSV values of ``price``, ``n_items``, ``scenario`` and
        ``is_fraud`` are converted back to float, int and bool.

    Raises
    ------
    ValueError
        For any other suffix.
    """
    path = Path(path)
    suffix = _suffix(path)
    if suffix == ".jsonl":
        decode = json.JSONDecoder().decode
        with path.open(encoding="utf-8") as fh:
            return [decode(line) for line in fh if line.strip()]
    if suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as fh:
            return [{k: _from_csv(k, v) for k, v in row.items()} for row in csv.DictReader(fh)]
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()


def interleave(sim: Simulation) -> Iterator[tuple[str, dict]]:
    """Merge purchases and labels in time order.

    Yields ``("purchase", event)`` at its ``event_time`` and
    ``("label", event)`` at its ``label_time``; on equal times the purchase
    comes first.

    Parameters
    ----------
    sim : Simulation

    Yields
    ------
    tuple of (str, dict)
    """
    purchases, labels = sim.purchases, sim.labels
    i = j = 0
    while i < len(purchases) or j < len(labels):
        if j >= len(labels) or (i < len(purchases) and purchases[i]["event_time"] <= labels[j]["label_time"]):
            yield "purchase", purchases[i]
            i += 1
        else:
            yield "label", labels[j]
            j += 1
