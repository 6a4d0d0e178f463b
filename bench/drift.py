"""Drift benchmark: replay the drift scenario and measure detection and recovery.

    .venv/bin/python bench/drift.py [--days 70] [--drift-day 45] [--seed 0] [--out report-drift]

Simulates the ``drift`` preset (the handbook population, realistic label
delays, a new fraud pattern from ``--drift-day``), replays it through the
pipeline with monitoring on, and prints: error-stream drift detections of the
dynamic model before the drift (false, per million events) and after it (how
many labels arrived between the start of the new pattern and the first
detection), and the daily average precision around the drift (does it return
to its level of the week before within a day). Writes the replay report.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from features.schemas import parse_time  # noqa: E402
from features.state import DAY  # noqa: E402
from features.store.embedded import EmbeddedStore  # noqa: E402
from models.serving import ModelRuntime  # noqa: E402
from stream import simulator  # noqa: E402
from stream.pipeline import FraudPipeline  # noqa: E402
from stream.replay import replay  # noqa: E402
from stream.report import write_report  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--days", type=int, default=70)
    ap.add_argument("--drift-day", type=int, default=45)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="report-drift")
    args = ap.parse_args()
    config = simulator.preset("drift", n_days=args.days, drift_day=args.drift_day)
    sim = simulator.simulate(config, seed=args.seed)
    start = parse_time(config.start_date + "T00:00:00Z", "start")
    drift_at = start + args.drift_day * DAY
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = FraudPipeline(EmbeddedStore(tmp), ModelRuntime())
        t = time.perf_counter()
        shown = [0]

        def progress(done: int, total: int) -> None:
            if done - shown[0] >= 200_000:
                shown[0] = done
                print(f"  {done:,}/{total:,} events, {time.perf_counter() - t:.0f}s", flush=True)

        result = replay(pipeline, sim.purchases, sim.labels, progress=progress)
        pipeline.close()
    label_times = sorted(parse_time(lb["label_time"], "label_time") for lb in sim.labels)
    events_before = sum(1 for p in sim.purchases
                        if parse_time(p["event_time"], "e") < drift_at) + \
        sum(1 for ts in label_times if ts < drift_at)
    errors = [d for d in pipeline.drift_log if d["detector"] == "error"
              and d["signal"] == "dynamic"]
    before = [d for d in errors if d["time"] < drift_at]
    after = [d for d in errors if d["time"] >= drift_at]
    print(f"\n{result.n_purchases:,} purchases, {result.n_labels:,} labels in "
          f"{result.seconds:.0f}s ({result.events_per_second:,.0f} events/s)")
    print(f"false detections before the drift: {len(before)} in {events_before:,} events "
          f"({len(before) / events_before * 1e6:.2f} per million)")
    if after:
        first = after[0]["time"]
        n_labels = sum(1 for ts in label_times if drift_at <= ts <= first)
        print(f"drift detected {(first - drift_at) / DAY:.2f} days and {n_labels:,} labels "
              "after the new pattern started")
    else:
        print("no detection after the drift started")
    psi = [d for d in pipeline.drift_log if d["detector"] == "psi"]
    print(f"distribution (PSI) drifts: {len(psi)} "
          f"({sum(d['time'] >= drift_at for d in psi)} after the drift started)")
    drift = [{**d, "date": time.strftime("%Y-%m-%d", time.gmtime(d["time"]))}
             for d in pipeline.drift_log if d["detector"] == "error"]
    metrics = write_report(result, args.out, models=["dynamic"], drift=drift,
                           title="fraudstream: drift scenario")
    days = sorted(metrics["daily"])
    drift_date = time.strftime("%Y-%m-%d", time.gmtime(drift_at))
    week = [metrics["daily"][d]["dynamic"]["average_precision"] for d in days
            if d < drift_date][-7:]
    level = sum(v for v in week if v is not None) / max(1, sum(v is not None for v in week))
    print(f"daily AP, week before the drift: mean {level:.3f}")
    for d in days:
        if drift_date <= d and len([x for x in days if drift_date <= x <= d]) <= 6:
            ap_ = metrics["daily"][d]["dynamic"]["average_precision"]
            print(f"  {d}: AP {ap_ if ap_ is None else round(ap_, 3)}")
    print(f"report: {args.out}/report.html")


if __name__ == "__main__":
    main()
