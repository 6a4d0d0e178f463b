"""Quality benchmark: the handbook protocol, in the stream, beside the published table.

    .venv/bin/python bench/quality.py [--seeds 0 1 2] [--start 2018-06-01]

For each seed: simulate the handbook preset (7-day label delay), replay it
through the pipeline from ``--start`` (the dynamic model learns online as
labels arrive, exactly as in the stream), and evaluate on the published test
week 2018-08-08..14: ROC AUC and average precision over the test week's
transactions, card precision@100 per day, with cards already known to be
compromised before each test day removed (known = a fraud whose label had
arrived by then). Prints mean and spread over the seeds beside the
published figures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from features.schemas import parse_time  # noqa: E402
from features.state import DAY  # noqa: E402
from features.store.embedded import EmbeddedStore  # noqa: E402
from models.quality import average_precision, card_precision_at_k, roc_auc  # noqa: E402
from models.serving import ModelRuntime  # noqa: E402
from stream import simulator  # noqa: E402
from stream.pipeline import FraudPipeline  # noqa: E402
from stream.replay import replay  # noqa: E402

PUBLISHED = [("logistic regression", 0.871, 0.606, 0.291),
             ("random forest", 0.867, 0.658, 0.287),
             ("XGBoost", 0.862, 0.639, 0.273),
             ("best, model selection (FFNN / XGBoost)", 0.876, 0.687, 0.303)]
TEST_START, TEST_DAYS = "2018-08-08", 7


def evaluate(result, labels: list[dict], model: str) -> tuple[float, float, float]:
    """AUC, AP and CP@100 on the test week, known-compromised cards removed."""
    t0 = parse_time(TEST_START + "T00:00:00Z", "t")
    fraud_known_at = {}  # card -> earliest time a fraud label on it arrived
    events = {r.transaction_id: r for r in result.scored}
    for lb in labels:
        if lb["is_fraud"] and lb["transaction_id"] in events:
            card = events[lb["transaction_id"]].card_hash
            at = parse_time(lb["label_time"], "label_time")
            fraud_known_at[card] = min(at, fraud_known_at.get(card, at))
    rows = [r for r in result.scored if t0 <= r.event_ts < t0 + TEST_DAYS * DAY]
    day_start = lambda r: (r.event_ts // DAY) * DAY  # noqa: E731
    rows = [r for r in rows if fraud_known_at.get(r.card_hash, np.inf) > day_start(r)]
    y = np.array([r.is_fraud for r in rows])
    s = np.array([r.scores[model] for r in rows])
    days = np.array([int(r.event_ts // DAY) for r in rows])
    cards = np.array([r.card_hash for r in rows])
    return roc_auc(y, s), average_precision(y, s), card_precision_at_k(days, cards, y, s, k=100)


def run_seed(seed: int, start: str, kind: str) -> tuple[tuple[float, float, float], float]:
    sim = simulator.simulate(simulator.preset("handbook"), seed=seed)
    begin = parse_time(start + "T00:00:00Z", "start")
    end = parse_time(TEST_START + "T00:00:00Z", "t") + TEST_DAYS * DAY
    purchases = [p for p in sim.purchases
                 if begin <= parse_time(p["event_time"], "event_time") < end]
    kept = {p["transaction_id"] for p in purchases}
    labels = [lb for lb in sim.labels if lb["transaction_id"] in kept]
    with tempfile.TemporaryDirectory() as tmp:
        pipeline = FraudPipeline(EmbeddedStore(tmp), ModelRuntime(kind=kind))
        result = replay(pipeline, purchases, labels)
        pipeline.close()
    return evaluate(result, labels, "dynamic"), result.events_per_second


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--start", default="2018-06-01", help="first day replayed")
    ap.add_argument("--kind", default="logreg", help="dynamic model kind")
    args = ap.parse_args()
    scores = []
    for seed in args.seeds:
        t = time.perf_counter()
        (auc, ap_, cp), eps = run_seed(seed, args.start, args.kind)
        scores.append((auc, ap_, cp))
        print(f"seed {seed}: AUC {auc:.3f} AP {ap_:.3f} CP@100 {cp:.3f} "
              f"({eps:,.0f} events/s, {time.perf_counter() - t:.0f} s)", flush=True)
    print("\n| model | ROC AUC | AP | CP@100 |\n| --- | --- | --- | --- |")
    for name, *vals in PUBLISHED:
        print(f"| {name} (published, batch) | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
    cols = list(zip(*scores))
    spread = (lambda c: f" ± {statistics.stdev(c):.3f}" if len(c) > 1 else "")  # noqa: E731
    print(f"| fraudstream dynamic ({args.kind}, online, in the stream) | " +
          " | ".join(f"{statistics.mean(c):.3f}{spread(c)}" for c in cols) + " |")
    print(f"(mean ± sd over seeds {args.seeds}; test week {TEST_START} + {TEST_DAYS} days)")


if __name__ == "__main__":
    main()
