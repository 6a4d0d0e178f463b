"""Through a real broker with one worker: sustained throughput and produce-to-alert latency.

    .venv/bin/python bench/stream_kafka.py [--events 150000] [--rate 1000] [--seconds 20]
                                           [--warmup 10] [--runs 3] [--only throughput|latency]
                                           [--broker-warmup 30]

Starts a local Kafka broker, sends ``--broker-warmup`` seconds of untimed
traffic through it (see :func:`warm_broker`), then for each run starts one
worker (embedded store) and measures

1. throughput: produces ``--events`` purchases as fast as it can and measures
   from the first to the last scored event (read from the worker's /metrics),
   and the worker's CPU time over the same span (events per CPU second, the
   figure that does not depend on what else the machine runs);
2. latency: offers ``--rate`` purchases per second with every purchase
   alerted (threshold 0, no model warm-up) and measures, over ``--seconds``
   after ``--warmup`` seconds of the same traffic, from the moment each
   purchase was handed to the producer to the moment its alert was read back
   from ``fraud-alerts`` (by a consumer in a process of its own, so the
   producer's pacing does not delay the reads).

Prints the median over ``--runs`` runs of each figure.
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import queue
import statistics
import sys
import tempfile
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
            stop_process(proc)  # in a session of its own: nothing else would stop it
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
            time.sleep(_next_scrape(n, done, first, start, now))
    finally:
        stop_process(proc)


def _next_scrape(n: int, done: float, first: float | None, start: float | None,
                 now: float) -> float:
    """Seconds until the next look at the worker's /metrics.

    Each scrape costs the worker CPU (20 a second took 5% of it), so the bench
    looks often only while waiting for the first scored event and near the end:
    in between it sleeps half the time the rest should take at the rate so far.
    """
    if first is None or done <= first or now <= start:
        return 0.02
    rate = (done - first) / (now - start)
    return min(0.5, max(0.02, 0.5 * (n - done) / rate))


def warm_broker(bootstrap: str, seconds: float, rate: float = 2000.0) -> None:
    """Small records through a fresh broker, produced one by one and read back, before
    anything is timed. Measured here, a broker's first half-minute is slower while its
    JVM compiles the produce and fetch paths: the bare hop from a producer to a
    consumer took 1.9 ms at the median and 14 ms at p99 then, 0.5-0.7 and 4-5 ms
    once warm. A broker in service is warm."""
    from confluent_kafka.admin import AdminClient, NewTopic

    topic = "bench-warm-up"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, num_partitions=1,
                                                replication_factor=1)]).values():
        future.result(30)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": topic,
                         "auto.offset.reset": "earliest", "fetch.wait.max.ms": 5})
    consumer.subscribe([topic])
    start = next_at = time.perf_counter()
    i = 0
    while next_at - start < seconds:
        next_at += 1.0 / rate
        while (wait := next_at - time.perf_counter()) > 0:
            consumer.consume(100, min(wait, 0.001))
        producer.produce(topic, value=b"%d" % i)
        producer.poll(0)
        i += 1
    producer.flush(30)
    consumer.close()


def read_alerts(bootstrap: str, topic: str, group: str, ready, stop, count, out) -> None:
    """In its own process (so the producer's pacing never delays a read): the moment each
    alert is read, by transaction id, sent back through ``out`` when ``stop`` is set.

    The collector is off in this short-lived process: with the tens of thousands
    of (value, time) pairs it keeps, a full pass stalled its reads by 20-40 ms
    once a run, at the same moment in every run, and that was counted as the
    worker's latency."""
    gc.disable()
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "auto.offset.reset": "latest", "fetch.wait.max.ms": 5,
                         "enable.auto.commit": False})
    consumer.subscribe([topic], on_assign=lambda c, parts: ready.set())
    got: list[tuple[str, float]] = []
    try:
        while not stop.is_set():
            msg = consumer.poll(0.05)
            if msg is not None and not msg.error():
                got.append((msg.value(), time.perf_counter()))
                count.value = len(got)
    finally:
        consumer.close()
        out.put([(orjson.loads(v)["transaction_id"], t) for v, t in got])


