"""Simulator configuration: every parameter of a simulation, and the named presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

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
    drift_sellers, drift_tx_per_seller_per_day, drift_extra_items : int, float, tuple
        Scenario 9, a fraud ring: colluding sellers, each charging stolen
        cards about that many times a day (at any hour), each purchase with
        the seller's typical item count plus U{extra_items} at an amount
        usual for the card holder.
    drift_report_share, drift_report_median_hours : float
        Scenario 9: share of the ring's charges that card holders report
        (lognormal delay with that median, sigma 0.7, 10 minutes to a day).
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
    drift_tx_per_seller_per_day: float = 8.0
    drift_extra_items: tuple[int, int] = (4, 9)
    drift_report_share: float = 0.7
    drift_report_median_hours: float = 1.0

    def __post_init__(self) -> None:
        if self.n_customers < 1 or self.n_terminals < 1 or self.n_days < 1:
            raise ValueError("n_customers, n_terminals and n_days must be >= 1")
        if self.label_delay_mode not in ("fixed", "realistic"):
            raise ValueError(f"label_delay_mode must be 'fixed' or 'realistic', not {self.label_delay_mode!r}")
        for name in ("multi_card_share", "new_user_share", "new_seller_share", "legit_label_share",
                     "fraud_review_share", "card_report_share", "customer_fraud_share",
                     "repeat_fraud_user_share", "repeat_fraud_tx_share", "drift_report_share"):
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
