"""The ``fraudstream`` command: worker, demo, simulate and model versions."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from stream.cli_offline import register as register_offline
from stream.settings import Settings

cli = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Streaming fraud detection: Kafka in, alerts out, learning as labels come.")
model_cli = typer.Typer(no_args_is_help=True, help="List and roll back dynamic model versions.")
cli.add_typer(model_cli, name="model")
console = Console(stderr=True)


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                    TextColumn("{task.completed:,}/{task.total:,}"), TimeRemainingColumn(),
                    console=console, transient=False)


@cli.command()
def worker(loglevel: str = typer.Option("info", help="Log level of the worker.")) -> None:
    """Run a Faust worker with the FRAUDSTREAM_* settings (Kafka, store, models)."""
    from stream.app import run_worker

    logging.basicConfig(level=loglevel.upper(),
                        format="[%(asctime)s] %(levelname)s %(name)s: %(message)s")
    run_worker(Settings(), loglevel=loglevel)


@cli.command()
def demo(rate: float = typer.Option(300.0, help="Events per second to produce."),
         metrics_port: int = typer.Option(9108, help="Port of the worker's /metrics."),
         days: int = typer.Option(60, help="Simulated days of traffic to stream."),
         seed: int = typer.Option(0, help="Simulator seed.")) -> None:
    """Start a local Kafka broker, a worker and the simulator; show alerts live."""
    from stream.demo import run_demo

    sys.exit(run_demo(rate=rate, metrics_port=metrics_port, days=days, seed=seed,
                      console=Console()))


@cli.command()
def simulate(preset: str = typer.Option("demo", help="handbook, demo or drift."),
             seed: int = typer.Option(0, help="Random seed: the same seed gives the same data."),
             days: int = typer.Option(None, help="Override the preset's number of days."),
             out: Path = typer.Option(None, help="Directory for purchases and labels files."),
             fmt: str = typer.Option("jsonl", "--format", help="jsonl, csv or parquet."),
             to_kafka: bool = typer.Option(False, "--kafka", help="Produce to Kafka instead."),
             rate: float = typer.Option(1000.0, help="Events per second to Kafka (0: no limit)."),
             ) -> None:
    """Generate purchases and delayed labels, to files or to Kafka."""
    from stream import simulator

    if out is None and not to_kafka:
        raise typer.BadParameter("give --out DIR, or --kafka to produce to the broker")
    overrides = {"n_days": days} if days else {}
    try:
        config = simulator.preset(preset, **overrides)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    with _progress() as progress:
        task = progress.add_task(f"simulating {preset}", total=config.n_days)
        sim = simulator.simulate(config, seed=seed,
                                 progress=lambda done, total: progress.update(task, completed=done))
    summary = sim.summary()
    console.print(f"{summary['n_transactions']:,} purchases, {summary['n_frauds']:,} frauds "
                  f"({summary['fraud_rate']:.3%}), {len(sim.labels):,} labels")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        for name, events in (("purchases", sim.purchases), ("labels", sim.labels)):
            path = out / f"{name}.{fmt}"
            simulator.write_events(events, path)
            console.print(f"wrote {path}")
    if to_kafka:
        from stream.connections import ensure_topics
        from stream.producer import produce_events

        settings = Settings()
        ensure_topics(settings)
        total = len(sim.purchases) + len(sim.labels)
        with _progress() as progress:
            task = progress.add_task(f"producing to {settings.kafka_bootstrap}", total=total)
            produce_events(settings, simulator.interleave(sim), rate=rate,
                           on_sent=lambda n: n % 1000 == 0 and progress.update(task, completed=n))
            progress.update(task, completed=total)


def _find(data: Path, name: str) -> Path:
    for suffix in (".parquet", ".jsonl", ".csv"):
        if (data / f"{name}{suffix}").exists():
            return data / f"{name}{suffix}"
    raise typer.BadParameter(f"no {name}.parquet, {name}.jsonl or {name}.csv in {data} "
                             "(write them with: fraudstream simulate --out DIR)")


@cli.command()
def replay(data: Path = typer.Argument(..., help="Directory with purchases.* and labels.*."),
           out: Path = typer.Option(Path("report"), help="Directory for the report."),
           model_kind: str = typer.Option("logreg", help="Dynamic model: logreg, hoeffding, arf."),
           threshold: float = typer.Option(0.5, help="Alert threshold."),
           batch_size: int = typer.Option(500, help="Micro-batch size."),
           k: int = typer.Option(100, help="Cards checked per day for card precision@k."),
           feature_log: Path = typer.Option(None, help="Also write the point-in-time feature "
                                            "log of every labelled purchase (.parquet, .csv, "
                                            ".jsonl) for train-static."),
           static_model: Path = typer.Option(None, help="A static model directory: score with "
                                             "it too (shadow), and blend."),
           champion: str = typer.Option("dynamic", help="dynamic, static or blend."),
           ) -> None:
    """Replay purchases and delayed labels through the pipeline; write a report."""
    import tempfile

    import numpy as np

    from features.store.embedded import EmbeddedStore
    from models.serving import ModelRuntime
    from stream import simulator
    from stream.pipeline import FraudPipeline
    from stream.replay import replay as run_replay
    from stream.report import write_report

    from models.feature_log import snapshot_row, write_feature_log

    purchases = simulator.read_events(_find(data, "purchases"))
    labels = simulator.read_events(_find(data, "labels"))
    rows: list[dict] = []
    collect = (lambda pairs: rows.extend(snapshot_row(s, y) for s, y in pairs)) \
        if feature_log else None
    try:
        runtime = ModelRuntime(kind=model_kind, champion=champion,
                               static_model_dir=str(static_model) if static_model else None)
    except (ValueError, OSError) as exc:
        raise typer.BadParameter(str(exc)) from None
    with tempfile.TemporaryDirectory(prefix="fraudstream-replay-") as tmp:
        pipeline = FraudPipeline(EmbeddedStore(tmp), runtime, threshold=threshold,
                                 on_labelled=collect)
        with _progress() as progress:
            task = progress.add_task("replaying", total=len(purchases) + len(labels))
            result = run_replay(pipeline, purchases, labels, batch_size=batch_size,
                                progress=lambda done, total: progress.update(task, completed=done))
        pipeline.close()
    drift = [{**d, "date": str(np.datetime64(int(d["time"]), "s").astype("datetime64[D]"))}
             for d in pipeline.drift_log]
    metrics = write_report(result, out, models=list(runtime.models()), k=k, drift=drift)
    if feature_log:
        console.print(f"wrote {write_feature_log(rows, feature_log):,} rows to {feature_log}")
    for model, q in metrics["models"].items():
        console.print(f"{model}: ROC AUC {q['roc_auc']}, AP {q['average_precision']}, "
                      f"CP@{k} {q[f'card_precision_at_{k}']}")
    console.print(f"{result.events_per_second:,.0f} events/s; report in {out}/report.html")


@model_cli.command("list")
def model_list() -> None:
    """List the kept versions of the dynamic model; * marks the current one."""
    from models.registry import ModelRegistry

    registry = ModelRegistry(Settings().model_dir, "dynamic")
    current = registry.current_version()
    for v in registry.versions():
        mark = "*" if v.version == current else " "
        Console().print(f"{mark} v{v.version:<5} labels={v.n_labels:<8} kind={v.kind} "
                      f"sha256={v.sha256[:12]}")


@model_cli.command("rollback")
def model_rollback(version: int = typer.Argument(..., help="The version to make current.")) -> None:
    """Make an older version current on every worker (they switch within seconds)."""
    from models.registry import ModelRegistry

    registry = ModelRegistry(Settings().model_dir, "dynamic")
    try:
        info = registry.rollback(version)
    except KeyError as exc:
        raise typer.BadParameter(str(exc)) from None
    console.print(f"dynamic model version {info.version} is current ({info.n_labels} labels)")


register_offline(cli)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
