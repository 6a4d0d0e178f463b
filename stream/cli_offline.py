"""Offline commands of ``fraudstream``: train the static model, score a whole file.

:func:`register` adds them to the main command::

    fraudstream train-static LOG --out DIR [--validation-share 0.2] [--epochs 50] [--seed 0]
                             [--hidden-units 64,32] [--dropout 0.2] [--members 1]
                             [--learning-rate 0.001]
    fraudstream score-batch --model DIR IN OUT

A bad input (a malformed feature log, a model that does not fit the current
features, a tampered model file) is reported as one line on stderr with exit
code 2, never a traceback: it is the user's file that needs fixing.
"""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

EXIT_BAD_INPUT = 2
HIDDEN_UNITS, DROPOUT = (64, 32), 0.2  # models.static's defaults (importing it here costs)


def _console() -> Console:
    # Made per call, not at import: it then writes to whatever sys.stderr is now.
    return Console(stderr=True)


class _Bar:
    """A progress bar that appears with its first update, so an early error prints alone."""

    def __init__(self, console: Console):
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                                 TextColumn("{task.completed:,}/{task.total:,}"),
                                 TimeRemainingColumn(), console=console, transient=False)
        self.task = None

    def update(self, done: int, total: int, description: str) -> None:
        if self.task is None:
            self.progress.start()
            self.task = self.progress.add_task(description, total=total)
        self.progress.update(self.task, completed=done, total=total, description=description)

    def __enter__(self) -> "_Bar":
        return self

    def __exit__(self, *exc) -> None:
        self.progress.stop()


def _fail(console: Console, exc: Exception) -> typer.Exit:
    console.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_BAD_INPUT)


def _metric(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def train_static_command(
    log: Path = typer.Argument(..., metavar="LOG",
                               help="Labelled feature log: .parquet, .csv or .jsonl."),
    out: Path = typer.Option(..., "--out", help="Directory to write model.keras and metadata.json to."),
    validation_share: float = typer.Option(0.2, help="Latest share of event time kept for validation."),
    epochs: int = typer.Option(50, min=1, help="Most epochs to train (early stopping may end sooner)."),
    batch_size: int = typer.Option(512, min=1, help="Rows per training step."),
    patience: int = typer.Option(5, min=1, help="Epochs without a better validation PR-AUC before stopping."),
    seed: int = typer.Option(0, help="Random seed: the same seed and log give the same model."),
    hidden_units: str = typer.Option(
        ",".join(map(str, HIDDEN_UNITS)),
        help="Widths of the hidden layers, comma-separated (empty: a logistic regression)."),
    dropout: float = typer.Option(DROPOUT, min=0.0, max=0.95,
                                  help="Dropout after each hidden layer while training."),
    members: int = typer.Option(1, min=1, help="Networks trained (seeds SEED, SEED+1, ...) "
                                "and served as one: their log-odds averaged."),
    learning_rate: float = typer.Option(1e-3, min=0.0, help="Adam's learning rate."),
) -> None:
    """Train the static (Keras) model on a point-in-time feature log."""
    from models.feature_log import FeatureLogError, read_feature_log
    from models.static import StaticModelError, train_static

    console = _console()
    try:
        units = tuple(int(u) for u in hidden_units.replace(" ", "").split(",") if u)
        if any(u < 1 for u in units):
            raise ValueError
    except ValueError:
        raise _fail(console, StaticModelError(
            f"--hidden-units must be positive integers separated by commas, got "
            f"{hidden_units!r}")) from None
    try:
        data = read_feature_log(log)
        console.print(f"{len(data):,} rows, {data.n_frauds:,} frauds "
                      f"({data.n_frauds / len(data):.3%}) from {log}", markup=False,
                      highlight=False, soft_wrap=True)
        with _Bar(console) as bar:
            def on_epoch(done: int, total: int, logs: dict) -> None:
                shown = f", validation AUC {logs['val_auc']:.3f}" if "val_auc" in logs else ""
                bar.update(done, total, f"training: epoch {done}{shown}")

            info = train_static(data, out, validation_share=validation_share, epochs=epochs,
                                batch_size=batch_size, patience=patience, seed=seed,
                                hidden_units=units, dropout=dropout, members=members,
                                learning_rate=learning_rate, progress=on_epoch)
            # early stopping ends before the last epoch: the bar ends where training did
            bar.update(info.epochs_run, info.epochs_run, f"trained {info.epochs_run} epochs")
    except (FeatureLogError, StaticModelError, OSError) as exc:
        raise _fail(console, exc) from None
    window = info.metadata["training_window"]
    train, val = window["train"], window["validation"]
    lines = [
        f"static model version {info.version}: {info.n_rows:,} rows, {info.n_frauds:,} frauds, "
        f"{info.epochs_run} epochs",
        f"train      {train['n_rows']:,} rows ({train['n_frauds']:,} frauds) "
        f"{train['first_event_time']} .. {train['last_event_time']}",
    ]
    if val["n_rows"]:
        lines.append(f"validation {val['n_rows']:,} rows ({val['n_frauds']:,} frauds) "
                     f"{val['first_event_time']} .. {val['last_event_time']}")
    lines += [f"validation ROC AUC {_metric(info.roc_auc)}, "
              f"average precision {_metric(info.average_precision)}",
              f"wrote {info.model_dir}"]
    for line in lines:
        console.print(line, markup=False, highlight=False, soft_wrap=True)


def score_batch_command(
    model: Path = typer.Option(..., "--model", help="Directory of a trained static model."),
    in_path: Path = typer.Argument(..., metavar="IN", help="Feature log to score (labels optional)."),
    out_path: Path = typer.Argument(..., metavar="OUT", help="Scores file: .parquet, .csv or .jsonl."),
) -> None:
    """Score every row of a feature log with the static model (offline inference)."""
    from models.feature_log import FeatureLogError
    from models.static import StaticModel, StaticModelError, score_file

    console = _console()
    try:
        static = StaticModel.load(model)
        with _Bar(console) as bar:
            n = score_file(static, in_path, out_path, progress=lambda done, total: bar.update(
                done, total, f"scoring with version {static.version}"))
    except (FeatureLogError, StaticModelError, OSError) as exc:
        raise _fail(console, exc) from None
    console.print(f"scored {n:,} rows with static model version {static.version}; "
                  f"wrote {out_path}", markup=False, highlight=False, soft_wrap=True)


def register(cli: typer.Typer) -> None:
    """Add ``train-static`` and ``score-batch`` to a Typer app."""
    cli.command("train-static")(train_static_command)
    cli.command("score-batch")(score_batch_command)
