"""``fraudstream demo``: a broker, a worker, the simulator and alerts on screen.

Everything runs on this machine and is gone after Ctrl-C: the broker and the
worker are child processes in their own process groups, stopped (and killed
if they linger) on the way out, and their data lives in a temporary folder.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import orjson
from rich.console import Console

from stream.connections import confluent_config, ensure_topics
from stream.producer import produce_events
from stream.settings import Settings


def start_worker(settings: Settings, log_path: Path) -> subprocess.Popen:
    """A worker process with these settings, logging to ``log_path``."""
    env = dict(os.environ)
    for name, value in settings.model_dump().items():
        if value is not None:
            secret = getattr(value, "get_secret_value", None)
            env[f"FRAUDSTREAM_{name.upper()}"] = str(secret() if secret else value)
    log = open(log_path, "ab")
    return subprocess.Popen([sys.executable, "-m", "stream.cli", "worker"], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def stop_process(proc: subprocess.Popen, timeout: float = 20.0) -> None:
    """SIGTERM the process group, then SIGKILL it if it has not exited in time."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)
    except ProcessLookupError:
        pass


def _show_alert(console: Console, alert: dict, truth: dict[str, int]) -> None:
    scenario = truth.get(alert["transaction_id"])
    verdict = ("[red]fraud[/]" if scenario else "[green]legit[/]") if scenario is not None else "?"
    reasons = ", ".join(f"{r['feature']}={r['value']:g}" for r in alert["reasons"])
    console.print(f"[bold]ALERT[/] {alert['event_time']} {alert['transaction_id']:<14} "
                  f"score={alert['score']:.3f} v{alert['model']['version']} "
                  f"price={alert['price']:>8.2f} truth={verdict}  {reasons}")


def run_demo(rate: float = 300.0, metrics_port: int = 9108, days: int = 60, seed: int = 0,
             console: Console | None = None) -> int:
    from confluent_kafka import Consumer

    from deploy.kafka.launcher import KafkaBroker
    from stream import simulator

    console = console or Console()
    workdir = Path(tempfile.mkdtemp(prefix="fraudstream-demo-"))
    broker = KafkaBroker(workdir / "kafka")
    worker = None
    stop = threading.Event()
    try:
        console.print("starting Kafka (first run downloads the broker from Maven Central)...")
        bootstrap = broker.start()
        settings = Settings(kafka_bootstrap=bootstrap, data_dir=str(workdir),
                            metrics_port=metrics_port,
                            purchases_partitions=1, alerts_partitions=1,
                            publish_every_seconds=5.0, session_timeout_seconds=6.0,
                            heartbeat_seconds=1.0)
        ensure_topics(settings)
        worker = start_worker(settings, workdir / "worker.log")
        console.print(f"kafka at {bootstrap}; worker pid {worker.pid} (log {workdir}/worker.log);"
                      f" metrics at http://127.0.0.1:{metrics_port}/metrics")

        # Shorter label delays than the preset's: a demo day lasts seconds, and
        # a viewer should see the model learn within the first minute.
        config = simulator.preset("demo", n_days=days, fraud_delay_median_hours=12.0,
                                  legit_delay_days=(0.5, 3.0))
        sim = simulator.simulate(config, seed=seed)
        truth = {lb["transaction_id"]: lb.get("scenario", int(lb["is_fraud"]))
                 for lb in sim.labels}
        sent = [0]
        producer = threading.Thread(
            target=produce_events, daemon=True,
            args=(settings, simulator.interleave(sim)),
            kwargs=dict(rate=rate, stop=stop, on_sent=lambda n: sent.__setitem__(0, n)))
        producer.start()
        console.print(f"producing {len(sim.purchases):,} purchases and {len(sim.labels):,} "
                      f"labels at {rate:g} events/s; the model learns as labels arrive. "
                      "Ctrl-C to stop.")

        consumer = Consumer(confluent_config(settings, **{
            "group.id": f"demo-{os.getpid()}", "auto.offset.reset": "earliest"}))
        consumer.subscribe([settings.topic_alerts])
        n_alerts = n_true = 0
        last_status = time.monotonic()
        try:
            while True:
                msg = consumer.poll(0.5)
                if worker.poll() is not None:
                    console.print(f"[red]the worker stopped (exit {worker.returncode}); see "
                                  f"{workdir}/worker.log[/]")
                    return 1
                if msg is not None and not msg.error():
                    alert = orjson.loads(msg.value())
                    n_alerts += 1
                    n_true += bool(truth.get(alert["transaction_id"]))
                    _show_alert(console, alert, truth)
                if time.monotonic() - last_status > 10:
                    last_status = time.monotonic()
                    console.print(f"[dim]{sent[0]:,} events produced, {n_alerts:,} alerts, "
                                  f"{n_true:,} of them true frauds[/]")
        finally:
            consumer.close()
    except KeyboardInterrupt:
        console.print("stopping...")
        return 0
    finally:
        stop.set()
        if worker is not None:
            stop_process(worker)
        broker.stop()
        shutil.rmtree(workdir / "kafka" / "data", ignore_errors=True)
        console.print(f"stopped; the worker's state and logs are in {workdir}")
