"""Feed recorded error streams to the error-drift detector, in seconds instead of a replay.

    .venv/bin/python bench/drift_offline.py report-drift/errors.npz [more errors.npz ...]
        [--inject 10] [--stationary-days 400] [detector options: --quick-hours 3 ...]

``bench/drift.py`` records, for every label the monitor saw, its arrival in
the replay, the dynamic model's score at scoring time, the class, the
simulator's scenario, the purchase time and the label event's own time (the
label delay is that minus the purchase time, as in the monitor). This script
runs :class:`models.drift.MissedFraudDrift` with the given parameters and
prints, for each file:

* the recorded stream: false detections before the fraud ring's first
  purchase (per million events), the labels until the first detection after
  it, and the highest statistic of each CUSUM before it. Up to the replay's
  own first detection the stream does not depend on the detector; after it,
  it holds the scores of the adapted model, so a later detection here is
  only indicative;
* with ``--inject N``: N synthetic rings injected into the stream before the
  real one (at days spread over the last three weeks before it), as the
  simulator draws them (``--ring-per-day`` frauds a day at any hour, 70%
  reported by the card holder after a lognormal delay of median
  ``--report-hours``, the others by review or chargeback), scored like the
  legitimate purchases of the three days before: labels until detection for
  each, and any detection before the injected ring;

and over all files:

* with ``--stationary-days D``: a long stream without any ring, D days drawn
  at random (with replacement) among the recorded days between day 22 (the
  detector is armed) and the ring's day: false detections per million labels
  and per million events (at the files' ratio of events to labels).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.drift import MissedFraudDrift  # noqa: E402

RING = 9
DAY = 86_400.0
HOUR = 3_600.0


def load(path: str) -> dict:
    data = np.load(path)
    e = {k: data[k] for k in ("label_time", "score", "is_fraud", "scenario", "event_time")}
    # Files of older runs have no label_ts: their arrival time stands in for it.
    e["label_ts"] = data["label_ts"] if "label_ts" in data else data["label_time"]
    e["drift_at"] = float(data["drift_at"])
    e["purchases_before"] = int(data["purchases_before"])
    return e


def detector(args) -> MissedFraudDrift:
    return MissedFraudDrift(
        "dynamic", threshold=args.threshold, warning_threshold=args.warning_threshold,
        odds_ratio=args.odds_ratio, quick_threshold=args.quick_threshold,
        quick_warning_threshold=args.quick_warning_threshold,
        quick_odds_ratio=args.quick_odds_ratio, quick_rise=args.quick_rise or None,
        reference=args.reference, lag=args.lag, min_labels=args.min_labels,
        quick_delay=args.quick_hours * HOUR or None)


def run(args, score, is_fraud, delay, until: int = 0) -> tuple[list, dict[str, float]]:
    """Feed one stream: its signals as (label index, signal), and each CUSUM's highest
    statistic over the first ``until`` labels."""
    d = detector(args)
    signals, top = [], {name: 0.0 for name in d.cusums}
    for i, (s, y, dl) in enumerate(zip(score.tolist(), is_fraud.tolist(), delay.tolist())):
        signal = d.update(s, y, dl)
        if signal is not None:
            signals.append((i, signal))
            if signal.kind == "drift":
                continue  # the detector restarted: its statistics are new ones
        if i < until:
            for name, cusum in d.cusums.items():
                if cusum.stat > top[name]:
                    top[name] = cusum.stat
    return signals, top


def inject(e: dict, start: float, rng, per_day: float, report_hours: float) -> dict:
    """The recorded stream before its real ring, plus a synthetic ring from ``start``."""
    end = e["drift_at"]
    days = int((end - start) // DAY) + 1
    purchase = np.concatenate([start + d * DAY + rng.uniform(0, DAY, rng.poisson(per_day))
                               for d in range(days)])
    n = len(purchase)
    reported, reviewed = rng.random(n) < 0.7, rng.random(n) < 0.2
    late = np.where(reviewed, rng.lognormal(np.log(12 * HOUR), 0.8, n),
                    rng.lognormal(np.log(72 * HOUR), 1.2, n))
    delay = np.where(reported,
                     np.clip(rng.lognormal(np.log(report_hours * HOUR), 0.7, n), 600, DAY),
                     np.clip(late, HOUR, 30 * DAY))
    t, s, y = e["label_time"], e["score"], e["is_fraud"]
    recent_legit = np.flatnonzero(~y & (t > start - 3 * DAY) & (t < start))
    label_t = np.concatenate([t, purchase + delay])
    order = np.argsort(label_t, kind="stable")
    order = order[label_t[order] < end]
    return {"label_time": label_t[order],
            "score": np.concatenate([s, s[rng.choice(recent_legit, n)]])[order],
            "is_fraud": np.concatenate([y, np.ones(n, bool)])[order],
            "delay": np.concatenate([e["label_ts"] - e["event_time"], delay])[order],
            "scenario": np.concatenate([e["scenario"], np.full(n, RING)])[order]}


def first_drift(signals, at: int) -> tuple[int | None, str | None, int]:
    """Labels from ``at`` to the first drift at or after it, its CUSUM, drifts before it."""
    drifts = [(i, sig) for i, sig in signals if sig.kind == "drift"]
    after = [(i, sig) for i, sig in drifts if i >= at]
    n_before = len(drifts) - len(after)
    if not after:
        return None, None, n_before
    return after[0][0] - at, after[0][1].stratum, n_before


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("errors", nargs="+", help="errors.npz written by bench/drift.py")
    ap.add_argument("--threshold", type=float, default=10.0)
    ap.add_argument("--warning-threshold", type=float, default=6.0)
    ap.add_argument("--odds-ratio", type=float, default=3.0)
    ap.add_argument("--quick-hours", type=float, default=3.0,
                    help="the second CUSUM counts frauds labelled within this (0: none)")
    ap.add_argument("--quick-threshold", type=float, default=9.0)
    ap.add_argument("--quick-warning-threshold", type=float, default=5.0)
    ap.add_argument("--quick-odds-ratio", type=float, default=5.0)
    ap.add_argument("--quick-rise", type=float, default=1e-3,
                    help="the quick CUSUM's alternative: this many more missed frauds a label "
                         "(0: the odds ratio instead)")
    ap.add_argument("--reference", type=int, default=50_000)
    ap.add_argument("--lag", type=int, default=5_000)
    ap.add_argument("--min-labels", type=int, default=30_000)
    ap.add_argument("--inject", type=int, default=0, help="synthetic rings per file")
    ap.add_argument("--ring-per-day", type=float, default=80.0)
    ap.add_argument("--report-hours", type=float, default=1.0)
    ap.add_argument("--stationary-days", type=int, default=0)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    started = time.perf_counter()
    rng = np.random.default_rng(args.seed)
    streams = [load(path) for path in args.errors]
    blocks, labels_before, events_before = [], 0, 0
    for path, e in zip(args.errors, streams):
        t, scen = e["label_time"], e["scenario"]
        drift_at = e["drift_at"]
        delay = e["label_ts"] - e["event_time"]
        at = int(np.searchsorted(t, drift_at))
        n_events = e["purchases_before"] + at
        labels_before += at
        events_before += n_events
        signals, top = run(args, e["score"], e["is_fraud"], delay, until=at)
        labels, stratum, n_false = first_drift(signals, at)
        warnings = sum(1 for i, sig in signals if sig.kind == "warning" and i < at)
        print(f"{path}: {len(t):,} labels")
        print(f"  false detections before the ring: {n_false} in {n_events:,} events "
              f"({n_false / n_events * 1e6:.2f} per million); {warnings} warnings; highest "
              + ", ".join(f"{k} {v:.2f}" for k, v in top.items()))
        if labels is None:
            print("  no detection after the ring started")
        else:
            first = at + labels
            window = slice(at, first + 1)
            print(f"  drift detected {labels + 1:,} labels and "
                  f"{(t[first] - drift_at) / HOUR:.1f} hours after the ring's first purchase "
                  f"({int(e['is_fraud'][window].sum())} frauds, "
                  f"{int((scen[window] == RING).sum())} of the ring; {stratum})")
        if args.inject:
            t0 = float(t[0]) // DAY * DAY
            ring_day = (drift_at - t0) / DAY
            results = []
            for k in range(args.inject):
                start = t0 + (ring_day - 21 + 18 * k / max(1, args.inject - 1)) * DAY
                r = inject(e, start, rng, args.ring_per_day, args.report_hours)
                s_at = int(np.searchsorted(r["label_time"], start))
                lo = max(0, s_at - 150_000)  # the detector's memory is much shorter
                sig, _ = run(args, r["score"][lo:], r["is_fraud"][lo:], r["delay"][lo:])
                n, _, false = first_drift(sig, s_at - lo)
                results.append(-1 if false else (n + 1 if n is not None else None))
            done = [n for n in results if n is not None and n > 0]
            print(f"  {args.inject} injected rings: labels to detection "
                  f"{sorted(results, key=lambda n: (n is None, n))}; median "
                  f"{np.median(done) if done else float('nan'):.0f}, "
                  f"{sum(n <= 2000 for n in done)} within 2,000 "
                  f"(-1: a detection before the injected ring)")
        day = ((t - float(t[0]) // DAY * DAY) // DAY).astype(int)
        for d in range(22, int(day[at - 1]) if at else 0):
            m = day == d
            blocks.append((e["score"][m], e["is_fraud"][m], delay[m]))
    if args.stationary_days and blocks:
        pick = rng.integers(0, len(blocks), args.stationary_days)
        score, is_fraud, delay = (np.concatenate([blocks[i][j] for i in pick]) for j in range(3))
        signals, top = run(args, score, is_fraud, delay, until=len(score))
        drifts = [sig for _, sig in signals if sig.kind == "drift"]
        warnings = sum(1 for _, sig in signals if sig.kind == "warning")
        per_label = len(drifts) / len(score)
        events = len(score) * events_before / max(1, labels_before)
        print(f"stationary stream: {args.stationary_days} days drawn from {len(blocks)} recorded "
              f"days before the ring, {len(score):,} labels (~{events / 1e6:.1f} M events): "
              f"{len(drifts)} false detections ({per_label * 1e6:.2f} per million labels, "
              f"{len(drifts) / events * 1e6:.2f} per million events; "
              f"{', '.join(str(sig.stratum) for sig in drifts) or 'none'}), {warnings} warnings; "
              f"highest " + ", ".join(f"{k} {v:.2f}" for k, v in top.items()))
    print(f"({time.perf_counter() - started:.0f}s)")


if __name__ == "__main__":
    main()
