"""Producing events to Kafka at a set rate, for the simulator and the demo."""

from __future__ import annotations

import threading
import time
from typing import Callable, Iterable

import orjson

from stream.connections import confluent_config
from stream.settings import Settings


class RateLimiter:
    """Paces a loop to ``rate`` iterations per second (0 or less: no limit)."""

    def __init__(self, rate: float):
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.next_at = time.monotonic()

    def wait(self) -> None:
        if not self.interval:
            return
        self.next_at += self.interval
        delay = self.next_at - time.monotonic()
        if delay > 0.002:
            time.sleep(delay)
        elif delay < -1.0:  # fell far behind: do not burst to catch up
            self.next_at = time.monotonic()


def produce_events(settings: Settings, events: Iterable[tuple[str, dict]], rate: float = 0.0,
                   stop: threading.Event | None = None,
                   on_sent: Callable[[int], None] | None = None) -> int:
    """Send ``("purchase" | "label", event)`` pairs to their topics; return how many.

    Purchases are keyed by card hash (one card's events stay in order on one
    partition), labels by transaction id.
    """
    from confluent_kafka import Producer

    producer = Producer(confluent_config(settings, **{"linger.ms": 5, "acks": "all"}))
    limiter = RateLimiter(rate)
    sent = 0
    try:
        for kind, event in events:
            if stop is not None and stop.is_set():
                break
            if kind == "purchase":
                topic, key = settings.topic_purchases, event["card_hash"]
            else:
                topic, key = settings.topic_labels, event["transaction_id"]
            while True:
                try:
                    producer.produce(topic, key=key.encode(), value=orjson.dumps(event))
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
            sent += 1
            if on_sent is not None:
                on_sent(sent)
            limiter.wait()
    finally:
        remaining = producer.flush(30)
        if remaining:
            raise RuntimeError(f"{remaining} events were not delivered to Kafka "
                               f"({settings.kafka_bootstrap}); is the broker up?")
    return sent
