"""A worker SIGKILLed again and again while traffic flows loses nothing and counts nothing twice.

A producer thread streams purchases with a clear fraud pattern; each purchase
is labelled as soon as its snapshot is durable, so the model keeps learning.
Meanwhile the worker is killed with SIGKILL at random moments of its work and
restarted on the same data directory, at least five times, and finally
stopped cleanly. The scenario runs once; each test checks one property of
its outcome.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from dataclasses import dataclass, field

import orjson
import pytest

from ground_truth import (LabelFeeder, current_model, is_fraud, label_of, legit_purchase,
                          registry_problems, store_mismatches, traffic)
from worker_harness import Sender, Worker, group_lag, read_topic, wait_until

pytestmark = pytest.mark.kafka

N_PURCHASES = 3000
N_EARLY = 1200  # the first purchases carry more fraud, so the pattern is learned early
RATE = 60.0  # purchases per second
MIN_KILLS, MAX_KILLS = 5, 12
TRAINED_LABELS = 600  # a published model that learned this many labels is "trained"


class Feed(threading.Thread):
    """Sends the purchases at a steady rate; notes the first one sent after a trained
    model was published."""

    def __init__(self, worker: Worker, sender: Sender, purchases: list[dict]):
        super().__init__(daemon=True)
        self.settings, self.sender, self.purchases = worker.settings, sender, purchases
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.first_after_training: int | None = None

    def run(self) -> None:
        try:
            start = time.monotonic()
            for i, p in enumerate(self.purchases):
                if self.stop.is_set():
                    return
                if self.first_after_training is None and i % 20 == 0 and self._trained():
                    self.first_after_training = i
                self.sender.send(self.settings.topic_purchases, p["card_hash"], orjson.dumps(p))
                ahead = start + (i + 1) / RATE - time.monotonic()
                if ahead > 0:
                    time.sleep(ahead)
            self.sender.flush()
        except BaseException as exc:  # reported by the test
            self.error = exc

    def _trained(self) -> bool:
        model = current_model(self.settings.model_dir)
        return model is not None and model.n_labels >= TRAINED_LABELS


@dataclass(repr=False)
class Outcome:
    worker: Worker
    purchases: list[dict]
    labels: list[dict]
    first_after_training: int | None
    kills: int
    incarnations: list[dict] = field(default_factory=list)  # last metrics of each process


def batches_done(worker: Worker) -> float:
    """Micro-batches this worker process has completed (purchases and labels)."""
    try:
        samples = worker.metrics()
    except OSError:
        return 0.0
    return sum(v for (name, _), v in samples.items()
               if name == "fraudstream_batch_size_events_count")


def kill_repeatedly(worker: Worker, busy, rng: random.Random, scrapes: list) -> int:
    """Start the worker, SIGKILL it at a random moment of its work; again, while ``busy()``."""
    kills = 0
    while kills < MIN_KILLS or (busy() and kills < MAX_KILLS):
        worker.start()
        wait_until(lambda: batches_done(worker) > 0, 20)  # working (or nothing left to do)
        time.sleep(rng.uniform(0.0, 2.5))  # a random point of that work
        scrapes.append(worker.metrics())
        worker.kill()
        kills += 1
    return kills


def last_event_through(worker: Worker, sender: Sender, purchases: list, labels: list) -> None:
    """One more purchase and its label through the final worker process, so it is up and
    processing (not still starting) when it is stopped."""
    s = worker.settings
    p = legit_purchase(len(purchases), random.Random(0))
    sender.send(s.topic_purchases, p["card_hash"], orjson.dumps(p))
    sender.flush()
    worker.wait_scored(1, 60)
    sender.send(s.topic_labels, p["transaction_id"], orjson.dumps(label_of(p)))
    sender.flush()
    worker.wait_for(lambda: worker.metric("fraudstream_events_total", kind="label",
                                          outcome="applied") >= 1, 60, "the last label")
    purchases.append(p)
    labels.append(label_of(p))


@pytest.fixture(scope="module")
def outcome(kafka_bootstrap, tmp_path_factory) -> Outcome:
    rng = random.Random(20240101)
    purchases = (traffic(0, N_EARLY, fraud_share=0.15, rng=rng)
                 + traffic(N_EARLY, N_PURCHASES - N_EARLY, fraud_share=0.05, rng=rng))
    data_dir = tmp_path_factory.mktemp("crash")
    worker = Worker(kafka_bootstrap, data_dir, uuid.uuid4().hex[:8],
                    warmup_frauds=5, warmup_legit=50)
    s = worker.settings
    sender = Sender(kafka_bootstrap)
    feed = Feed(worker, sender, purchases)
    labels = LabelFeeder(sender, s.topic_labels, data_dir / "store", purchases)
    scrapes: list = []
    try:
        feed.start()
        labels.start()
        kills = kill_repeatedly(worker, lambda: feed.is_alive() or labels.is_alive(), rng,
                                scrapes)
        worker.start()
        feed.join(120)
        assert feed.error is None and not feed.is_alive(), f"feed failed: {feed.error!r}"
        worker.wait_for(lambda: not labels.is_alive(), 120, "every purchase to be labelled")
        sender.flush()
        last_event_through(worker, sender, purchases, labels.sent)
        worker.wait_for(lambda: group_lag(s.kafka_bootstrap, s.app_id, s.topic_purchases) == 0
                        and group_lag(s.kafka_bootstrap, s.app_id, s.topic_labels) == 0,
                        120, "every purchase and label to be processed and committed")
        scrapes.append(worker.metrics())
    finally:
        feed.stop.set()
        labels.stop.set()
        worker.stop()
    return Outcome(worker, purchases, labels.sent, feed.first_after_training, kills, scrapes)


def test_the_worker_was_killed_mid_stream_at_least_five_times(outcome):
    """Some kills fell between a store commit and the offset commit: Kafka redelivered
    events the store had already counted, and the store recognised them."""
    assert outcome.kills >= MIN_KILLS
    assert len(outcome.labels) == len(outcome.purchases) > N_PURCHASES
    redelivered = sum(v for scrape in outcome.incarnations for (name, labels), v in scrape.items()
                      if name == "fraudstream_events_total"
                      and dict(labels)["outcome"] == "duplicate")
    assert redelivered > 0


def test_every_aggregate_counts_each_event_exactly_once(outcome):
    """Users, cards and sellers: purchase, fraud and report counts, hourly bucket counts and
    sums, item histograms and times equal one application of each purchase and label;
    every purchase has its snapshot with its label."""
    s = outcome.worker.settings
    problems = store_mismatches(outcome.worker.settings.store_url.removeprefix("embedded://"),
                                outcome.purchases, outcome.labels, s.store_config())
    assert not problems, "\n".join(problems)


def test_every_fraud_after_training_was_alerted(outcome):
    """Alerts are at least once: a kill between scoring and the offset commit re-alerts."""
    assert outcome.first_after_training is not None, "no trained model was ever published"
    s = outcome.worker.settings
    alerted = {orjson.loads(m.value())["transaction_id"]
               for m in read_topic(s.kafka_bootstrap, s.topic_alerts)}
    frauds = {p["transaction_id"] for p in outcome.purchases[outcome.first_after_training:]
              if is_fraud(p)}
    assert len(frauds) >= 40, len(frauds)
    missed = sorted(frauds - alerted, key=lambda tx: int(tx.split("-")[1]))
    assert not missed, f"{len(missed)} of {len(frauds)} frauds sent after training were " \
                       f"never alerted: {missed[:10]}"


def test_every_kept_model_version_loads_with_its_checksum(outcome):
    assert not registry_problems(outcome.worker.settings.model_dir)


def test_the_model_learned_every_applied_label_once(outcome):
    """A label applied to the store before a kill must still reach the model: its
    redelivery is a duplicate, so nothing else would ever teach it again."""
    model = current_model(outcome.worker.settings.model_dir)
    assert model is not None
    learned, applied = model.n_labels, len(outcome.labels)
    assert learned == applied, (f"the model learned {learned} of the {applied} labels the "
                                f"store applied; the others were lost in the {outcome.kills} kills")
