"""The feature store's disk fails for 30 s under a running worker: it waits, then catches up.

The worker's data directory is a tmpfs mounted by the test. The outage is a
full disk: the tmpfs is remounted with its size shrunk to what it uses now
(``mount -o remount,size=...``), so every write that needs a new page fails
with ENOSPC, and 30 s later it is remounted at its full size. (A read-only
remount cannot make the outage: the kernel refuses it, "mount point is busy",
while SQLite holds the database open for writing.)

During the outage the worker must say so (``fraudstream_store_up`` 0, a
growing ``fraudstream_store_errors_total``, a "feature store unavailable" log
line) and commit no offsets past the state it could not write, so the lag of
its consumer group grows; afterwards it must catch up by itself with every
event counted exactly once.
"""

from __future__ import annotations

import os
import random
import subprocess
import threading
import time
from pathlib import Path

import pytest

from ground_truth import LabelFeeder, keyed, registry_problems, store_mismatches, traffic
from worker_harness import Sender, Worker, group_lag, wait_until

pytestmark = pytest.mark.kafka

TMPFS_SIZE = "256m"
N_PURCHASES = 4000
RATE = 80.0  # purchases per second
OUTAGE_SECONDS = 30.0


def mount(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["mount", *args], capture_output=True, text=True)


@pytest.fixture
def tmpfs(tmp_path):
    """A tmpfs of its own, unmounted whatever happens."""
    path = tmp_path / "data"
    path.mkdir()
    done = mount("-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "fraudstream-test", str(path))
    if done.returncode != 0:
        pytest.fail(f"cannot mount a tmpfs on {path}: {done.stderr.strip()}\n"
                    "This test needs root (CAP_SYS_ADMIN), as in CI.", pytrace=False)
    try:
        yield path
    finally:
        mount("-o", f"remount,size={TMPFS_SIZE}", str(path))
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill_disk(path: Path) -> None:
    """Shrink the tmpfs to the pages it uses now: it is full."""
    for _ in range(50):
        st = os.statvfs(path)
        used = (st.f_blocks - st.f_bfree) * st.f_frsize
        if mount("-o", f"remount,size={used}", str(path)).returncode == 0:
            return
    raise AssertionError(f"could not shrink the tmpfs on {path}")


def restore_disk(path: Path) -> None:
    done = mount("-o", f"remount,size={TMPFS_SIZE}", str(path))
    assert done.returncode == 0, done.stderr


def purchase_lag(worker: Worker) -> int:
    s = worker.settings
    return group_lag(s.kafka_bootstrap, s.app_id, s.topic_purchases)


def test_a_store_outage_stops_the_commits_and_the_worker_catches_up(kafka_bootstrap, tmpfs,
                                                                    tmp_path, unique):
    purchases = traffic(0, N_PURCHASES, fraud_share=0.05, rng=random.Random(9))
    worker = Worker(kafka_bootstrap, tmpfs, unique)
    worker.log = tmp_path / "worker.log"  # off the failing disk
    s = worker.settings
    sender = Sender(kafka_bootstrap)
    stop = threading.Event()
    feed = threading.Thread(target=sender.send_paced, daemon=True,
                            args=(s.topic_purchases, keyed(purchases, "card_hash"), RATE, stop))
    labels = LabelFeeder(sender, s.topic_labels, tmpfs / "store", purchases)
    try:
        worker.start()
        feed.start()
        labels.start()
        worker.wait_scored(N_PURCHASES // 5)

        fill_disk(tmpfs)
        began = time.monotonic()
        worker.wait_for(lambda: worker.metric("fraudstream_store_up") == 0, OUTAGE_SECONDS - 10,
                        "the worker to notice the full disk")
        errors, lag = worker.metric("fraudstream_store_errors_total"), purchase_lag(worker)
        died = wait_until(lambda: worker.proc.poll() is not None,
                          began + OUTAGE_SECONDS - time.monotonic())
        assert not died, f"the worker exited during the outage:\n{worker.log.read_text()[-3000:]}"
        assert worker.metric("fraudstream_store_up") == 0
        assert worker.metric("fraudstream_store_errors_total") > errors >= 1
        assert purchase_lag(worker) > lag, "offsets were committed while the store was down"
        gauge = sum(worker.metric("fraudstream_consumer_lag_messages", topic=s.topic_purchases,
                                  partition=str(p)) for p in range(s.purchases_partitions))
        assert gauge >= RATE * 5, f"the lag gauge shows {gauge} messages after a long outage"
        assert "feature store unavailable" in worker.log.read_text()
        restore_disk(tmpfs)

        worker.wait_for(lambda: worker.metric("fraudstream_store_up") == 1, 60,
                        "the store to be back")
        feed.join(120)
        worker.wait_for(lambda: not labels.is_alive(), 120, "every purchase to be labelled")
        sender.flush()
        worker.wait_for(lambda: purchase_lag(worker) == 0
                        and group_lag(s.kafka_bootstrap, s.app_id, s.topic_labels) == 0,
                        120, "the worker to catch up")
        counted = worker.metrics()
    finally:
        stop.set()
        labels.stop.set()
        mount("-o", f"remount,size={TMPFS_SIZE}", str(tmpfs))  # whatever happened above
        worker.stop()

    problems = store_mismatches(tmpfs / "store", purchases, labels.sent, s.store_config())
    assert not problems, "\n".join(problems)
    assert not registry_problems(s.model_dir)
    assert_counted_once(counted, N_PURCHASES, len(labels.sent))


def assert_counted_once(samples, n_purchases: int, n_labels: int) -> None:
    """The worker never restarted, so nothing was redelivered: a batch retried after the
    outage is still each event's first processing, not a duplicate."""
    counts = {(dict(labels)["kind"], dict(labels)["outcome"]): v
              for (name, labels), v in samples.items() if name == "fraudstream_events_total"}
    assert counts == {("purchase", "scored"): n_purchases, ("label", "applied"): n_labels}, counts
