"""The quality bench's ceiling of what the features can see (bench/quality.py)."""

from __future__ import annotations

import importlib.util
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from features.state import DAY


@pytest.fixture(scope="module")
def quality():
    path = Path(__file__).resolve().parents[2] / "bench" / "quality.py"
    spec = importlib.util.spec_from_file_location("bench_quality", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _at(day: float) -> str:
    """Day 1 is 2018-08-01 at midnight; fractions are hours."""
    when = datetime(2018, 7, 31, tzinfo=timezone.utc) + timedelta(days=day)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def _events(rows):
    """(tx, seller, purchase day, scenario, label day) -> purchases and labels."""
    purchases = [{"transaction_id": tx, "seller_id": seller, "event_time": _at(day)}
                 for tx, seller, day, _, _ in rows]
    labels = [{"transaction_id": tx, "is_fraud": scenario > 0, "scenario": scenario,
               "label_time": _at(label)} for tx, _, _, scenario, label in rows]
    return purchases, labels


def test_a_terminal_is_seen_once_one_of_its_frauds_is_labelled(quality):
    purchases, labels = _events([
        ("t1", "s", 1, 2, 8),      # the terminal's first fraud: nothing labelled yet
        ("t2", "s", 7.5, 2, 14.5),  # before t1's label (day 8)
        ("t3", "s", 8.5, 2, 15.5),  # after it
        ("c1", "s", 2, 3, 9),      # a card's fraud: always seen (its card's history)
        ("a1", "x", 3, 1, 10),     # an amount over the threshold: always seen
        ("ok", "s", 9, 0, 16),     # legitimate: not a fraud at all
    ])
    assert quality.visible_frauds(purchases, labels) == {"t3", "c1", "a1"}


def test_another_kind_of_fraud_at_the_seller_does_not_reveal_the_terminal(quality):
    purchases, labels = _events([("c1", "s", 1, 3, 2), ("t1", "s", 5, 2, 12)])
    assert quality.visible_frauds(purchases, labels) == {"c1"}


def test_a_label_older_than_the_seller_risk_reach_is_forgotten(quality):
    assert (quality.RISK_DAYS + quality.GAP_DAYS) * DAY == 37 * DAY
    purchases, labels = _events([
        ("t1", "s", 1, 2, 2),
        ("t2", "s", 37.5, 2, 44.5),  # t1 bought 36.5 days before: within reach
        ("t3", "s", 38.5, 2, 45.5),  # 37.5 days after t1; t2's label not in yet
    ])
    assert quality.visible_frauds(purchases, labels) == {"t2"}


def test_the_ceiling_scores_the_visible_frauds_above_everything_else(quality):
    t0 = quality._ts(quality.TEST_START)
    scored, truth = {}, {}
    for i in range(1000):  # one test day, one purchase per card
        scored[f"p{i}"] = (t0 + 3600, f"card{i}", {})
        truth[f"p{i}"] = i % 20 == 0  # 50 frauds
    visible = {f"p{i}" for i in range(0, 400, 20)}  # 20 of them seen, 30 hidden
    labels = [{"transaction_id": tx, "is_fraud": fraud, "label_time": "2018-09-01T00:00:00Z"}
              for tx, fraud in truth.items()]
    rows = quality.evaluated_rows(scored, labels)
    auc, ap, cp = quality.evaluate(rows, truth, "visible", visible, seed=1)
    # the visible frauds first, the hidden ones at random among the other 980 purchases
    assert auc == pytest.approx((20 * 1.0 + 30 * 0.5) / 50, abs=0.05)
    assert cp == pytest.approx((20 + 80 * 30 / 980) / 100, abs=0.04)
    assert quality.evaluate(rows, truth, "oracle") == (1.0, 1.0, 0.5)


def test_fraud_ranks_split_the_auc_between_visible_and_hidden_frauds(quality):
    t0 = quality._ts(quality.TEST_START)
    legit = {f"l{i}": 0.1 * i for i in range(10)}  # scores 0.0 .. 0.9
    frauds = {"f_seen": 0.95, "f_hidden": 0.45}  # above all ten; above five of them
    scored = {tx: (t0 + 3600, tx, {"blend": v}) for tx, v in {**legit, **frauds}.items()}
    truth = {tx: tx.startswith("f") for tx in scored}
    labels = [{"transaction_id": tx, "is_fraud": f, "label_time": "2018-09-01T00:00:00Z"}
              for tx, f in truth.items()]
    rows = quality.evaluated_rows(scored, labels)
    seen, hidden = quality.fraud_ranks(rows, truth, "blend", {"f_seen"})
    assert (seen, hidden) == (1.0, 0.5)
    auc = quality.evaluate(rows, truth, "blend")[0]
    assert auc == pytest.approx((seen + hidden) / 2)


def test_a_fraud_of_an_earlier_compromise_does_not_reveal_the_next(quality):
    purchases, labels = _events([
        ("t1", "s", 1, 2, 8),       # the first compromise, days 1-5
        ("t2", "s", 20, 2, 27),     # compromised again from day 19: t1's label is old news
        ("t3", "s", 27.5, 2, 34.5),  # after t2's label: seen
    ])
    runs = {"s": [(quality._ts("2018-08-01"), quality._ts("2018-08-06")),
                  (quality._ts("2018-08-19"), quality._ts("2018-09-16"))]}
    assert quality.visible_frauds(purchases, labels) == {"t2", "t3"}  # without the runs
    assert quality.visible_frauds(purchases, labels, runs) == {"t3"}


def test_compromise_runs_join_a_terminal_compromised_again_before_its_last_ended(quality):
    class Sim:
        class config:
            start_date, terminal_compromise_days = "2018-04-01", 28
        ground_truth = {"compromised_terminals": [
            {"day": 40, "seller_id": "s"}, {"day": 0, "seller_id": "s"},
            {"day": 10, "seller_id": "s"}, {"day": 3, "seller_id": "x"}]}

    t0 = quality._ts("2018-04-01")
    assert quality.compromise_runs(Sim) == {
        "s": [(t0, t0 + 38 * DAY), (t0 + 40 * DAY, t0 + 68 * DAY)],
        "x": [(t0 + 3 * DAY, t0 + 31 * DAY)]}
