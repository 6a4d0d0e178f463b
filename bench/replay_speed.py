"""In-process speed: the whole pipeline in replay vs the bare river model on the same vectors.

    .venv/bin/python bench/replay_speed.py [--days 10] [--runs 3]

Replays the handbook preset's first ``--days`` days through the pipeline
(decode, feature store, scoring, learning from labels, monitoring) on the
embedded store and reports events per second per core (CPU time). Then runs
bare river (StandardScaler | LogisticRegression) predict + learn over the
very feature vectors the pipeline produced, and prints both side by side with
their ratio. Medians of ``--runs`` runs; the ratio is also taken run by run,
against the bare runs just before and after, as this machine's speed drifts.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from river import compose, linear_model, optim, preprocessing  # noqa: E402

from features.store.embedded import EmbeddedStore  # noqa: E402
from models.serving import ModelRuntime  # noqa: E402
from stream import simulator  # noqa: E402
from stream.pipeline import FraudPipeline  # noqa: E402
from stream.replay import replay  # noqa: E402


def pipeline_run(sim) -> tuple[float, list]:
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = FraudPipeline(EmbeddedStore(tmp), ModelRuntime())
        cpu = time.process_time()
        result = replay(pipeline, sim.purchases, sim.labels)
        cpu = time.process_time() - cpu
        vectors = {s.transaction_id: dict(pipeline.store.snapshot(s.transaction_id).features)
                   for s in result.scored}
        pipeline.close()
    n = result.n_purchases + result.n_labels
    return n / cpu, [(vectors[p["transaction_id"]], lb["is_fraud"])
                     for p, lb in zip(sim.purchases, _labels_by_purchase(sim))]


def _labels_by_purchase(sim) -> list[dict]:
    by_id = {lb["transaction_id"]: lb for lb in sim.labels}
    return [by_id.get(p["transaction_id"], {"is_fraud": False}) for p in sim.purchases]


def bare_run(pairs: list) -> float:
    model = compose.Pipeline(preprocessing.StandardScaler(),
                             linear_model.LogisticRegression(optimizer=optim.SGD(0.005)))
    cpu = time.process_time()
    for x, y in pairs:
        model.predict_proba_one(x)
        model.learn_one(x, y)
    return (time.process_time() - cpu) / len(pairs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--days", type=int, default=10)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    sim = simulator.simulate(simulator.preset("handbook", n_days=args.days), seed=0)
    rates, bare, ratios = [], [], []
    for r in range(args.runs):
        rate, pairs = pipeline_run(sim)
        rates.append(rate)
        bare.append(bare_run(pairs))
        # The machine's speed drifts (a fixed loop varies by 25% from one second to
        # the next here), so each run's ratio takes the bare runs on either side.
        around = bare[-2:]
        ratios.append((2 / rate) / statistics.mean(around))
        print(f"run {r + 1}: pipeline {rate:,.0f} events/s per core; bare river "
              f"{bare[-1] * 1e6:.1f} µs per purchase (predict + learn); ratio "
              f"{ratios[-1]:.2f}x", flush=True)
    rate, cost = statistics.median(rates), statistics.median(bare)
    per_purchase = 2 / rate  # a purchase and its label are two events
    print(f"\n| measure (median of {args.runs}) | value |\n| --- | --- |")
    print(f"| pipeline, in-process replay, embedded store | {rate:,.0f} events/s per core |")
    print(f"| pipeline cost per purchase (its scoring and its label) | "
          f"{per_purchase * 1e6:.1f} µs |")
    print(f"| bare river StandardScaler + LogisticRegression, predict + learn | "
          f"{cost * 1e6:.1f} µs |")
    print(f"| ratio pipeline / bare model, run by run (bare runs on either side) | "
          f"{statistics.median(ratios):.2f}x |")
    print(f"| ratio of the medians | {per_purchase / cost:.2f}x |")
    print(f"({len(sim.purchases):,} purchases and {len(sim.labels):,} labels, handbook preset, "
          f"{args.days} days)")


if __name__ == "__main__":
    main()
