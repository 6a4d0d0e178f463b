"""Drift detectors on synthetic streams whose change point is known."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.drift import DistributionDrift, DriftSignal, ErrorDrift, MissedFraudDrift, log_loss

PRE = 20_000  # labels before the change


def labelled(rng, n, fraud_rate=0.01, missed_rate=0.0):
    """Scores of a decent model at ``fraud_rate`` fraud, plus ``missed_rate`` of
    frauds of a new pattern that it scores like legitimate transactions."""
    u = rng.random(n)
    y = u < fraud_rate + missed_rate
    known = u < fraud_rate
    s = rng.beta(1, 50, n)
    s[known] = rng.beta(4, 2, int(known.sum()))
    return list(zip(s.tolist(), y.tolist()))


def run(detector, stream):
    return [(i, sig) for i, (s, y, *delay) in enumerate(stream)
            if (sig := detector.update(s, y, *delay)) is not None]


def with_delays(rng, stream, quick_share=0.05):
    """Label delays: legitimate outcomes after days, frauds mostly after days, a
    ``quick_share`` of them within the hour."""
    return [(s, y, 3600.0 if y and rng.random() < quick_share else 10 * 86400.0)
            for s, y in stream]


def test_log_loss_is_clipped():
    assert log_loss(0.5, True) == pytest.approx(math.log(2))
    assert log_loss(1.0, False) == pytest.approx(-math.log(1e-3))
    assert log_loss(1.0, True) == pytest.approx(-math.log(1 - 1e-3))


def test_no_false_alarm_on_a_long_stationary_stream():
    d = ErrorDrift("dynamic")
    assert run(d, labelled(np.random.default_rng(0), 200_000)) == []
    assert (d.n_seen, d.n_warnings, d.n_drifts, d.in_warning) == (200_000, 0, 0, False)
    assert 1_500 < d.n_frauds < 2_500
    assert 0.0 < d.error < 0.1


@pytest.mark.parametrize("seed", range(4))
def test_a_new_fraud_pattern_is_confirmed_within_2000_labels(seed):
    rng = np.random.default_rng(seed)
    d = ErrorDrift("dynamic")
    assert run(d, labelled(rng, PRE)) == []
    after = labelled(rng, 3_000, missed_rate=0.01)
    kinds, warning_at, drift_at = [], None, None
    for i, (s, y) in enumerate(after):
        sig = d.update(s, y)
        if sig is None:
            continue
        kinds.append(sig.kind)
        if sig.kind == "warning":
            warning_at = i
            assert d.in_warning  # a background model would start learning here
        else:
            drift_at = i
            break
    assert drift_at is not None and drift_at < 2_000, kinds
    assert kinds == ["warning", "drift"] and warning_at < drift_at
    assert not d.in_warning and d.n_drifts == 1 and d.n_warnings == 1
    assert sig.detector == "error" and sig.signal == "dynamic" and sig.threshold == d.drift_delta
    assert sig.current_mean > sig.reference_mean and sig.n_seen == PRE + drift_at + 1


def test_an_improving_model_is_not_a_drift_and_a_later_rise_still_is():
    rng = np.random.default_rng(5)
    d = ErrorDrift("dynamic")
    worse = labelled(rng, 15_000, missed_rate=0.01)
    better = labelled(rng, 15_000)
    assert [s.kind for _, s in run(d, worse + better)] == []
    # The fall shrank the window instead of clearing it: the rise is measured against it.
    signals = run(d, labelled(rng, 3_000, missed_rate=0.01))
    assert [s.kind for _, s in signals] == ["warning", "drift"]
    assert signals[-1][0] < 2_000


def test_an_unconfirmed_warning_times_out():
    rng = np.random.default_rng(6)
    d = ErrorDrift("dynamic", drift_delta=1e-12, warning_timeout=2_000)
    run(d, labelled(rng, 10_000))
    signals = run(d, labelled(rng, 1_500, missed_rate=0.03))
    assert [s.kind for _, s in signals][:1] == ["warning"] and d.in_warning
    run(d, labelled(rng, 6_000))  # back to normal: no confirmation comes
    assert not d.in_warning and d.n_drifts == 0


def test_no_detection_before_min_labels():
    d = ErrorDrift("dynamic", min_labels=5_000)
    rng = np.random.default_rng(7)
    stream = labelled(rng, 2_000) + labelled(rng, 2_500, missed_rate=0.05)
    assert run(d, stream) == []


def test_bad_deltas_are_rejected():
    with pytest.raises(ValueError):
        ErrorDrift(drift_delta=0.5, warning_delta=0.1)


def test_drift_signal_reads_as_a_log_line():
    s = DriftSignal("error", "dynamic", "drift", 0.2, 0.05, 1000, 0.05, 0.2)
    assert str(s) == ("drift error/dynamic: statistic 0.2 vs threshold 0.05 after 1000 values "
                      "(mean 0.05 -> 0.2)")
    s = DriftSignal("error", "dynamic", "drift", 12.5, 10, 1000, 0.003, 0.011, "fraud")
    assert str(s).startswith("drift error/dynamic (fraud labels): statistic 12.5 vs threshold 10")
    assert "mean" not in str(DriftSignal("psi", "x", "warning", 0.1, 0.1, 5))


def young_model_stream(rng, n, fraud_share_from=0.2, fraud_share_to=0.01, caught=0.65):
    """Labels as they arrive at a young model with late labels: the share of frauds
    among labels falls (frauds are reported first, legitimate outcomes weeks later)
    and the calibration moves (every score falls as the model learns the prior);
    the ranking, and so the share of frauds it misses, does not change."""
    out = []
    for i in range(n):
        f = i / n
        share = fraud_share_from + (fraud_share_to - fraud_share_from) * f
        scale = 1.0 - 0.9 * f  # calibration: scores shrink tenfold over the stream
        y = rng.random() < share
        high = y and rng.random() < caught
        s = (0.5 + 0.5 * rng.random()) if high else rng.beta(1, 30)
        out.append((s * scale, y))
    return out


def missed_stream(rng, n, fraud_rate=0.01, caught=0.65, new_rate=0.0):
    """Stationary labels: ``fraud_rate`` frauds of which a share ``caught`` is scored
    high, plus ``new_rate`` frauds of a new pattern scored like legitimate labels."""
    u = rng.random(n)
    y = u < fraud_rate + new_rate
    caught_ = (u < fraud_rate) & (rng.random(n) < caught)
    s = rng.beta(1, 30, n)
    s[caught_] = rng.uniform(0.5, 1.0, int(caught_.sum()))
    return list(zip(s.tolist(), y.tolist()))


def test_missed_frauds_ignore_a_class_mix_and_calibration_change():
    """The first weeks of a stream with late labels are no drift."""
    d = MissedFraudDrift("dynamic", min_labels=10_000)
    rng = np.random.default_rng(10)
    signals = run(d, young_model_stream(rng, 150_000)) + run(d, missed_stream(rng, 300_000))
    assert [s.kind for _, s in signals if s.kind == "drift"] == [] and d.n_drifts == 0
    assert 0.002 < d.error < 0.005  # a third of 1% of the labels are missed frauds


def test_missed_frauds_at_most_one_false_alarm_in_a_million_stationary_labels():
    """A million labels come with a million purchases: at most 0.5 per million events."""
    d = MissedFraudDrift("dynamic")
    rng = np.random.default_rng(11)
    for _ in range(5):
        run(d, with_delays(rng, missed_stream(rng, 200_000)))
    assert d.n_seen == 1_000_000 and d.n_drifts <= 1


@pytest.mark.parametrize("seed", range(3))
def test_missed_frauds_a_pattern_reported_quickly_is_confirmed_by_the_quick_cusum(seed):
    """0.4% more frauds scored as legitimate, 70% of them reported within the hour;
    of the usual frauds 5% are."""
    rng = np.random.default_rng(40 + seed)
    d = MissedFraudDrift("dynamic")
    assert [s for _, s in run(d, with_delays(rng, missed_stream(rng, 60_000)))
            if s.kind == "drift"] == []
    usual = with_delays(rng, missed_stream(rng, 5_000))
    new = [(s, True, 3600.0 if rng.random() < 0.7 else 10 * 86400.0)
           for s in rng.beta(1, 30, 20).tolist()]  # 0.4% of 5,000 labels
    stream = usual + new
    order = rng.permutation(len(stream))
    signals = run(d, [stream[i] for i in order])
    drifts = [(i, s) for i, s in signals if s.kind == "drift"]
    assert drifts and drifts[0][0] < 4_000 and drifts[0][1].stratum == "fraud, quick"
    assert d.n_warnings <= 10  # warnings only fork a background model, dropped if never needed


@pytest.mark.parametrize("seed", range(4))
def test_missed_frauds_a_new_pattern_is_confirmed_within_4000_labels(seed):
    """0.8% more frauds, all scored like legitimate purchases (the reference: 0.35%)."""
    rng = np.random.default_rng(20 + seed)
    d = MissedFraudDrift("dynamic")
    assert run(d, missed_stream(rng, 60_000)) == []
    signals = run(d, missed_stream(rng, 10_000, new_rate=0.008))
    kinds = [sig.kind for _, sig in signals]
    assert kinds[:2] == ["warning", "drift"], kinds
    at, sig = signals[1]
    assert at < 4_000
    assert sig.detector == "error" and sig.signal == "dynamic" and sig.stratum == "fraud"
    assert sig.current_mean > sig.reference_mean and sig.statistic >= d.threshold
    assert d.n_drifts == 1 and not d.in_warning


def test_missed_frauds_an_improving_model_and_a_restart_after_a_drift():
    rng = np.random.default_rng(30)
    d = MissedFraudDrift("dynamic", min_labels=10_000)
    worse = missed_stream(rng, 60_000, caught=0.3)
    better = missed_stream(rng, 60_000, caught=0.8)
    assert [s.kind for _, s in run(d, worse + better) if s.kind == "drift"] == []
    signals = [(i, s) for i, s in run(d, missed_stream(rng, 20_000, caught=0.8, new_rate=0.01))
               if s.kind == "drift"]
    assert signals and signals[0][0] < 4_000
    # After the drift it restarts: nothing until a new reference and min_labels.
    assert all(i - signals[0][0] >= 10_000 for i, _ in signals[1:])


def with_pattern(rng, n, at, quick_share=0.008):
    """``n`` stationary labels (a ``quick_share`` of the usual frauds labelled within
    the hour, as in the replays) with frauds scored like legitimate ones and labelled
    within the hour inserted at the indices ``at``."""
    stream = with_delays(rng, missed_stream(rng, n), quick_share)
    for i in sorted(at, reverse=True):
        stream.insert(i, (float(rng.beta(1, 30)), True, 0.5 * 3600.0))
    return stream


def first_drift(detector, stream):
    return next(((i, s) for i, s in run(detector, stream) if s.kind == "drift"), (None, None))


@pytest.mark.parametrize("seed", range(3))
def test_missed_frauds_five_quick_reports_in_2000_labels_are_confirmed(seed):
    """A new pattern's first few card-holder reports: five missed frauds labelled
    within the hour among 1,600 labels. The quick CUSUM, tuned to a rise of one such
    fraud per 1,000 labels, confirms it by the fifth; an odds ratio of 5 over the
    frauds labelled within 6 hours (the earlier design) does not within 2,000."""
    events = [300, 600, 900, 1200, 1500]
    prefix_rng, rng = np.random.default_rng(50 + seed), np.random.default_rng(60 + seed)
    prefix = with_delays(prefix_rng, missed_stream(prefix_rng, 70_000), 0.008)
    stream = prefix + with_pattern(rng, 2_000, events)
    d = MissedFraudDrift("dynamic")
    at, sig = first_drift(d, stream)
    # (each insertion shifts the later events by one label)
    assert at is not None and 70_000 + events[1] <= at <= 70_000 + events[-1] + 4, at
    assert sig.stratum == "fraud, quick" and sig.statistic >= d.levels["fraud, quick"][1]
    old = MissedFraudDrift("dynamic", quick_delay=6 * 3600.0, quick_rise=None,
                           quick_odds_ratio=5.0, quick_threshold=8.0)
    at_old, _ = first_drift(old, stream)
    assert at_old is None


def test_missed_frauds_two_quick_reports_warn_but_do_not_confirm():
    """Two usual missed frauds reported within the hour, 500 labels apart: the rare
    coincidence that a drift level of 8 would take for a drift (the reason for 9)."""
    rng = np.random.default_rng(70)
    prefix = with_delays(rng, missed_stream(rng, 70_000), quick_share=0.0)
    d = MissedFraudDrift("dynamic")
    assert run(d, prefix) == []
    signals, highest = [], 0.0
    for s, y, delay in with_pattern(rng, 3_000, [1_000, 1_500], quick_share=0.0):
        if (sig := d.update(s, y, delay)) is not None:
            signals.append((sig.kind, sig.stratum))
        highest = max(highest, d.cusums["fraud, quick"].stat)
    assert signals == [("warning", "fraud, quick")]
    assert 8.0 < highest < 9.0  # each event weighs log(1 + 0.001 / p0), 4.6 nats at most


def test_missed_frauds_bad_parameters_are_rejected():
    with pytest.raises(ValueError):
        MissedFraudDrift(threshold=5, warning_threshold=6)
    with pytest.raises(ValueError):
        MissedFraudDrift(odds_ratio=1.0)
    with pytest.raises(ValueError):
        MissedFraudDrift(quick_rise=0.0)


def psi_by_hand(reference, current, bins=10):
    """The PSI from its definition: reference deciles, half-count smoothing."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    k = len(edges) + 1
    r = np.bincount(np.searchsorted(edges, reference, side="right"), minlength=k)
    c = np.bincount(np.searchsorted(edges, current, side="right"), minlength=k)
    r = (r + 0.5) / (len(reference) + 0.5 * k)
    c = (c + 0.5) / (len(current) + 0.5 * k)
    return float(np.sum((c - r) * np.log(c / r)))


