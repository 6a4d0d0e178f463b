"""Faust's Kafka transport with a cheaper hand-off from the fetcher to the agents,
and the Kafka client on the agents' event loop (:class:`InLoopConsumerThread`).

Faust's consumer hands every fetched message to the agents' channels through
``wait_first(callback(message), suspend_flow.wait())``: two tasks and a
``asyncio.wait`` per message, so that a rebalance can interrupt a hand-off
blocked on a full channel. Measured on this project's broker with an agent that
does nothing but ``take_events``, that costs more than half of Faust's CPU per
event (about 110 µs per event in all, 45 µs without it).

:class:`FastHandoffConsumer` awaits the callback directly while the flow is
running, and keeps Faust's interruptible path while it is suspended (a
rebalance or a shutdown in progress). Everything else is Faust's: read
offsets, gaps in acked offsets, commits every ``broker_commit_every`` acks,
yielding to the loop every 100 messages, the fetching flag of the
diagnostics, and the stop and error handling.

What changes: a hand-off that blocks on a full channel (backpressure) and is
overtaken by a rebalance finishes instead of being abandoned, so an agent may
see an event of a partition it has just lost. Delivery is at least once
anyway and the feature store applies each transaction once.

The override is written against the pinned ``faust-streaming`` version;
:func:`install` refuses any other, so an upgrade falls back to Faust's own
consumer with a warning rather than run untested code.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from importlib import metadata
from time import monotonic

import faust
from faust.sensors import Monitor
from faust.transport.consumer import CONSUMER_FETCHING
from faust.transport.drivers import aiokafka as aiokafka_driver

log = logging.getLogger(__name__)

SUPPORTED_FAUST = "0.15.3"
YIELD_EVERY = 100  # messages handed off between two turns given to the event loop


class FastHandoffConsumer(aiokafka_driver.Consumer):
    """The aiokafka driver's consumer with a direct hand-off while the flow runs."""

    def _new_consumer_thread(self):
        return InLoopConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _drain_messages(self, fetcher) -> None:  # runs as the Fetcher's task
        stopped, fetcher_stopped = self._stopped.is_set, fetcher._stopped.is_set
        suspended = self.suspend_flow.is_set
        read_offsets = self._read_offset
        acks_enabled_for = self.app.topics.acks_enabled_for
        handed = 0
        try:
            while not (stopped() or fetcher_stopped()):
                self.diag.set_flag(CONSUMER_FETCHING)
                batch = self.getmany(timeout=1.0)
                await self.sleep(0)  # getmany may return at once, again and again
                if self.should_stop:
                    continue
                async for tp, message in batch:
                    handed += 1
                    if handed > YIELD_EVERY:
                        handed = 0
                        await asyncio.sleep(0)
                    last_read = read_offsets[tp]
                    offset = message.offset
                    if last_read is not None and offset < last_read:
                        continue  # seen before the last seek: Faust drops it too
                    if last_read and offset - last_read > 1 and acks_enabled_for(message.topic):
                        await self._add_gap(tp, last_read + 1, offset)
                    if self._commit_every is not None and self._n_acked >= self._commit_every:
                        self._n_acked = 0
                        await self.commit()
                    if suspended():
                        await self.wait_first(self.callback(message), self.suspend_flow.wait())
                    else:
                        await self.callback(message)
                    read_offsets[tp] = offset
                self.diag.unset_flag(CONSUMER_FETCHING)
        except self.consumer_stopped_errors:
            if not self.transport.app.should_stop:
                raise
            log.info("broker stopped the consumer while the worker stops")
        except asyncio.CancelledError:
            if not self.transport.app.should_stop:
                raise
        except Exception as exc:
            log.exception("fetching messages failed: %r", exc)
            raise
        finally:
            self.diag.unset_flag(CONSUMER_FETCHING)


