"""The worker's Faust transport: installed on the pinned Faust only.

Its behaviour on a real broker is what every worker integration test runs on;
the consumer's life on the worker's own loop is also checked here on the broker.
"""

from __future__ import annotations

import asyncio
import threading

import faust
import pytest
from faust.transport.drivers import aiokafka as aiokafka_driver

from stream import faust_transport


def _app(tmp_path) -> faust.App:
    return faust.App("t-transport", broker="kafka://127.0.0.1:9", store="memory://",
                     datadir=str(tmp_path), web_enabled=False)


def test_installed_on_the_pinned_faust(tmp_path):
    app = _app(tmp_path)
    assert faust_transport.install(app)
    assert isinstance(app.transport, faust_transport.FastHandoffTransport)
    assert app.transport.Consumer is faust_transport.FastHandoffConsumer
    assert issubclass(faust_transport.FastHandoffConsumer, aiokafka_driver.Consumer)
    assert isinstance(app.monitor, faust_transport.LeanMonitor)


def test_the_lean_monitor_keeps_what_the_stall_check_reads():
    # Faust's aiokafka driver logs a stalled stream from stream_inbound_time.
    from faust.sensors import Monitor
    from faust.types import TP

    monitor = faust_transport.LeanMonitor()
    tp = TP("purchases", 0)
    assert monitor.on_stream_event_in(tp, 5, object(), object()) is None
    assert monitor.stream_inbound_time[tp] > 0
    for hook in ("on_message_in", "on_stream_event_in", "on_stream_event_out", "on_message_out"):
        assert hook in vars(Monitor), hook  # the hooks it overrides are still Faust's


def test_the_consumer_is_served_on_the_apps_loop(tmp_path):
    async def main():
        app = _app(tmp_path)
        faust_transport.install(app)
        served = app.consumer._thread
        assert isinstance(served, faust_transport.InLoopConsumerThread)
        assert served.thread_loop is asyncio.get_running_loop() is served.parent_loop

        async def where(x):
            return x, threading.get_ident(), asyncio.get_running_loop()

        here = (threading.get_ident(), asyncio.get_running_loop())
        assert await served.call_thread(where, 1) == (1, *here)  # awaited, not queued
        assert await served.call_thread(lambda x: x + 1, 1) == 2  # plain functions too
        done = asyncio.Event()

        async def later():
            done.set()

        await served.cast_thread(later)
        await asyncio.wait_for(done.wait(), 5)

    asyncio.run(main())


def test_the_consumer_starts_and_stops_without_a_thread_or_the_loops_other_tasks(
        kafka_bootstrap, tmp_path, unique):
    async def main():
        app = faust.App(f"t-inloop-{unique}", broker=f"kafka://{kafka_bootstrap}",
                        store="memory://", datadir=str(tmp_path), web_enabled=False)
        faust_transport.install(app)
        served = app.consumer._thread
        threads = threading.active_count()
        bystander = asyncio.ensure_future(asyncio.sleep(60))
        await asyncio.wait_for(served.start(), 60)
        assert threading.active_count() == threads  # no consumer thread
        assert served._ensure_consumer()._client.cluster.brokers()  # connected to the broker
        await asyncio.wait_for(served.stop(), 60)
        assert served._serving.done() and served._shutdown.is_set()
        assert not bystander.done()  # a thread's sweep of its loop would have cancelled it
        bystander.cancel()

    asyncio.run(main())


def test_another_faust_keeps_its_own_consumer(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(faust_transport.metadata, "version", lambda name: "9.9.9")
    app = _app(tmp_path)
    assert not faust_transport.install(app)
    assert type(app.transport) is aiokafka_driver.Transport
    assert "not the tested" in caplog.text


def test_the_override_replaces_a_method_faust_still_has():
    # If Faust renamed its drain loop, the override would silently never run.
    from faust.transport.consumer import Consumer

    assert "_drain_messages" in vars(Consumer)
    assert "_drain_messages" in vars(faust_transport.FastHandoffConsumer)


@pytest.mark.parametrize("name", ["callback", "suspend_flow", "_read_offset", "_add_gap",
                                  "_commit_every", "_n_acked", "getmany", "diag"])
def test_the_attributes_it_relies_on_exist(tmp_path, name):
    app = _app(tmp_path)
    faust_transport.install(app)
    consumer = app.consumer
    assert isinstance(consumer, faust_transport.FastHandoffConsumer)
    assert hasattr(consumer, name)


def _record(key, value, headers=()):
    from faust.types import TP
    from faust.types.tuples import Message

    return Message("purchases", 0, 7, 1.5, 0, headers, key, value, None, tp=TP("purchases", 0))


@pytest.mark.parametrize("key,value,headers", [
    (b"k1", b'{"transaction_id": "t1"}', ()),
    (None, b"not json at all", [("h", b"v")]),
    (b"k2", None, ()),
    (None, None, ()),
    (b"", b"", ()),
])
def test_the_raw_schema_builds_the_events_faust_would(tmp_path, key, value, headers):
    app = _app(tmp_path)
    ours = faust_transport.RawSchema().compile(app)
    faust_own = faust.Schema(key_type=bytes, value_type=bytes, key_serializer="raw",
                             value_serializer="raw").compile(app)
    message = _record(key, value, headers)
    got, want = asyncio.run(ours(message)), asyncio.run(faust_own(message))
    assert type(got) is type(want)
    assert (got.key, got.value, got.headers, got.message) == (want.key, want.value, want.headers,
                                                              want.message)
    assert got.key is key and got.value is value  # the very objects, not copies


def test_the_raw_schema_leaves_other_payloads_to_faust(tmp_path):
    app = _app(tmp_path)
    ours = faust_transport.RawSchema().compile(app)
    got = asyncio.run(ours(_record("text key", bytearray(b"v"))))
    assert (got.key, got.value) == (b"text key", b"v")  # converted by Faust's raw codec


def test_the_ebb_check_waits_only_on_a_full_producer_buffer(tmp_path, monkeypatch):
    app = _app(tmp_path)
    assert faust_transport.install(app)
    buffer = app.producer.buffer
    assert "wait_until_ebb" in vars(buffer)  # the instance's own check, not the class's
    flushed = []

    async def flush_atmost(n):
        flushed.append(n)
        while buffer.pending.qsize():
            buffer.pending.get_nowait()
        return n

    monkeypatch.setattr(buffer, "flush_atmost", flush_atmost)
    asyncio.run(buffer.wait_until_ebb())
    assert flushed == []
    for _ in range(buffer.max_messages + 1):
        buffer.pending.put_nowait(object())
    asyncio.run(buffer.wait_until_ebb())
    assert flushed == [buffer.max_messages]