def test_psi_matches_its_definition_over_the_sliding_window():
    rng = np.random.default_rng(1)
    values = np.r_[rng.normal(0, 1, 3_000), rng.normal(0.3, 1.3, 2_345)]
    d = DistributionDrift(reference_size=1_000, window_size=700, threshold=0.2, check_every=10**9)
    assert d.psi("x") is None
    for v in values:
        d.update({"x": float(v)})
    assert d.psi("x") == pytest.approx(psi_by_hand(values[:1_000], values[-700:]), rel=1e-12)
    assert d.signals == ["x"]


def test_a_shifted_feature_is_flagged_and_the_others_are_not():
    rng = np.random.default_rng(2)
    d = DistributionDrift(reference_size=5_000, window_size=2_000, threshold=0.2,
                          warning_threshold=0.1, check_every=500)
    raised = []
    for i in range(40_000):
        shifted = i >= 30_000
        raised += d.update({
            "amount": rng.lognormal(3.0 + (0.5 if shifted else 0.0), 1.0),
            "score:dynamic": rng.beta(1, 50),
            "is_night": float(rng.random() < 0.2),
            "n_items": float(rng.integers(1, 4)),
        })
    assert [(s.signal, s.kind) for s in raised] == [("amount", "warning"), ("amount", "drift")]
    drift = raised[-1]
    assert drift.detector == "psi" and drift.statistic >= 0.2 and drift.threshold == 0.2
    assert 30_000 < drift.n_seen <= 32_000  # within one window of the change
    assert drift.current_mean > drift.reference_mean
    for name in ("score:dynamic", "is_night", "n_items"):
        assert d.psi(name) < 0.02


