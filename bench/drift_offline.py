"""Feed a recorded error stream to the error-drift detector, in seconds instead of a replay.

    .venv/bin/python bench/drift_offline.py report-drift/errors.npz [--threshold 10]
        [--warning-threshold 6] [--odds-ratio 3] [--reference 50000] [--lag 5000]

``bench/drift.py`` records, for every label the monitor saw, its label time,
the dynamic model's score at scoring time, the class, the simulator's
scenario and the purchase time. This script runs :class:`models.drift.MissedFraudDrift` with the
given parameters over that stream and prints the same detection figures as
the replay: false detections before the fraud ring's first purchase (per
million events), the labels until the first detection after it, and the
highest statistic reached before it. The stream is the one the replay's
model produced: up to the first detection of the replay it does not depend
on the detector; after it, it holds the scores of the adapted model.
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("errors", help="errors.npz written by bench/drift.py")
    ap.add_argument("--threshold", type=float, default=10.0)
    ap.add_argument("--warning-threshold", type=float, default=6.0)
    ap.add_argument("--odds-ratio", type=float, default=3.0)
    ap.add_argument("--reference", type=int, default=50_000)
    ap.add_argument("--lag", type=int, default=5_000)
    ap.add_argument("--min-labels", type=int, default=30_000)
    ap.add_argument("--quick-hours", type=float, default=6.0,
                    help="the second CUSUM counts frauds labelled within this (0: none)")
    args = ap.parse_args()
    data = np.load(args.errors)
    label_t, score, is_fraud, scen, event_t = (
        data[k] for k in ("label_time", "score", "is_fraud", "scenario", "event_time"))
    drift_at = float(data["drift_at"])
    events_before = int(data["purchases_before"]) + int((label_t < drift_at).sum())
    detector = MissedFraudDrift("dynamic", threshold=args.threshold,
                                warning_threshold=args.warning_threshold,
                                odds_ratio=args.odds_ratio, reference=args.reference,
                                lag=args.lag, min_labels=args.min_labels,
                                quick_delay=args.quick_hours * 3600 or None)
    started = time.perf_counter()
    signals, highest = [], 0.0
    delays = (label_t - event_t).tolist()
    for t, s, y, delay in zip(label_t.tolist(), score.tolist(), is_fraud.tolist(), delays):
        signal = detector.update(s, y, delay)
        if t < drift_at:
            highest = max(highest, detector.statistic)
        if signal is not None:
            signals.append((t, signal))
    seconds = time.perf_counter() - started
    drifts = [(t, s) for t, s in signals if s.kind == "drift"]
    before = [t for t, _ in drifts if t < drift_at]
    after = [t for t, _ in drifts if t >= drift_at]
    warnings_before = sum(1 for t, s in signals if s.kind == "warning" and t < drift_at)
    print(f"{len(label_t):,} labels in {seconds:.1f}s")
    print(f"false detections before the drift: {len(before)} in {events_before:,} events "
          f"({len(before) / events_before * 1e6:.2f} per million); {warnings_before} warnings; "
          f"highest statistic {highest:.2f}")
    if after:
        window = (label_t >= drift_at) & (label_t <= after[0])
        print(f"drift detected {(after[0] - drift_at) / 3600:.1f} hours and {int(window.sum()):,} "
              f"labels after the ring's first purchase ({int((window & is_fraud).sum())} frauds, "
              f"{int((window & (scen == RING)).sum())} of the ring)")
    else:
        print("no detection after the drift started")


if __name__ == "__main__":
    main()
