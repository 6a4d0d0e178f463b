"""Through a real broker with one worker: sustained throughput and produce-to-alert latency.

    .venv/bin/python bench/stream_kafka.py [--events 50000] [--rate 1000] [--seconds 20] [--runs 3]

Starts a local Kafka broker and one worker (embedded store), then

1. throughput: produces ``--events`` purchases as fast as it can and measures
   from the first to the last scored event (read from the worker's /metrics),
   and the worker's CPU time over the same span (events per CPU second, the
   figure that does not depend on what else the machine runs);
2. latency: offers ``--rate`` purchases per second for ``--seconds`` with every
   purchase alerted (threshold 0, no warm-up), and measures from the moment
   each purchase was handed to the producer to the moment its alert was read
   back from ``fraud-alerts``.

Prints the median over ``--runs`` runs of each figure.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import orjson
from confluent_kafka import Consumer, Producer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from deploy.kafka.launcher import KafkaBroker, free_port  # noqa: E402
from stream.connections import ensure_topics  # noqa: E402
from stream.demo import start_worker, stop_process  # noqa: E402
from stream.settings import Settings  # noqa: E402

T0_MS = 1_704_067_200_000



def scored(port: int) -> float:
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read()
    except OSError:
        return -1.0
    for line in text.decode().splitlines():
        if line.startswith('fraudstream_events_total{kind="purchase",outcome="scored"}'):
            return float(line.split()[-1])
    return 0.0


def purchase(i: int, run: str) -> bytes:
    return orjson.dumps({"transaction_id": f"{run}-{i}", "event_time": T0_MS + i * 1000,
                         "user_id": f"u{i % 5000}", "seller_id": f"s{i % 1000}",
                         "item_id": "i", "card_hash": f"c{i % 6000}",
                         "price": 10.0 + i % 90, "n_items": 1 + i % 3})


def worker_settings(bootstrap: str, workdir: Path, name: str, **kw) -> Settings:
    return Settings(app_id=f"bench-{name}", kafka_bootstrap=bootstrap, data_dir=str(workdir / name),
                    topic_purchases=f"p-{name}", topic_labels=f"l-{name}",
                    topic_alerts=f"a-{name}", topic_purchases_dlq=f"pd-{name}",
                    topic_labels_dlq=f"ld-{name}", purchases_partitions=1, alerts_partitions=1,
                    metrics_port=free_port(), session_timeout_seconds=6, heartbeat_seconds=1, **kw)


def run_worker(settings: Settings, workdir: Path):
    ensure_topics(settings)
    proc = start_worker(settings, workdir / f"{settings.app_id}.log")
    deadline = time.monotonic() + 60
    while scored(settings.metrics_port) < 0:
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError(f"worker did not start; see {workdir}")
        time.sleep(0.2)
    return proc


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput(bootstrap: str, workdir: Path, n: int, run: str) -> tuple[float, float]:
    settings = worker_settings(bootstrap, workdir, f"tp{run}")
    proc = run_worker(settings, workdir)
    try:
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        for i in range(n):
            while True:
                try:
                    producer.produce(settings.topic_purchases, key=b"k%d" % (i % 6000),
                                     value=purchase(i, run))
                    break
                except BufferError:
                    producer.poll(0.01)
        producer.flush(60)
        start = first = cpu0 = None
        while True:
            done = scored(settings.metrics_port)
            now = time.monotonic()
            if done > 0 and first is None:
                first, start, cpu0 = done, now, cpu_seconds(proc.pid)
            if done >= n:
                if now <= start:
                    return float("nan"), float("nan")
                return (n - first) / (now - start), (n - first) / (cpu_seconds(proc.pid) - cpu0)
            time.sleep(0.05)
    finally:
        stop_process(proc)


def latency(bootstrap: str, workdir: Path, rate: float, seconds: float, run: str) -> list[float]:
    settings = worker_settings(bootstrap, workdir, f"lat{run}", alert_threshold=0.0,
                               warmup_frauds=0, warmup_legit=0)
    proc = run_worker(settings, workdir)
    sent: dict[str, float] = {}
    got: list[float] = []
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{run}",
                         "auto.offset.reset": "earliest", "fetch.wait.max.ms": 5})
    consumer.subscribe([settings.topic_alerts])
    n = int(rate * seconds)
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            msg = consumer.poll(0.05)
            if msg is not None and not msg.error():
                txid = orjson.loads(msg.value())["transaction_id"]
                if txid in sent:
                    got.append(time.perf_counter() - sent[txid])

    reader = threading.Thread(target=read)
    reader.start()
    try:
        time.sleep(3)  # let the alert reader join its group
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
        next_at = time.perf_counter()
        for i in range(n):
            next_at += 1.0 / rate
            while time.perf_counter() < next_at:
                time.sleep(max(0.0, next_at - time.perf_counter() - 0.0005))
            value = purchase(i, run)
            sent[f"{run}-{i}"] = time.perf_counter()
            producer.produce(settings.topic_purchases, key=b"k%d" % (i % 6000), value=value)
            producer.poll(0)
        producer.flush(30)
        deadline = time.monotonic() + 30
        while len(got) < n and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        stop.set()
        reader.join()
        consumer.close()
        stop_process(proc)
    return got


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="fraudstream-bench-"))
    with KafkaBroker(workdir / "kafka") as broker:
        rates, per_cpu, p50s, p99s = [], [], [], []
        for r in range(args.runs):
            rate, cpu_rate = throughput(broker.bootstrap, workdir, args.events, f"{r}")
            rates.append(rate)
            per_cpu.append(cpu_rate)
            lat = latency(broker.bootstrap, workdir, args.rate, args.seconds, f"{r}")
            p50s.append(pct(lat, 0.50) * 1000)
            p99s.append(pct(lat, 0.99) * 1000)
            print(f"run {r + 1}: {rates[-1]:,.0f} events/s ({per_cpu[-1]:,.0f} per worker CPU "
                  f"second); at {args.rate:g}/s offered "
                  f"{len(lat)} alerts, p50 {p50s[-1]:.1f} ms, p99 {p99s[-1]:.1f} ms", flush=True)
    print(f"\n| measure (median of {args.runs}) | value |\n| --- | --- |")
    print(f"| throughput, one worker, {args.events:,} purchases | "
          f"{statistics.median(rates):,.0f} events/s |")
    print(f"| the same, per CPU second of the worker | {statistics.median(per_cpu):,.0f} events/s |")
    print(f"| produce -> alert p50 at {args.rate:g} events/s | {statistics.median(p50s):.1f} ms |")
    print(f"| produce -> alert p99 at {args.rate:g} events/s | {statistics.median(p99s):.1f} ms |")


if __name__ == "__main__":
    main()
