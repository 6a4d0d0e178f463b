"""Live quality metrics against brute-force definitions (and scikit-learn when present)."""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
import pytest

from models.quality import (DAY, LiveQuality, average_precision, card_id, card_precision_at_k,
                            roc_auc)


def brute_auc(y, s):
    pos = [b for a, b in zip(y, s) if a]
    neg = [b for a, b in zip(y, s) if not a]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def brute_ap(y, s):
    n_pos, total, prev_recall = sum(y), 0.0, 0.0
    for t in sorted(set(s), reverse=True):
        chosen = [a for a, b in zip(y, s) if b >= t]
        recall = sum(chosen) / n_pos
        total += (recall - prev_recall) * sum(chosen) / len(chosen)
        prev_recall = recall
    return total


def brute_cpk(days, cards, y, s, k, exclude_known=True):
    per_day = defaultdict(dict)  # day -> card -> [max score, any fraud]
    for d, c, a, b in zip(days, cards, y, s):
        best = per_day[d].setdefault(c, [-math.inf, False])
        best[0] = max(best[0], b)
        best[1] = best[1] or bool(a)
    known, precisions = set(), []
    for d in sorted(per_day):
        rows = [(c, v) for c, v in per_day[d].items() if not (exclude_known and c in known)]
        rows.sort(key=lambda r: (-r[1][0], r[0]))
        found = [c for c, v in rows[:k] if v[1]]
        precisions.append(len(found) / k)
        if exclude_known:
            known.update(found)
    return sum(precisions) / len(precisions)


def sample(rng, n, fraud_rate=0.1, ties=False):
    y = rng.random(n) < fraud_rate
    y[0], y[1] = True, False  # both classes, always
    s = rng.beta(2, 5, n) + 0.3 * y
    if ties:
        s = np.round(s, 1)  # many equal scores, across classes
    return y, s


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ties", [False, True])
def test_auc_and_ap_match_brute_force(seed, ties):
    rng = np.random.default_rng(seed)
    y, s = sample(rng, 300, ties=ties)
    assert roc_auc(y, s) == pytest.approx(brute_auc(y.tolist(), s.tolist()), abs=1e-12)
    assert average_precision(y, s) == pytest.approx(brute_ap(y.tolist(), s.tolist()), abs=1e-12)


