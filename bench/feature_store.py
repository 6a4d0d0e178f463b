"""Feature store benchmark: updates per second, store round trips per event, memory.

    .venv/bin/python bench/feature_store.py [--events 1000000] [--runs 3] [--batch 500]

Feeds purchases over 100k users, 20k sellers and 120k cards (a fifth of the
users have a second card) through a store in micro-batches, committing after
each batch (durable at batch boundaries: for the embedded store, the batch's
snapshots and journal row, with a checkpoint of every entity whenever the
journal has grown as long as the entity count), and prints the median events/s
per core, the store round trips per event, and the resident memory per 100k
entities. The first run of a process also pays for loading the store's
compiled kernels (in time and memory); the median leaves it out. With
``AEROSPIKE_HOSTS`` set it measures the Aerospike backend too.
"""

from __future__ import annotations

import argparse
import gc
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from features.schemas import Purchase  # noqa: E402
from features.store import open_store  # noqa: E402

T0 = 1_704_067_200.0


def make_events(n: int, seed: int = 0) -> list[Purchase]:
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 100_000, n)
    second = rng.random(n) < 0.5
    cards = np.where((users < 20_000) & second, 100_000 + users, users)  # 120k cards
    sellers = rng.integers(0, 20_000, n)
    prices = np.round(rng.lognormal(3.5, 0.8, n), 2) + 0.01
    items = rng.integers(1, 4, n)
    times = T0 + np.sort(rng.uniform(0, 30 * 86400, n))
    return [Purchase(f"t{i}", float(times[i]), f"u{users[i]}", f"s{sellers[i]}", "item",
                     f"c{cards[i]}", float(prices[i]), int(items[i])) for i in range(n)]


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def run(url: str, events: list[Purchase], batch: int) -> tuple[float, float, float, int]:
    gc.collect()
    before = rss_mb()
    store = open_store(url)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for i in range(0, len(events), batch):
        store.process_purchases(events[i:i + batch])
        store.commit()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    entities = len({e.user_id for e in events}) + len({e.card_hash for e in events}) + \
        len({e.seller_id for e in events})
    mem = rss_mb() - before
    trips = getattr(store, "round_trips", 0) / len(events)
    store.close()
    return len(events) / cpu, len(events) / wall, trips, mem / entities * 100_000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=500)
    args = ap.parse_args()
    t = time.perf_counter()
    events = make_events(args.events)
    print(f"{len(events):,} events generated in {time.perf_counter() - t:.1f}s", flush=True)
    urls = {"embedded": None}
    if os.environ.get("AEROSPIKE_HOSTS"):
        ns = os.environ.get("AEROSPIKE_NAMESPACE", "test")
        urls["aerospike"] = f"aerospike://{os.environ['AEROSPIKE_HOSTS']}/{ns}"
    rows = []
    for name, url in urls.items():
        results = []
        for r in range(args.runs):
            target = url or f"embedded://{tempfile.mkdtemp(prefix='fs-bench-')}"
            if url:
                target += f"?set_prefix=b{os.getpid()}r{r}"
            results.append(run(target, events, args.batch))
            cpu, wall, trips, mem = results[-1]
            print(f"{name} run {r + 1}: {cpu:,.0f} events/s per core (cpu), {wall:,.0f} "
                  f"events/s wall, {trips:.4f} round trips/event, {mem:.0f} MB per 100k "
                  f"entities", flush=True)
        med = [statistics.median(x) for x in zip(*results)]
        rows.append((name, *med))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("\n| store | events/s per core | events/s wall | round trips/event | MB per 100k "
          "entities |\n| --- | --- | --- | --- | --- |")
    for name, cpu, wall, trips, mem in rows:
        print(f"| {name} | {cpu:,.0f} | {wall:,.0f} | {trips:.4f} | {mem:.0f} |")
    print(f"(median of {args.runs} runs, {args.events:,} events, batches of {args.batch}; "
          f"peak RSS {peak:.0f} MB)")


if __name__ == "__main__":
    main()
