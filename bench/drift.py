"""Drift benchmark: replay the drift scenario and measure detection and recovery.

    .venv/bin/python bench/drift.py [--days 70] [--drift-day 45] [--seed 0] [--out report-drift]

Simulates the ``drift`` preset (the handbook population, realistic label
delays, a fraud ring from ``--drift-day``: scenario 9, see
:func:`stream.simulator_scenarios.drift_day`), replays it through the
pipeline with monitoring on, and prints:

* false detections: drifts signalled on the dynamic model's error stream
  before the ring's first purchase, per million events (purchases and
  labels) before it;
* the detection delay: labels (all, frauds, the ring's) that arrived
  between the ring's first purchase and the first confirmed drift, up to
  the label that confirmed it (and with the rest of its micro-batch);
* recovery: average precision of the dynamic model per day (scores given
  at scoring time) for the week before the ring and the days after it,
  and how many days after the ring started it was back to the level of the
  week before.

It writes the replay report and ``errors.npz`` (per label: time it was read,
dynamic score, is_fraud, scenario, purchase time, the label's own time) for
``bench/drift_offline.py``, which feeds that error stream to the detector
in seconds, to tune it. (After the first detection the recorded scores are
those of the adapted model.) With ``--drift-day`` past ``--days`` there is no
ring: every detection is a false one.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from features.schemas import parse_time  # noqa: E402
from features.state import DAY  # noqa: E402
from features.store.embedded import EmbeddedStore  # noqa: E402
from models.serving import ModelRuntime  # noqa: E402
from stream import simulator  # noqa: E402
from stream.pipeline import FraudPipeline  # noqa: E402
from stream.replay import replay  # noqa: E402
from stream.report import write_report  # noqa: E402

RING = 9  # the drift scenario's id


def record_errors(pipeline: FraudPipeline, purchases: list[dict],
                  labels: list[dict]) -> tuple[list, list[int]]:
    """Record every label the monitor sees: (label time, dynamic score, is_fraud, scenario,
    event time, the label event's own time); and the number of labels seen when each drift
    of the dynamic model's error stream was confirmed."""
    scenario = {lb["transaction_id"]: int(lb.get("scenario", 0)) for lb in labels}
    by_key = {(p["card_hash"], parse_time(p["event_time"], "event_time")):
              scenario.get(p["transaction_id"], 0) for p in purchases}
    rows: list = []
    observe = pipeline.monitor.observe_label

    def recorded(scores, is_fraud, card, event_ts, label_ts=None):
        rows.append((pipeline.clock(), scores.get("dynamic", np.nan), bool(is_fraud),
                     by_key.get((card, event_ts), -1), event_ts,
                     np.nan if label_ts is None else label_ts))
        signals = observe(scores, is_fraud, card, event_ts, label_ts)
        if any(s.kind == "drift" and s.detector == "error" and s.signal == "dynamic"
               for s in signals):
            confirmed.append(len(rows))
        return signals

    confirmed: list[int] = []
    pipeline.monitor.observe_label = recorded
    return rows, confirmed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--days", type=int, default=70)
    ap.add_argument("--drift-day", type=int, default=45)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="report-drift")
    args = ap.parse_args()
    config = simulator.preset("drift", n_days=args.days, drift_day=args.drift_day)
    sim = simulator.simulate(config, seed=args.seed)
    ring_ids = {lb["transaction_id"] for lb in sim.labels if lb.get("scenario") == RING}
    # Without a ring (--drift-day past --days) every detection is a false one.
    drift_at = min((parse_time(p["event_time"], "e") for p in sim.purchases
                    if p["transaction_id"] in ring_ids), default=float("inf"))
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = FraudPipeline(EmbeddedStore(tmp), ModelRuntime())
        rows, confirmed = record_errors(pipeline, sim.purchases, sim.labels)
        t = time.perf_counter()
        shown = [0]

        def progress(done: int, total: int) -> None:
            if done - shown[0] >= 200_000:
                shown[0] = done
                print(f"  {done:,}/{total:,} events, {time.perf_counter() - t:.0f}s", flush=True)

        result = replay(pipeline, sim.purchases, sim.labels, progress=progress)
        pipeline.close()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    errors = np.array(rows, dtype=float).reshape(-1, 6)
    label_t, is_fraud, scen = errors[:, 0], errors[:, 2] > 0, errors[:, 3]
    purchases_before = sum(1 for p in sim.purchases if parse_time(p["event_time"], "e") < drift_at)
    events_before = purchases_before + int((label_t < drift_at).sum())
    np.savez(out / "errors.npz", label_time=label_t, score=errors[:, 1], is_fraud=is_fraud,
             scenario=scen, event_time=errors[:, 4], label_ts=errors[:, 5], drift_at=drift_at,
             purchases_before=purchases_before)
    detections = [d for d in pipeline.drift_log if d["detector"] == "error"
                  and d["signal"] == "dynamic"]
    before = [d for d in detections if d["time"] < drift_at]
    after = [d for d in detections if d["time"] >= drift_at]
    print(f"\n{result.n_purchases:,} purchases, {result.n_labels:,} labels in "
          f"{result.seconds:.0f}s ({result.events_per_second:,.0f} events/s)")
    if ring_ids:
        print(f"the fraud ring's first purchase: "
              f"{time.strftime('%Y-%m-%d %H:%M', time.gmtime(drift_at))} UTC; "
              f"{len(ring_ids):,} ring frauds in all")
    else:
        print("no fraud ring in this replay: every detection is a false one")
    print(f"false detections before the drift: {len(before)} in {events_before:,} events "
          f"({len(before) / events_before * 1e6:.2f} per million)")
    for d in before:
        print(f"  {time.strftime('%Y-%m-%d %H:%M', time.gmtime(d['time']))}: {d}")
    if not ring_ids:
        pass
    elif after:
        first = after[0]["time"]
        # Labels from the ring's first purchase to the one that confirmed the drift (the
        # rest of its micro-batch, read at the same clock, is counted apart).
        start = int(np.searchsorted(label_t, drift_at))
        end = next(n for n in confirmed if n > start)
        window = np.zeros(len(label_t), bool)
        window[start:end] = True
        batch = int(((label_t >= drift_at) & (label_t <= first)).sum())
        print(f"drift detected {(first - drift_at) / 3600:.1f} hours and {end - start:,} "
              f"labels after the ring's first purchase ({int((window & is_fraud).sum())} of them "
              f"frauds, {int((window & (scen == RING)).sum())} of the ring; {batch:,} labels "
              f"with the rest of its micro-batch); {len(after)} detection(s) after it")
    else:
        print("no detection after the drift started")
    psi = [d for d in pipeline.drift_log if d["detector"] == "psi"]
    print(f"distribution (PSI) drifts: {len(psi)} "
          f"({sum(d['time'] >= drift_at for d in psi)} after the drift started)")
    drift = [{**d, "date": time.strftime("%Y-%m-%d", time.gmtime(d["time"]))}
             for d in pipeline.drift_log if d["detector"] == "error"]
    metrics = write_report(result, out, models=["dynamic"], drift=drift,
                           title="fraudstream: drift scenario")
    if ring_ids:
        recovery(metrics, drift_at)
    print(f"report: {out}/report.html; error stream: {out}/errors.npz")