def test_no_signal_on_a_long_unshifted_stream():
    rng = np.random.default_rng(3)
    d = DistributionDrift(reference_size=5_000, window_size=2_000, threshold=0.2, check_every=200)
    highest = 0.0
    for v in rng.normal(0, 1, 100_000).tolist():
        assert d.update({"x": v}) == []
        if d.n_updates % 200 == 0 and d.psi("x") is not None:
            highest = max(highest, d.psi("x"))
    assert highest < 0.05  # well under the 0.1 warning level


def test_a_binary_flag_whose_rate_changes():
    rng = np.random.default_rng(4)
    d = DistributionDrift(reference_size=2_000, window_size=1_000, threshold=0.2, check_every=100)
    kinds = []
    for i in range(6_000):
        kinds += [s.kind for s in d.update({"flag": float(rng.random() < (0.1 if i < 4_000
                                                                              else 0.5))})]
    assert kinds == ["warning", "drift"]


def test_one_signal_per_crossing_and_reset_takes_a_new_reference():
    rng = np.random.default_rng(5)
    d = DistributionDrift(reference_size=1_000, window_size=500, threshold=0.2,
                          warning_threshold=None, check_every=100)

    def feed(n, mean):
        return [s.kind for _ in range(n) for s in d.update({"x": rng.normal(mean, 1.0)})]

    assert feed(3_000, 0.0) == []
    assert feed(3_000, 2.0) == ["drift"]  # raised once, not at every check
    assert feed(3_000, 0.0) == []  # back well below the threshold: re-armed
    assert feed(3_000, 2.0) == ["drift"]
    d.reset("x")
    assert feed(3_000, 2.0) == []  # the shifted distribution is the new reference
    assert d.psi("x") < 0.1


