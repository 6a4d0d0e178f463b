"""The Faust worker: agents on purchases and labels around one FraudPipeline.

Each agent takes micro-batches of whatever has arrived (up to ``batch_size``
events, see :func:`take_available`), hands them to the pipeline, sends what
it returns (alerts, dead letters) and only then lets Faust acknowledge the
events, so an offset is never committed before the state, the snapshots and
the outputs of its event.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
from pathlib import Path

import faust
import mode.loop
from faust.types import TP
from prometheus_client import start_http_server

from features.store import StoreUnavailable, open_store
from models.feature_log import FeatureLogAppender
from models.registry import ModelRegistry
from models.serving import ModelRuntime
from stream import faust_transport
from stream.connections import ensure_topics, faust_credentials
from stream.metrics import Metrics
from stream.pipeline import BatchResult, FraudPipeline, Message
from stream.settings import Settings

log = logging.getLogger(__name__)

GC_YOUNG_THRESHOLD = 10_000  # allocations between two young collections (Python's default: 700)


def build_pipeline(settings: Settings, metrics: Metrics | None = None) -> FraudPipeline:
    """The pipeline a worker runs, from settings."""
    store = open_store(settings.store_url, settings.store_config())
    registry = ModelRegistry(settings.model_dir, "dynamic")
    runtime = ModelRuntime(registry, kind=settings.model_kind, fraud_weight=settings.fraud_weight,
                           publish_every_labels=settings.publish_every_labels,
                           publish_every_seconds=settings.publish_every_seconds,
                           refresh_seconds=settings.refresh_model_seconds,
                           warmup_frauds=settings.warmup_frauds,
                           warmup_legit=settings.warmup_legit,
                           static_model_dir=settings.static_model_dir or None,
                           champion=settings.champion, blend_weight=settings.blend_weight,
                           blend=settings.blend, blend_floor=settings.blend_floor)
    on_labelled = None
    if settings.feature_log:
        on_labelled = FeatureLogAppender(settings.feature_log).append
    return FraudPipeline(store, runtime, threshold=settings.alert_threshold,
                         metrics=metrics or Metrics(), max_event_bytes=settings.max_event_bytes,
                         on_labelled=on_labelled)


def _message(event) -> Message:
    m = event.message
    return Message(m.value, m.key, m.topic, m.partition, m.offset, m.timestamp)


async def take_available(stream, max_events: int):
    """Micro-batches of the events that have arrived, acknowledged once processed.

    A batch closes when ``max_events`` are in it or when no further event is
    waiting in the agent's channel: at a low rate each event goes through at
    once (no waiting for a batch to fill or a timer to fire), under load the
    batches grow by themselves. Faust's ``take_events`` instead waits for a
    full batch or its timeout, which puts up to that timeout on every event's
    latency, and acknowledges a batch even when its processing raised.

    Events are acknowledged only after the consumer of the generator asks for
    the next batch, so a batch whose processing fails is never acknowledged.
    """
    queue = stream.channel.queue
    stream.enable_acks = False  # acknowledged here, after the batch
    batch: list = []
    async for event in stream.events():
        batch.append(event)
        if len(batch) >= max_events or queue.empty():
            yield batch
            for done in batch:
                await stream.ack(done)
            batch = []


def settle_heap() -> None:
    """Keep the garbage collector's full passes short, once the worker has started.

    Everything alive at this point (the libraries, Faust's services, the
    store's tables, the models) lives as long as the worker. A full pass of
    the cyclic collector walks all of it: 100-150 ms measured, a stall on
    every event in flight that came once every few seconds under load.
    Freezing it leaves the collector the objects made since, and a larger
    first-generation threshold makes its young passes rarer.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
    log.info("%d long-lived objects frozen out of the garbage collector's full passes",
             gc.get_freeze_count())


def create_app(settings: Settings, pipeline: FraudPipeline) -> faust.App:
    """A Faust app whose agents feed ``pipeline``."""
    app = faust.App(
        settings.app_id,
        broker=[f"kafka://{h}" for h in settings.kafka_bootstrap.split(",")],
        broker_credentials=faust_credentials(settings),
        store="memory://",
        datadir=str(Path(settings.data_dir) / "faust"),
        key_serializer="raw",
        value_serializer="raw",
        web_enabled=False,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=settings.session_timeout_seconds,
        broker_heartbeat_interval=settings.heartbeat_seconds,
        broker_commit_interval=1.0,
        # Alerts leave as soon as they are handed over: with a 1 ms linger they took
        # 3.0 ms at the median from the send to a reader, 1.3 ms without (traced at
        # 1,000 events/s); under load, batches still form while a request is in flight.
        producer_linger_ms=0,
        producer_max_request_size=settings.kafka_max_message_bytes,
        consumer_max_fetch_size=settings.kafka_max_message_bytes,
        stream_buffer_maxsize=max(4096, 4 * settings.batch_size),
        topic_partitions=settings.purchases_partitions,
        # Faust's compiled stream iterator takes the events already waiting in an
        # agent's channel without a round through the channel's async get (off by
        # default in Faust only because the repaired path is new; its pure-Python
        # iterator has always done so).
        cython_optimizations=True,
    )
    faust_transport.install(app)
    raw = dict(schema=faust_transport.RawSchema())
    purchases = app.topic(settings.topic_purchases,
                          partitions=settings.purchases_partitions, **raw)
    labels = app.topic(settings.topic_labels, partitions=1, **raw)
    alerts = app.topic(settings.topic_alerts, partitions=settings.alerts_partitions, **raw)
    purchases_dlq = app.topic(settings.topic_purchases_dlq, partitions=1, **raw)
    labels_dlq = app.topic(settings.topic_labels_dlq, partitions=1, **raw)

    async def process(step, events) -> BatchResult:
        """Run one micro-batch through the pipeline, retrying while the store is down.

        Nothing of the batch is acknowledged until this returns, so Kafka
        redelivers it after a crash; the store's idempotence makes retries safe.
        """
        messages = [_message(e) for e in events]
        delay = 0.5
        while True:
            try:
                result = step(messages)
                pipeline.metrics.store_up.set(1)
                return result
            except StoreUnavailable as exc:
                pipeline.metrics.store_up.set(0)
                pipeline.metrics.store_errors.inc()
                first, last = messages[0], messages[-1]
                log.warning("feature store unavailable (%s); %s[%d] offsets %d..%d wait, "
                            "retrying in %.1fs", exc, first.topic, first.partition,
                            first.offset, last.offset, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    processed: dict[TP, int] = {}  # the last offset processed, per partition

    def set_lag(tp: TP, highwater: int | None) -> None:
        if highwater is not None and tp in processed:
            metrics = pipeline.metrics
            metrics.child(metrics.consumer_lag, tp.topic, str(tp.partition)).set(
                max(0, highwater - processed[tp] - 1))

    def report_lag(events) -> None:
        """Consumer lag of the partitions of a batch, from the fetcher's cached highwaters."""
        for e in events:
            tp = e.message.tp
            processed[tp] = max(processed.get(tp, -1), e.message.offset)
        for tp in {e.message.tp for e in events}:
            try:
                set_lag(tp, app.consumer.highwater(tp))
            except (AssertionError, KeyError, AttributeError):  # not (yet) known for tp
                continue

    @app.timer(interval=settings.lag_refresh_seconds)
    async def refresh_lag() -> None:
        """The lag again from the broker's end offsets: while no batch completes (a store
        outage, a slow batch) the cached highwaters stand still and the lag would too."""
        tps = [tp for tp in app.consumer.assignment() if tp in processed]
        if not tps:
            return
        try:
            ends = await app.consumer.highwaters(*tps)
        except Exception as exc:  # the broker is away: keep the last figures
            log.debug("end offsets unavailable: %r", exc)
            return
        for tp, end in ends.items():
            set_lag(tp, end)

    async def send_outputs(result: BatchResult, dlq) -> None:
        """Hand a batch's alerts and dead letters to the producer.

        The values are bytes already, so they go to Faust's producer directly:
        ``Topic.send`` would wrap each one in a message future with callbacks,
        which cost more than the rest of the send (about 100 µs an alert).
        """
        producer = app.producer
        if result.alerts:
            topic = alerts.get_topic_name()
            for key, value in result.alerts:
                await producer.send(topic, key, value, partition=None, timestamp=None,
                                    headers=None)
        for dead in result.dead_letters:
            await producer.send(dlq.get_topic_name(), dead.message.key, dead.message.value,
                                partition=None, timestamp=None, headers=dead.headers())

    def fail_stop(events) -> None:
        """An unexpected error: exit at once without acknowledging the batch, so Kafka
        redelivers it to the restarted worker."""
        m = events[0].message
        log.critical("micro-batch %s[%d] from offset %d failed; exiting without committing it",
                     m.topic, m.partition, m.offset, exc_info=True)
        logging.shutdown()
        os._exit(70)

    @app.timer(interval=1.0)
    async def tick() -> None:
        report = pipeline.tick()
        if report is not None:  # tens of milliseconds of sorting: not on the agents' loop
            await asyncio.get_running_loop().run_in_executor(None, report)

    @app.task
    async def settle_once_started() -> None:
        await asyncio.sleep(1.0)  # Faust's services, the consumer and the agents are up
        settle_heap()

    @app.agent(purchases)
    async def score_purchases(stream):
        async for events in take_available(stream, settings.batch_size):
            try:
                await send_outputs(await process(pipeline.process_purchases, events),
                                   purchases_dlq)
            except Exception:
                fail_stop(events)
            report_lag(events)

    @app.agent(labels)
    async def learn_from_labels(stream):
        async for events in take_available(stream, settings.batch_size):
            try:
                await send_outputs(await process(pipeline.process_labels, events), labels_dlq)
            except Exception:
                fail_stop(events)
            report_lag(events)

    return app


def run_worker(settings: Settings, loglevel: str = "info") -> None:
    """Run one worker until it is stopped (SIGINT or SIGTERM)."""
    Path(settings.model_dir).mkdir(parents=True, exist_ok=True)
    # uvloop runs Faust's per-message machinery (a few tasks and callbacks per
    # event) about a quarter faster than asyncio's own loop. It must be chosen
    # before the app and the worker create their loop.
    mode.loop.use("uvloop")
    ensure_topics(settings)
    metrics = Metrics()
    start_http_server(settings.metrics_port, addr="0.0.0.0", registry=metrics.registry)
    pipeline = build_pipeline(settings, metrics)
    app = create_app(settings, pipeline)
    log.info("worker %s: kafka %s, store %s, metrics on :%d", settings.app_id,
             settings.kafka_bootstrap, settings.store_url, settings.metrics_port)
    worker = faust.Worker(app, loglevel=loglevel, redirect_stdouts=False)
    try:
        worker.execute_from_commandline()
    finally:
        pipeline.close()
