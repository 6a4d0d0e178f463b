"""A worker rides out its Kafka broker going away for 30 seconds, without a restart.

The test runs a broker of its own (it stops it), streams purchases and their
labels, stops the broker mid-stream, starts it again 30 s later on the same
data directory and port, and expects the very same worker process to resume
by itself and to count every event exactly once.
"""

from __future__ import annotations

import random
import threading

import pytest

from deploy.kafka.launcher import KafkaBroker
from ground_truth import LabelFeeder, keyed, store_mismatches, traffic
from worker_harness import Sender, Worker, free_port, group_lag, wait_until

pytestmark = pytest.mark.kafka

N_PURCHASES = 2400
RATE = 60.0  # purchases per second
OUTAGE_SECONDS = 30.0


@pytest.fixture
def broker(tmp_path):
    broker = KafkaBroker(tmp_path / "kafka", port=free_port())
    broker.start(timeout=120)
    yield broker
    broker.stop()


def caught_up(worker: Worker) -> bool:
    """Everything on the input topics is processed and its offsets committed."""
    s = worker.settings
    try:
        return (group_lag(s.kafka_bootstrap, s.app_id, s.topic_purchases) == 0
                and group_lag(s.kafka_bootstrap, s.app_id, s.topic_labels) == 0)
    except Exception:  # noqa: BLE001 - the broker may still be coming back
        return False


def test_a_worker_resumes_by_itself_after_a_broker_restart(broker, tmp_path, unique):
    purchases = traffic(0, N_PURCHASES, fraud_share=0.05, rng=random.Random(5))
    worker = Worker(broker.bootstrap, tmp_path / "worker", unique).start()
    s = worker.settings
    sender = Sender(broker.bootstrap)
    stop = threading.Event()
    feed = threading.Thread(target=sender.send_paced, daemon=True,
                            args=(s.topic_purchases, keyed(purchases, "card_hash"), RATE, stop))
    labels = LabelFeeder(sender, s.topic_labels, tmp_path / "worker" / "store", purchases)
    pid = worker.proc.pid
    try:
        feed.start()
        labels.start()
        worker.wait_scored(N_PURCHASES // 4)

        broker.stop()
        died = wait_until(lambda: worker.proc.poll() is not None, OUTAGE_SECONDS)
        assert not died, f"the worker exited during the outage:\n{worker.log.read_text()[-3000:]}"
        broker.start(timeout=120)

        feed.join(120)
        worker.wait_for(lambda: not labels.is_alive(), 180, "every purchase to be labelled")
        sender.flush(120)
        worker.wait_for(lambda: caught_up(worker), 180,
                        "every purchase and label to be processed after the restart")
        assert worker.proc.pid == pid and worker.proc.poll() is None, "the same worker resumed"
    finally:
        stop.set()
        labels.stop.set()
        worker.stop()

    problems = store_mismatches(tmp_path / "worker" / "store", purchases, labels.sent,
                                s.store_config())
    assert not problems, "\n".join(problems)
    assert len(labels.sent) == N_PURCHASES
