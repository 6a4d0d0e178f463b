"""Running real worker processes against the session's Kafka broker, and watching them."""

from __future__ import annotations

import socket
import time
import urllib.request
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from stream.connections import ensure_topics
from stream.demo import start_worker, stop_process
from stream.settings import Settings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def scrape(port: int) -> dict[tuple[str, tuple], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def metric(samples, name: str, **labels) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


class Worker:
    """One worker process (restartable) with its own topics, group and data directory."""

    def __init__(self, bootstrap: str, data_dir: Path, unique: str, **overrides):
        self.settings = Settings(
            app_id=f"fraudstream-test-{unique}", kafka_bootstrap=bootstrap,
            topic_purchases=f"purchases-{unique}", topic_labels=f"labels-{unique}",
            topic_alerts=f"alerts-{unique}", topic_purchases_dlq=f"purchases-dlq-{unique}",
            topic_labels_dlq=f"labels-dlq-{unique}", purchases_partitions=2, alerts_partitions=1,
            data_dir=str(data_dir), metrics_port=free_port(), session_timeout_seconds=6,
            heartbeat_seconds=1, publish_every_seconds=1.0, **overrides)
        self.log = data_dir / "worker.log"
        data_dir.mkdir(parents=True, exist_ok=True)
        ensure_topics(self.settings)
        self.proc = None

    def start(self) -> "Worker":
        self.proc = start_worker(self.settings, self.log)
        self.wait_for(self._metrics_up, 60, "/metrics to answer")
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash."""
        self.proc.kill()
        self.proc.wait(10)

    def _metrics_up(self) -> bool:
        try:
            self.metrics()
            return True
        except OSError:
            return False

    def metrics(self):
        return scrape(self.settings.metrics_port)

    def metric(self, name: str, **labels) -> float:
        return metric(self.metrics(), name, **labels)

    def wait_for(self, condition, timeout: float, what: str):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"worker exited ({self.proc.returncode}):\n"
                                     f"{self.log.read_text()[-3000:]}")
            value = condition()
            if value:
                return value
            time.sleep(0.25)
        raise AssertionError(f"timed out waiting for {what}\n{self.log.read_text()[-3000:]}")

    def wait_scored(self, n: int, timeout: float = 120) -> None:
        self.wait_for(lambda: self.metric("fraudstream_events_total", kind="purchase",
                                          outcome="scored") >= n, timeout, f"{n} scored purchases")


def consume_all(bootstrap: str, topic: str, expected: int, timeout: float) -> list:
    """Every record of a topic from the start: at least ``expected``, then 2 s more."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{topic}-{time.time()}",
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    out, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and len(out) < expected:
            msg = consumer.poll(0.5)
            if msg is not None and not msg.error():
                out.append(msg)
        end = time.monotonic() + 2
        while time.monotonic() < end:
            msg = consumer.poll(0.2)
            if msg is not None and not msg.error():
                out.append(msg)
    finally:
        consumer.close()
    return out


# -- watching without a running worker: the broker's view, paced producing -----------------

def wait_until(condition, timeout: float, interval: float = 0.25) -> bool:
    """Poll ``condition`` until it is true (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def group_lag(bootstrap: str, group: str, topic: str, timeout: float = 10) -> int:
    """Records of ``topic`` past the offsets ``group`` committed, read from the broker.

    Unlike the worker's lag gauge this does not depend on the worker finishing a
    batch: it is what a restarted worker would have to process again.
    """
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False})
    try:
        partitions = consumer.list_topics(topic, timeout=timeout).topics[topic].partitions
        committed = consumer.committed([TopicPartition(topic, p) for p in partitions],
                                       timeout=timeout)
        lag = 0
        for tp in committed:
            low, high = consumer.get_watermark_offsets(tp, timeout=timeout)
            lag += high - (tp.offset if tp.offset >= 0 else low)
        return lag
    finally:
        consumer.close()


def read_topic(bootstrap: str, topic: str, timeout: float = 60) -> list:
    """Every record of ``topic`` up to its current end, without joining a consumer group."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{time.time()}",
                         "enable.auto.commit": False, "fetch.message.max.bytes": 32 << 20,
                         "receive.message.max.bytes": 64 << 20})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {}
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        out, deadline = [], time.monotonic() + timeout
        while ends and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None or msg.error():
                continue
            out.append(msg)
            if msg.offset() + 1 >= ends.get(msg.partition(), 0):
                ends.pop(msg.partition(), None)
        if ends:
            raise AssertionError(f"{topic}: partitions {sorted(ends)} not read to the end "
                                 f"in {timeout}s")
        return out
    finally:
        consumer.close()


class Sender:
    """An idempotent producer (no duplicates, no reordering across broker restarts) that
    remembers where each record landed: ``landed[(topic, value)] = (partition, offset)``."""

    def __init__(self, bootstrap: str, **config):
        self.producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5,
                                  "enable.idempotence": True, **config})
        self.landed: dict[tuple[str, bytes | None], tuple[int, int]] = {}
        self.failed: list[str] = []

    def _on_delivery(self, err, msg) -> None:
        if err is not None:
            self.failed.append(str(err))
        else:
            self.landed[(msg.topic(), msg.value())] = (msg.partition(), msg.offset())

    def send(self, topic: str, key: str | bytes | None, value: bytes | None) -> None:
        key = key.encode() if isinstance(key, str) else key
        while True:
            try:
                self.producer.produce(topic, key=key, value=value, on_delivery=self._on_delivery)
                break
            except BufferError:  # the local queue is full (the broker may be away)
                self.producer.poll(0.1)
        self.producer.poll(0)

    def send_paced(self, topic: str, records, rate: float, stop=None) -> int:
        """Send ``(key, value)`` pairs at ``rate`` per second; stop early when ``stop`` is set."""
        start, sent = time.monotonic(), 0
        for key, value in records:
            if stop is not None and stop.is_set():
                break
            self.send(topic, key, value)
            sent += 1
            ahead = start + sent / rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
        return sent

    def flush(self, timeout: float = 60) -> None:
        left = self.producer.flush(timeout)
        assert left == 0 and not self.failed, (left, self.failed[:5])