def recovery(metrics: dict, drift_at: float) -> None:
    """Daily AP of the dynamic model, the week before the ring and the days after it."""
    days = sorted(metrics["daily"])
    drift_date = time.strftime("%Y-%m-%d", time.gmtime(drift_at))
    daily_ap = {d: metrics["daily"][d]["dynamic"]["average_precision"] for d in days}
    week = [daily_ap[d] for d in days if d < drift_date][-7:]
    week = [v for v in week if v is not None]
    level = sum(week) / max(1, len(week))
    print(f"daily AP of the dynamic model, week before the drift: mean {level:.3f} "
          f"(min {min(week, default=float('nan')):.3f}, max {max(week, default=float('nan')):.3f})")
    after_days = [d for d in days if d >= drift_date]
    for d in after_days[:7]:
        ap_ = daily_ap[d]
        print(f"  {d}: AP {'n/a' if ap_ is None else f'{ap_:.3f}'}")
    back = next((i for i, d in enumerate(after_days)
                 if daily_ap[d] is not None and daily_ap[d] >= level), None)
    if back is None:
        print("daily AP did not return to its level before the drift")
    else:
        print(f"daily AP back at its level before the drift on day {back} after the drift "
              f"started (day 0: the day the ring started)")


if __name__ == "__main__":
    main()
