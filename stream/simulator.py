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

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np

from .event_files import read_events, write_events
from .simulator_config import LABEL_FIELDS, PRESETS, PURCHASE_FIELDS, SimulationConfig, preset
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
