"""Dynamic model candidates: cost per event and average precision, prequentially.

    .venv/bin/python bench/models.py [--preset handbook] [--days 30] [--runs 3]

Computes the features of a simulated stream once (through the embedded
store, in event-time order with the preset's label delays), then for each
candidate runs the stream as the worker does: predict every purchase, learn
every label on the features its purchase was scored with. Prints the cost of
one predict + one learn (CPU time per purchase), and ROC AUC / average
precision over the second half of the stream, with the median of ``--runs``
timing runs for the default model.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from features.schemas import decode_label, decode_purchase  # noqa: E402
from features.store.embedded import EmbeddedStore  # noqa: E402
from models.dynamic import CANDIDATES, DynamicModel  # noqa: E402
from models.quality import average_precision, roc_auc  # noqa: E402
from stream import simulator  # noqa: E402


def feature_stream(preset: str, days: int, seed: int) -> tuple[list, dict]:
    sim = simulator.simulate(simulator.preset(preset, n_days=days), seed=seed)
    truth = {lb["transaction_id"]: lb["is_fraud"] for lb in sim.labels}
    stream = []
    with EmbeddedStore(tempfile.mkdtemp()) as store:
        for kind, event in simulator.interleave(sim):
            if kind == "purchase":
                (snap,) = store.process_purchases([decode_purchase(orjson.dumps(event),
                                                                   now=4e9)])
                stream.append(("p", snap.transaction_id, snap.features))
            else:
                (res,) = store.process_labels([decode_label(orjson.dumps(event))])
                if res.status == "applied":
                    stream.append(("l", event["transaction_id"], event["is_fraud"]))
    return stream, truth


def run(kind: str, stream: list, truth: dict) -> tuple[float, float, float]:
    model = DynamicModel(kind)
    pending, scored = {}, []
    start = time.process_time()  # CPU time: fairer than the wall clock on a shared machine
    for op, txid, value in stream:
        if op == "p":
            scored.append((model.score(value), truth.get(txid, False)))
            pending[txid] = value
        else:
            model.learn(pending.pop(txid), value)
    seconds = time.process_time() - start
    half = scored[len(scored) // 2:]
    y, s = [t for _, t in half], [p for p, _ in half]
    return seconds / len(scored) * 1e6, roc_auc(y, s), average_precision(y, s)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="handbook")
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--kinds", nargs="+", default=list(CANDIDATES))
    args = ap.parse_args()
    t = time.perf_counter()
    stream, truth = feature_stream(args.preset, args.days, args.seed)
    n_p = sum(op == "p" for op, _, _ in stream)
    print(f"{n_p:,} purchases, {len(stream) - n_p:,} labels; features in "
          f"{time.perf_counter() - t:.0f}s", flush=True)
    print("\n| model | predict + learn, µs per event | ROC AUC | AP |\n| --- | --- | --- | --- |")
    for kind in args.kinds:
        runs = [run(kind, stream, truth) for _ in range(args.runs if kind == "logreg" else 1)]
        cost = statistics.median(r[0] for r in runs)
        print(f"| {kind} | {cost:.1f} | {runs[0][1]:.3f} | {runs[0][2]:.3f} |", flush=True)
    print(f"(preset {args.preset}, {args.days} days, seed {args.seed}; metrics on the second "
          "half of the stream; cost = CPU time of the whole run per purchase, i.e. its "
          "prediction and the learning from its label)")


if __name__ == "__main__":
    main()
