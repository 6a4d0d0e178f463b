"""How fast the static model scores: the numpy forward pass against Keras itself.

    .venv/bin/python bench/static_model.py [--model DIR] [--runs 5]

Without ``--model`` a model is first trained on synthetic data (a few seconds).
Each path is timed ``--runs`` times after a warm-up; the table shows the
median rows per second and microseconds per row:

* numpy ``score_matrix`` in batches of 500 and 10,000 rows, and the same with
  BLAS free to use every core (what the model avoids: on busy cores the
  threads wait for each other);
* numpy ``score_dicts`` in batches of 500 feature dicts: what a stream worker
  pays per micro-batch, building the matrix from dicts included;
* numpy, one row per call (``score_matrix`` and ``score_dicts``);
* Keras ``model(x)`` in batches of 500 and 10,000 rows;
* Keras ``model.predict``, one row per call (few calls: it is slow).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from features.definitions import FEATURE_NAMES  # noqa: E402
from models.feature_log import FeatureLog  # noqa: E402
import models.static  # noqa: E402
from models.static import StaticModel, train_static  # noqa: E402


def synthetic_log(n: int, seed: int = 0) -> FeatureLog:
    rng = np.random.default_rng(seed)
    X = rng.uniform(0.0, 1.0, (n, len(FEATURE_NAMES))).astype(np.float32)
    X[:, FEATURE_NAMES.index("amount")] = rng.lognormal(3.0, 1.0, n)
    y = (X[:, FEATURE_NAMES.index("card_recent_velocity")]
         + X[:, FEATURE_NAMES.index("user_fraud_ratio")] > 1.8).astype(np.int8)
    return FeatureLog(X, y, 1_522_584_000.0 + 60.0 * np.arange(n),
                      [f"t{i}" for i in range(n)], ["c"] * n, FEATURE_NAMES)


def rate(call: Callable[[], int], runs: int) -> float:
    """Median rows per second of ``call`` (which returns the rows it scored)."""
    call()  # warm-up: first-call costs (tracing, caches) are not steady state
    speeds = []
    for _ in range(runs):
        started = time.perf_counter()
        rows = call()
        speeds.append(rows / (time.perf_counter() - started))
    return statistics.median(speeds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a trained static model directory")
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    model_dir = args.model
    if model_dir is None:
        model_dir = Path(tempfile.mkdtemp()) / "static"
        train_static(synthetic_log(20_000), model_dir, epochs=3)
    model = StaticModel.load(model_dir)
    net = model.keras_model
    X = synthetic_log(100_000, seed=1).X
    dicts = [dict(zip(model.feature_names, row)) for row in X[:10_000].tolist()]

    def batches(score: Callable, data, size: int, calls: int) -> Callable[[], int]:
        def run() -> int:
            for i in range(calls):
                score(data[i * size:(i + 1) * size])
            return size * calls
        return run

    def all_blas_threads(score: Callable) -> Callable:
        def run(x):
            saved, models.static._blas = models.static._blas, False  # no one-thread limit
            try:
                return score(x)
            finally:
                models.static._blas = saved
        return run

    cases = [
        ("numpy score_matrix", 500, batches(model.score_matrix, X, 500, 40)),
        ("numpy score_matrix", 10_000, batches(model.score_matrix, X, 10_000, 10)),
        ("numpy, BLAS all threads", 500, batches(all_blas_threads(model.score_matrix), X, 500, 40)),
        ("numpy, BLAS all threads", 10_000,
         batches(all_blas_threads(model.score_matrix), X, 10_000, 10)),
        ("numpy score_dicts (stream)", 500, batches(model.score_dicts, dicts, 500, 20)),
        ("numpy score_matrix", 1, batches(model.score_matrix, X, 1, 2_000)),
        ("numpy score_dicts", 1, batches(model.score_dicts, dicts, 1, 2_000)),
        ("keras model(x)", 500, batches(lambda x: net(model.prepare(x)), X, 500, 20)),
        ("keras model(x)", 10_000, batches(lambda x: net(model.prepare(x)), X, 10_000, 5)),
        ("keras model.predict", 1,
         batches(lambda x: net.predict(model.prepare(x), verbose=0), X, 1, 10)),
    ]
    print(f"static model {model_dir} ({len(model.feature_names)} features, "
          f"layers {[w.shape for w, _, _ in model.layers]}), median of {args.runs} runs\n")
    print(f"{'path':<28} {'rows/call':>9} {'rows/s':>12} {'µs/row':>9}")
    results = {}
    for name, size, call in cases:
        speed = rate(call, args.runs)
        results[(name, size)] = speed
        print(f"{name:<28} {size:>9,} {speed:>12,.0f} {1e6 / speed:>9.2f}", flush=True)
    batched = min(results[("numpy score_matrix", 500)], results[("numpy score_matrix", 10_000)])
    stream = 1e6 / results[("numpy score_dicts (stream)", 500)]
    print(f"\nbatched numpy: {batched:,.0f} rows/s (target >= 100,000)")
    print(f"in-stream cost at batch 500: {stream:.2f} µs/event (target <= 20)")


if __name__ == "__main__":
    main()