def test_auc_and_ap_hand_computed():
    # Pairs (fraud, legit): (0.8 > 0.1), (0.8 > 0.4), (0.35 > 0.1), (0.35 < 0.4): 3 of 4.
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == 0.75
    # Ranking 0.8 F, 0.4 L, 0.35 F, 0.1 L: precision 1 at recall 1/2, 2/3 at recall 1.
    assert average_precision([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(5 / 6)
    # A perfect ranking and a reversed one.
    assert roc_auc([1, 1, 0], [0.9, 0.8, 0.1]) == 1.0
    assert roc_auc([1, 1, 0], [0.1, 0.2, 0.9]) == 0.0
    assert average_precision([1, 1, 0], [0.9, 0.8, 0.1]) == 1.0


def test_undefined_cases_are_nan():
    assert math.isnan(roc_auc([1, 1], [0.2, 0.3]))
    assert math.isnan(roc_auc([], []))
    assert math.isnan(average_precision([0, 0], [0.2, 0.3]))
    assert math.isnan(card_precision_at_k([], [], [], [], k=5))


@pytest.mark.parametrize("seed", range(3))
def test_agree_with_scikit_learn(seed):
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(100 + seed)
    for ties in (False, True):
        y, s = sample(rng, 2000, fraud_rate=0.02, ties=ties)
        assert roc_auc(y, s) == pytest.approx(metrics.roc_auc_score(y, s), abs=1e-12)
        assert average_precision(y, s) == pytest.approx(
            metrics.average_precision_score(y, s), abs=1e-12)


def card_day_sample(rng, n, n_days=5, n_cards=60, ties=False):
    days = rng.integers(0, n_days, n)
    cards = np.array([f"c{i:03d}" for i in rng.integers(0, n_cards, n)])
    y = rng.random(n) < 0.05
    s = rng.random(n) + 0.4 * y
    if ties:
        s = np.round(s, 1)
    return days, cards, y, s


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("exclude_known", [True, False])
@pytest.mark.parametrize("k", [1, 5, 20, 100])
def test_card_precision_matches_brute_force(seed, exclude_known, k):
    rng = np.random.default_rng(seed)
    days, cards, y, s = card_day_sample(rng, 600, ties=seed % 2 == 1)
    got = card_precision_at_k(days, cards, y, s, k=k, exclude_known=exclude_known)
    want = brute_cpk(days.tolist(), cards.tolist(), y.tolist(), s.tolist(), k, exclude_known)
    assert got == pytest.approx(want, abs=1e-12)


def test_card_precision_hand_computed():
    # Day 0: card x has a fraud scored low but its legitimate 0.95 ranks it first.
    # Day 1: x (already found) is left out, so y and z are the top 2.
    days = [0, 0, 0, 0, 1, 1, 1, 1]
    cards = ["x", "x", "y", "z", "x", "y", "z", "z"]
    y = [False, True, False, False, True, True, False, False]
    s = [0.95, 0.05, 0.5, 0.4, 0.99, 0.6, 0.7, 0.1]
    assert card_precision_at_k(days, cards, y, s, k=2) == pytest.approx((1 / 2 + 1 / 2) / 2)
    # Without the exclusion day 1's top 2 are x and z: one compromised.
    assert card_precision_at_k(days, cards, y, s, k=2, exclude_known=False) == 0.5
    # k larger than the cards of a day still divides by k.
    assert card_precision_at_k([0, 0], ["a", "b"], [True, False], [0.9, 0.1], k=4) == 0.25


def test_card_precision_does_not_depend_on_input_order():
    rng = np.random.default_rng(9)
    days, cards, y, s = card_day_sample(rng, 500, ties=True)
    perm = rng.permutation(len(days))
    assert card_precision_at_k(days, cards, y, s, k=10) == card_precision_at_k(
        days[perm], cards[perm], y[perm], s[perm], k=10)


def test_live_quality_reports_the_last_window_per_model():
    rng = np.random.default_rng(3)
    n, window, t0 = 3000, 1000, 1_704_067_200.0
    y = rng.random(n) < 0.05
    s_dyn = rng.random(n) + 0.5 * y
    s_sta = rng.random(n) + 0.2 * y
    cards = [f"card-{i}" for i in rng.integers(0, 400, n)]
    ts = t0 + np.sort(rng.uniform(0, 6 * DAY, n))
    q = LiveQuality(window=window, k=10, models=("dynamic", "static", "unused"))
    for i in range(n):
        q.update("dynamic", s_dyn[i], bool(y[i]), cards[i], ts[i])
        q.update("static", s_sta[i], bool(y[i]), cards[i], ts[i])
    q.update("late", 0.5, True, "card-1", t0)  # a model first seen with its labels
    r = q.report()
    assert set(r) == {"dynamic", "static", "unused", "late"}
    last = slice(n - window, n)
    days = np.floor(ts[last] / DAY).astype(int)
    for model, s in (("dynamic", s_dyn), ("static", s_sta)):
        assert r[model]["n"] == window
        assert r[model]["roc_auc"] == pytest.approx(roc_auc(y[last], s[last]), abs=1e-12)
        assert r[model]["average_precision"] == pytest.approx(
            average_precision(y[last], s[last]), abs=1e-12)
        assert r[model]["card_precision_at_k"] == pytest.approx(
            brute_cpk(days.tolist(), cards[last], y[last].tolist(), s[last].tolist(), 10),
            abs=1e-12)
    assert r["dynamic"]["roc_auc"] > r["static"]["roc_auc"]
    assert r["unused"]["n"] == 0 and math.isnan(r["unused"]["average_precision"])
    assert r["late"]["n"] == 1 and math.isnan(r["late"]["roc_auc"])


def test_live_quality_days_are_utc_days_of_the_event_time():
    q = LiveQuality(window=10, k=1, exclude_known=False)
    midnight = 1_704_153_600.0  # 2024-01-02T00:00:00Z
    # Same card either side of midnight: two days, each with its own top card.
    q.update("dynamic", 0.9, True, "a", midnight - 1)
    q.update("dynamic", 0.8, False, "b", midnight - 2)
    q.update("dynamic", 0.2, False, "a", midnight + 1)
    q.update("dynamic", 0.7, False, "b", midnight + 2)
    assert q.report()["dynamic"]["card_precision_at_k"] == 0.5  # day 1: a; day 2: b


def test_live_quality_rejects_bad_sizes():
    with pytest.raises(ValueError):
        LiveQuality(window=0)
    with pytest.raises(ValueError):
        LiveQuality(k=0)


@pytest.mark.parametrize("window", [7, 700, 3000])
def test_live_quality_rings_hold_exactly_the_last_labels_whatever_the_report_times(window):
    """Updates gathered and written in one step: the rings are those of one write per label
    (more updates between two reports than the ring holds included)."""
    rng = np.random.default_rng(window)
    q = LiveQuality(window=window, k=5)
    ring = {"score": np.zeros(window), "fraud": np.zeros(window, bool),
            "card": np.zeros(window, np.int64), "day": np.zeros(window, np.int64)}
    pos = n = 0
    for i in range(6000):
        score, fraud, card, ts = float(rng.random()), bool(rng.random() < 0.1), \
            f"card-{rng.integers(50)}", 1_704_067_200.0 + 500.0 * i
        q.update("dynamic", score, fraud, card, ts)
        ring["score"][pos], ring["fraud"][pos] = score, fraud
        ring["card"][pos], ring["day"][pos] = card_id(card), math.floor(ts / DAY)
        pos, n = (pos + 1) % window, min(window, n + 1)
        if rng.random() < 0.002 or i == 5999:
            r = q.report()["dynamic"]
            w = q._windows["dynamic"]
            assert (w.pos, w.n, r["n"]) == (pos, n, n)
            for name, values in ring.items():
                assert np.array_equal(getattr(w, name), values), name


_TIED_CARDS = """
from models.quality import LiveQuality
q = LiveQuality(window=100, k=3, exclude_known=False)
for i in range(40):  # every score tied: the top 3 cards are decided by the tie-break alone
    q.update("dynamic", 0.5, i % 4 == 0, f"card-{i}", 1_704_067_200.0)
print(q.report()["dynamic"]["card_precision_at_k"])
"""


def test_live_card_precision_is_the_same_in_every_process():
    # Python salts str hashes per process; the tie-break between cards must not depend on it.
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[2])
    figures = set()
    for seed in ("1", "2", "3", "4"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": root}
        out = subprocess.run([sys.executable, "-c", _TIED_CARDS], env=env, check=True,
                             capture_output=True, text=True)
        figures.add(out.stdout.strip())
    assert len(figures) == 1, figures


def test_a_quality_snapshot_is_a_copy_that_later_labels_leave_alone():
    q = LiveQuality(window=4, k=1, exclude_known=False)
    t0 = 1_704_067_200.0
    for i, (s, y) in enumerate([(0.9, True), (0.1, False), (0.8, False)]):
        q.update("dynamic", s, y, f"card-{i}", t0 + i)
    snap = q.snapshot()
    before = snap.report()
    for i in range(4):  # the ring turns over entirely
        q.update("dynamic", 0.5, i % 2 == 0, f"card-{9 + i}", t0 + 10 + i)
    assert snap.report() == before == {"dynamic": {
        "roc_auc": 1.0, "average_precision": 1.0, "card_precision_at_k": 1.0, "n": 3}}
    assert q.report()["dynamic"]["roc_auc"] == 0.5
