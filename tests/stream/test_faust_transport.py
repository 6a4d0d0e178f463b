"""The worker's Faust transport: installed on the pinned Faust only.

Its behaviour on a real broker is what every worker integration test runs on.
"""

from __future__ import annotations

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
