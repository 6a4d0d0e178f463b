"""Soak: one worker under a steady stream for a long time; does anything creep up?

    .venv/bin/python bench/soak.py [--minutes 30] [--rate 2000] [--every 30]
                                   [--preset demo|handbook] [--workdir DIR]

Starts a local Kafka broker and one worker on the embedded store, then
produces the simulator's purchases and labels in time order at ``--rate``
events per second for ``--minutes``, looping over the simulation with fresh
transaction ids and event times moved forward by the simulated span each
round. Every ``--every`` seconds it prints: elapsed time, events produced,
purchases scored, consumer lag (``fraudstream_consumer_lag_messages`` summed,
and the lag behind the group's committed offsets read from the broker),
worker RSS (``/proc/<pid>/status``), p50/p99 processing latency over the
interval (from the ``fraudstream_event_latency_seconds`` histogram deltas)
and the store's size on disk. At the end it waits for the worker to drain and
prints a summary.
"""

from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deploy.kafka.launcher import KafkaBroker, free_port  # noqa: E402
from stream import simulator  # noqa: E402
from stream.connections import confluent_config, ensure_topics  # noqa: E402
from stream.demo import start_worker, stop_process  # noqa: E402
from stream.producer import produce_events  # noqa: E402
from stream.settings import Settings  # noqa: E402

DAY_MS = 86_400_000



def epoch_ms(value) -> int:
    if isinstance(value, (int, float)):
        return int(value)
    return int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)


def looping_events(preset: str, seed: int):
    """The simulation's events in time order, forever: round k has ids ``{id}-r{k}`` and
    times moved k simulated spans forward. Simulates right away; returns the iterator."""
    sim = simulator.simulate(simulator.preset(preset), seed=seed)
    base = []
    for kind, event in simulator.interleave(sim):
        event = dict(event)
        for name in ("event_time", "label_time"):
            if name in event:
                event[name] = epoch_ms(event[name])
        base.append((kind, event))
    times = [e["event_time"] for k, e in base if k == "purchase"]
    span = (max(times) - min(times)) // DAY_MS * DAY_MS + DAY_MS
    print(f"simulation {preset!r}: {len(sim.purchases):,} purchases, {len(sim.labels):,} labels "
          f"per round, {span // DAY_MS} days", flush=True)

    def rounds():
        k = 0
        while True:
            shift = k * span
            for kind, event in base:
                out = dict(event, transaction_id=f"{event['transaction_id']}-r{k}")
                for name in ("event_time", "label_time"):
                    if name in out:
                        out[name] += shift
                yield kind, out
            k += 1

    return rounds()


def scrape(port: int) -> dict:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def total(samples: dict, name: str, **labels) -> float:
    return sum(v for (n, ls), v in samples.items()
               if n == name and all(dict(ls).get(k) == w for k, w in labels.items()))


def latency_buckets(samples: dict) -> list[tuple[float, float]]:
    """Cumulative (upper bound, count) pairs of the purchase latency histogram."""
    out = [(float(dict(ls)["le"]), v) for (n, ls), v in samples.items()
           if n == "fraudstream_event_latency_seconds_bucket"
           and dict(ls).get("kind") == "purchase"]
    return sorted(out)