class InLoopConsumerThread(aiokafka_driver.AIOKafkaConsumerThread):
    """Faust's aiokafka consumer, run on the worker's own event loop instead of a thread.

    Faust runs the Kafka client in a thread of its own, with its own loop: each
    fetch is requested through a queue to that thread and handed back through
    a future, and the client reads the broker's responses only when it gets
    the interpreter lock from the agents. Measured at 1,000 events/s offered,
    that put 2-4 ms on the median and most of the tail between the broker's
    response and the agent. Here every call that Faust sends to the thread is
    awaited directly, on the loop that runs the agents.

    What changes: a micro-batch being processed delays the reading of the next
    fetch response until it is done (it delayed it before too, through the
    lock), and the client's heartbeats run between batches. A batch takes
    milliseconds (a full one of 4,096 purchases about 0.4 s) against a session
    timeout of 10 s; a step that held the loop longer would now cost the
    worker its partitions, where before it only stalled them.
    """

    def __init__(self, consumer, **kwargs) -> None:
        loop = kwargs.pop("loop", None) or asyncio.get_event_loop_policy().get_event_loop()
        super().__init__(consumer, loop=loop, thread_loop=loop, **kwargs)
        self._serving: asyncio.Future | None = None

    async def start(self) -> None:
        assert not self._thread_started.is_set()
        self._thread_started.set()
        self._thread_running = self.parent_loop.create_future()
        self._serving = asyncio.ensure_future(self._serve())  # what the thread would run
        try:
            await self._thread_running
        finally:
            self._thread_running = None

    async def stop(self) -> None:
        if self._started.is_set():
            await super().stop()
        if self._serving is not None and not self._serving.done():
            await asyncio.wait([self._serving], timeout=self.shutdown_timeout)

    async def on_thread_started(self) -> None:
        pass  # no method queue: calls are awaited directly

    async def _gather_remaining_tasks(self) -> None:
        pass  # the thread's sweep of its loop's tasks would take the agents' with it

    async def call_thread(self, fun, *args, **kwargs):
        result = fun(*args, **kwargs)  # Faust queues plain functions as well as coroutines
        return await result if inspect.isawaitable(result) else result

    async def cast_thread(self, fun, *args, **kwargs) -> None:
        result = fun(*args, **kwargs)
        if inspect.isawaitable(result):
            self.add_future(result)


class LeanMonitor(Monitor):
    """Faust's monitor without its bookkeeping per message and per event.

    Faust's sensor counts every message and event by topic, stream and task
    and times each one (about 5% of a worker's CPU per event, measured); the
    worker's own metrics already count and time what matters. Kept: the time
    the last event of each partition came in, which Faust's check for a stalled
    stream reads, and everything Faust records per commit, rebalance and send.
    """

    def on_message_in(self, tp, offset, message) -> None:
        pass

    def on_stream_event_in(self, tp, offset, stream, event) -> None:
        self.stream_inbound_time[tp] = monotonic()

    def on_stream_event_out(self, tp, offset, stream, event, state=None) -> None:
        pass

    def on_message_out(self, tp, offset, message) -> None:
        pass


class RawSchema(faust.Schema):
    """Bytes keys and values, handed to the agents as they came.

    Faust decodes every message through its serializer registry (codec lookup,
    ``want_bytes``, the type's preparation), which for raw bytes gives back
    the very same objects at about 9% of a worker's CPU per event. The
    compiled decoder here builds the event at once when the key and the value
    are bytes or empty, as Faust's would, and leaves anything else to Faust's.
    """

    def __init__(self) -> None:
        super().__init__(key_type=bytes, value_type=bytes, key_serializer="raw",
                         value_serializer="raw")

    def compile(self, app, **kwargs):
        faust_decode = super().compile(app, **kwargs)
        default_propagate = kwargs.get("default_propagate", False)
        event = app.conf.Event

        async def decode(message, *, propagate: bool = default_propagate):
            key, value = message.key, message.value
            if (key is None or type(key) is bytes) and (value is None or type(value) is bytes):
                return event(app, key, value, message.headers, message)
            return await faust_decode(message, propagate=propagate)

        return decode


def cheaper_ebb_check(app: faust.App) -> None:
    """Faust's conductor waits on every message until the producer's buffer of table
    changelog sends has ebbed; measuring that buffer reads a setting through
    Faust's settings registry each time. The same check, reading the buffer's
    queue directly (this worker has no tables and sends without it)."""
    buffer = app.producer.buffer
    if app.conf.producer_threaded:
        return
    pending, limit, faust_wait = buffer.pending, buffer.max_messages, buffer.wait_until_ebb

    async def wait_until_ebb() -> None:
        if pending.qsize() > limit:
            await faust_wait()

    buffer.wait_until_ebb = wait_until_ebb


class FastHandoffTransport(aiokafka_driver.Transport):
    """The aiokafka transport, with :class:`FastHandoffConsumer`."""

    Consumer = FastHandoffConsumer


def install(app: faust.App) -> bool:
    """Make ``app`` consume through :class:`FastHandoffTransport`, monitor itself with
    :class:`LeanMonitor` and check its producer buffer cheaply; True if it does.

    Call it right after creating the app, before any topic or agent is declared.
    """
    version = metadata.version("faust-streaming")
    if version != SUPPORTED_FAUST:
        log.warning("faust-streaming %s is not the tested %s: using Faust's own consumer",
                    version, SUPPORTED_FAUST)
        return False
    app.transport = FastHandoffTransport(app.conf.broker_consumer, app)
    app.monitor = LeanMonitor()
    cheaper_ebb_check(app)
    return True
