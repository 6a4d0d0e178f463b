"""Running real worker processes against the session's Kafka broker, and watching them."""

from __future__ import annotations

import socket
import time
import urllib.request
from pathlib import Path

from confluent_kafka import Consumer
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
