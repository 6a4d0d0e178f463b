"""Fixtures shared by every test package: one real Kafka broker per test session."""

from __future__ import annotations

import os
import uuid

import pytest


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory):
    """A real single-node Kafka (KRaft) broker on 127.0.0.1 for the whole session.

    ``FRAUDSTREAM_TEST_KAFKA`` points the tests at a broker that already runs
    (as ``.ci/run`` may do); otherwise the project's launcher starts one.
    """
    existing = os.environ.get("FRAUDSTREAM_TEST_KAFKA")
    if existing:
        yield existing
        return
    from deploy.kafka.launcher import KafkaBroker

    broker = KafkaBroker(tmp_path_factory.mktemp("kafka"))
    try:
        yield broker.start(timeout=120)
    finally:
        broker.stop()


@pytest.fixture
def unique():
    """A short unique suffix for topic, group and app names."""
    return uuid.uuid4().hex[:8]