def latency(bootstrap: str, workdir: Path, rate: float, seconds: float, warmup: float,
            run: str) -> tuple[list[float], float]:
    """Produce -> alert latencies (seconds) at ``rate`` purchases per second offered, and
    the worker's CPU seconds per purchase over the timed span (how busy it was).

    The clock is ``time.perf_counter`` (CLOCK_MONOTONIC, the same in both processes).
    Before the timed ``seconds``, one purchase is sent and its alert awaited (the
    worker has joined its group and consumes), then ``warmup`` seconds of traffic
    at the rate go untimed: measured, the first seconds after a start are slower
    while the broker's JVM compiles its hot paths and the worker meets its 12,000
    users, sellers and cards for the first time (new entities cost more than known
    ones); 10 s covers both.
    """
    settings = worker_settings(bootstrap, workdir, f"lat{run}", alert_threshold=0.0,
                               warmup_frauds=0, warmup_legit=0)
    proc = run_worker(settings, workdir)
    ctx = multiprocessing.get_context("spawn")
    ready, stop, count, out = ctx.Event(), ctx.Event(), ctx.Value("l", 0, lock=False), ctx.Queue()
    reader = ctx.Process(target=read_alerts, args=(bootstrap, settings.topic_alerts,
                                                   f"bench-{run}", ready, stop, count, out))
    reader.start()
    sent: dict[str, float] = {}
    try:
        if not ready.wait(60):
            raise RuntimeError("the alert reader did not join its group")
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
        producer.produce(settings.topic_purchases, key=b"first", value=purchase(-1, run))
        producer.flush(10)
        deadline = time.monotonic() + 60
        while count.value < 1:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError(f"the worker sent no alert; see {workdir}")
            time.sleep(0.05)
        untimed = int(rate * warmup)
        n = untimed + int(rate * seconds)
        gc.disable()  # likewise for the producing loop and its table of send times
        next_at = time.perf_counter()
        for i in range(n):
            next_at += 1.0 / rate
            while (wait := next_at - time.perf_counter()) > 0:
                time.sleep(wait)
            value = purchase(i, run)
            if i == untimed:
                cpu = cpu_seconds(proc.pid)
            if i >= untimed:
                sent[f"{run}-{i}"] = time.perf_counter()
            producer.produce(settings.topic_purchases, key=b"k%d" % (i % 6000), value=value)
            producer.poll(0)
        cpu = (cpu_seconds(proc.pid) - cpu) / (n - untimed)
        gc.enable()
        producer.flush(30)
        deadline = time.monotonic() + 30
        while count.value < n + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        stop_process(proc)
        got = collect(reader, out)
    if got is None:
        raise RuntimeError(f"the alert reader sent back nothing (exit code {reader.exitcode}); "
                           "its error is above")
    return [t - sent[txid] for txid, t in got if txid in sent], cpu


def collect(reader, out, timeout: float = 60.0) -> list | None:
    """What the alert reader sent back, or None if it failed first; it is gone after this.

    Never raises: it runs while an earlier error may be on its way out, and the
    worker is stopped before it either way (a worker left behind by a failed
    run went on retrying the broker that was gone, and its CPU skewed every
    later measurement)."""
    got = None
    try:
        got = out.get(timeout=timeout if reader.is_alive() else 1.0)
    except queue.Empty:
        pass
    reader.join(10)
    if reader.is_alive():
        reader.terminate()
        reader.join(5)
    return got


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=150_000,
                    help="purchases of the throughput half (50,000 last about 4 s, mostly while "
                         "the producer still shares the cores: runs then varied by 40%%)")
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--warmup", type=float, default=10.0,
                    help="seconds of traffic at the rate before the timed ones")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--only", choices=("throughput", "latency"), help="measure just one of the two")
    ap.add_argument("--broker-warmup", type=float, default=30.0,
                    help="seconds of untimed traffic through the fresh broker first")
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="fraudstream-bench-"))
    with KafkaBroker(workdir / "kafka") as broker:
        if args.broker_warmup > 0:
            warm_broker(broker.bootstrap, args.broker_warmup)
        rates, per_cpu, p50s, p99s = [], [], [], []
        for r in range(args.runs):
            line = [f"run {r + 1}:"]
            if args.only != "latency":
                rate, cpu_rate = throughput(broker.bootstrap, workdir, args.events, f"{r}")
                rates.append(rate)
                per_cpu.append(cpu_rate)
                line.append(f"{rate:,.0f} events/s ({cpu_rate:,.0f} per worker CPU second);")
            if args.only != "throughput":
                lat, cpu = latency(broker.bootstrap, workdir, args.rate, args.seconds,
                                   args.warmup, f"{r}")
                p50s.append(pct(lat, 0.50) * 1000)
                p99s.append(pct(lat, 0.99) * 1000)
                line.append(f"at {args.rate:g}/s offered {len(lat)} of "
                            f"{int(args.rate * args.seconds)} alerts timed, "
                            f"p50 {p50s[-1]:.1f} ms, p90 {pct(lat, 0.90) * 1000:.1f} ms, "
                            f"p99 {p99s[-1]:.1f} ms, max {max(lat) * 1000:.1f} ms; "
                            f"worker CPU {cpu * 1e6:,.0f} µs per purchase")
            print(" ".join(line), flush=True)
    print(f"\n| measure (median of {args.runs}) | value |\n| --- | --- |")
    if rates:
        print(f"| throughput, one worker, {args.events:,} purchases | "
              f"{statistics.median(rates):,.0f} events/s |")
        print(f"| the same, per CPU second of the worker | "
              f"{statistics.median(per_cpu):,.0f} events/s |")
    if p50s:
        print(f"| produce -> alert p50 at {args.rate:g} events/s | "
              f"{statistics.median(p50s):.1f} ms |")
        print(f"| produce -> alert p99 at {args.rate:g} events/s | "
              f"{statistics.median(p99s):.1f} ms |")


if __name__ == "__main__":
    main()