def quantile(q: float, before: list, after: list) -> float:
    """``histogram_quantile`` over the observations between two scrapes (NaN if none)."""
    prev = dict(before)
    buckets = [(le, count - prev.get(le, 0.0)) for le, count in after]
    if not buckets or buckets[-1][1] <= 0:
        return math.nan
    rank = q * buckets[-1][1]
    lower, below = 0.0, 0.0
    for le, cumulative in buckets:
        if cumulative >= rank:
            if math.isinf(le):
                return lower  # beyond the last finite bound: report that bound
            return lower + (le - lower) * (rank - below) / max(cumulative - below, 1e-12)
        lower, below = le, cumulative
    return lower


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def size_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def committed_lag(settings: Settings) -> int:
    """Messages of the input topics past the worker group's committed offsets."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(confluent_config(settings, **{"group.id": settings.app_id,
                                                      "enable.auto.commit": False}))
    try:
        lag = 0
        for topic in (settings.topic_purchases, settings.topic_labels):
            parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
            for tp in consumer.committed([TopicPartition(topic, p) for p in parts], timeout=10):
                low, high = consumer.get_watermark_offsets(tp, timeout=10)
                lag += high - (tp.offset if tp.offset >= 0 else low)
        return lag
    finally:
        consumer.close()


def fmt_ms(seconds: float) -> str:
    return "    -" if math.isnan(seconds) else f"{seconds * 1000:5.0f}"


def summary(rows: list[dict], samples: dict, produced: int, rss_start: float, drained: float,
            first_buckets: list, store_mib: float) -> None:
    def events(kind: str, outcome: str) -> str:
        return f"{total(samples, 'fraudstream_events_total', kind=kind, outcome=outcome):,.0f}"

    p99s = [r["p99"] for r in rows if not math.isnan(r["p99"])]
    rate = produced / rows[-1]["elapsed"] if rows else 0.0
    lines = [
        ("events produced", f"{produced:,} ({rate:,.0f}/s)"),
        ("purchases scored", events("purchase", "scored")),
        ("labels applied", events("label", "applied")),
        ("lag (gauge): max / at the end", f"{max(r['lag'] for r in rows):,.0f} / "
                                          f"{rows[-1]['lag']:,.0f}"),
        ("lag (committed): max / at the end", f"{max(r['kafka_lag'] for r in rows):,} / "
                                              f"{rows[-1]['kafka_lag']:,}"),
        ("drained after the producer stopped", f"{drained:.1f} s"),
        ("worker RSS: start / end / max", f"{rss_start:.0f} / {rows[-1]['rss']:.0f} / "
                                          f"{max(r['rss'] for r in rows):.0f} MiB"),
        ("p99 latency: whole run / worst interval",
         f"{fmt_ms(quantile(0.99, first_buckets, latency_buckets(samples))).strip()} / "
         f"{fmt_ms(max(p99s, default=math.nan)).strip()} ms"),
        ("store on disk at the end", f"{store_mib:.1f} MiB"),
    ]
    print("\nsummary")
    for name, value in lines:
        print(f"  {name:<42} {value}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--minutes", type=float, default=30.0)
    ap.add_argument("--rate", type=float, default=2000.0,
                    help="events (purchases and labels) per second")
    ap.add_argument("--every", type=float, default=30.0, help="seconds between two report lines")
    ap.add_argument("--preset", choices=("demo", "handbook"), default="demo")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workdir", type=Path, help="default: a new temporary folder, removed after")
    args = ap.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="fraudstream-soak-"))
    broker = KafkaBroker(workdir / "kafka")
    proc = None
    stop = threading.Event()
    sent = [0]
    try:
        bootstrap = broker.start(timeout=120)
        settings = Settings(app_id="soak", kafka_bootstrap=bootstrap,
                            data_dir=str(workdir / "worker"), metrics_port=free_port())
        Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
        ensure_topics(settings)
        proc = start_worker(settings, workdir / "worker.log")
        store = Path(settings.store_url.removeprefix("embedded://"))
        deadline = time.monotonic() + 60
        while True:
            try:
                samples = scrape(settings.metrics_port)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the worker did not start; see {workdir / 'worker.log'}")
                time.sleep(0.5)
        events = looping_events(args.preset, args.seed)
        rss_start = rss_mib(proc.pid)
        print(f"broker {bootstrap}, worker pid {proc.pid} (log {workdir / 'worker.log'}); "
              f"{args.rate:g} events/s for {args.minutes:g} min", flush=True)
        producer = threading.Thread(
            target=produce_events, daemon=True, args=(settings, events),
            kwargs=dict(rate=args.rate, stop=stop, on_sent=lambda n: sent.__setitem__(0, n)))
        started = time.monotonic()
        producer.start()

        header = (f"{'elapsed':>8} {'produced':>10} {'scored':>10} {'lag':>7} "
                  f"{'lag(kafka)':>10} {'RSS MiB':>8} {'p50 ms':>6} {'p99 ms':>6} "
                  f"{'store MiB':>9}")
        print(header, flush=True)
        rows, prev = [], latency_buckets(samples)
        first = prev
        end = started + args.minutes * 60
        while time.monotonic() < end:
            time.sleep(min(args.every, max(0.0, end - time.monotonic())))
            if proc.poll() is not None:
                print(f"the worker exited ({proc.returncode}); see {workdir / 'worker.log'}")
                return 1
            samples = scrape(settings.metrics_port)
            buckets = latency_buckets(samples)
            row = dict(elapsed=time.monotonic() - started, produced=sent[0],
                       scored=total(samples, "fraudstream_events_total", kind="purchase",
                                    outcome="scored"),
                       lag=total(samples, "fraudstream_consumer_lag_messages"),
                       kafka_lag=committed_lag(settings), rss=rss_mib(proc.pid),
                       p50=quantile(0.5, prev, buckets), p99=quantile(0.99, prev, buckets),
                       store=size_mib(store))
            prev = buckets
            rows.append(row)
            print(f"{row['elapsed']:7.0f}s {row['produced']:>10,} {row['scored']:>10,.0f} "
                  f"{row['lag']:>7,.0f} {row['kafka_lag']:>10,} {row['rss']:>8.0f} "
                  f"{fmt_ms(row['p50']):>6} {fmt_ms(row['p99']):>6} {row['store']:>9.1f}",
                  flush=True)
        stop.set()
        producer.join(60)

        drain_started = time.monotonic()
        while committed_lag(settings) and time.monotonic() - drain_started < 120:
            time.sleep(1)
        drained = time.monotonic() - drain_started
        samples = scrape(settings.metrics_port)
        summary(rows, samples, sent[0], rss_start, drained, first, size_mib(store))
        return 0
    finally:
        stop.set()
        if proc is not None:
            stop_process(proc)
        broker.stop()
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