def test_missing_values_are_skipped():
    d = DistributionDrift(reference_size=10, window_size=5, threshold=0.2, check_every=1)
    for i in range(20):
        d.update({"x": float(i % 4), "y": math.nan})
    assert d.psi("x") is not None and d.psi("y") is None


def test_bad_parameters_are_rejected():
    with pytest.raises(ValueError):
        DistributionDrift(threshold=0.1, warning_threshold=0.2)
    with pytest.raises(ValueError):
        DistributionDrift(bins=1)


def test_the_cusum_equals_its_formula_at_every_step():
    """The log-likelihood ratios are kept while the reference does not change: the statistic
    is still the one computed afresh at every observation, to the last bit."""
    import math
    import random

    from models.drift import _Cusum

    rng = random.Random(12)
    for rise in (None, 1e-3):
        cusum = _Cusum(reference=300, lag=50, odds_ratio=3.0, rise=rise)
        stat = 0.0
        for i in range(5000):
            x = rng.random() < (0.02 if i < 2500 else 0.08)
            got = cusum.update(x)
            if not cusum.ready:
                assert got == 0.0
                continue
            p0 = (cusum.ref_sum + 0.5) / (len(cusum.ref) + 1.0)
            p1 = min(p0 + rise, 0.5) if rise is not None else 3.0 * p0 / (1.0 - p0 + 3.0 * p0)
            stat = max(0.0, stat + (math.log(p1 / p0) if x else math.log((1.0 - p1) / (1.0 - p0))))
            assert got == stat == cusum.stat
        assert stat > 0.0
