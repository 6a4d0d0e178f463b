"""The offline feature log: labelled feature snapshots, as the static model trains on them.

Each row holds the features a transaction was scored with (its snapshot, so
the log is point-in-time correct: nothing known only later leaks in) and the
label that came afterwards:

``transaction_id``, ``event_time`` (ISO-8601 text or epoch milliseconds),
``card_hash``, one float column per feature, ``is_fraud`` (boolean or 0/1).

The format follows the file suffix: ``.parquet``, ``.csv`` or ``.jsonl``.
Reading validates every value and fails with a :class:`FeatureLogError` that
names the file, the column and the first bad row (rows count from 1, header
excluded), because a silently coerced NaN would train a model on garbage.

>>> import tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "log.csv"
>>> rows = [{"transaction_id": "t1", "event_time": "2018-04-01T12:00:00.000Z",
...          "card_hash": "c1", "amount": 12.5, "is_fraud": False},
...         {"transaction_id": "t2", "event_time": 1522584060000,
...          "card_hash": "c2", "amount": 900.0, "is_fraud": True}]
>>> write_feature_log(rows, path)
2
>>> log = read_feature_log(path, feature_names=["amount"])
>>> log.X.tolist(), log.y.tolist(), log.event_ts.tolist()
([[12.5], [900.0]], [0, 1], [1522584000.0, 1522584060.0])
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import orjson

from features.schemas import FEATURE_NAMES
from features.schemas import MIN_TIMESTAMP, InvalidEvent, format_time, parse_time

SUFFIXES = (".parquet", ".csv", ".jsonl")
KEY_COLUMNS = ("transaction_id", "event_time", "card_hash")
LABEL_COLUMN = "is_fraud"
_NUMBER_TYPES = frozenset({int, float, bool})
_TRUE_TEXT = frozenset({"true", "1"})
_FALSE_TEXT = frozenset({"false", "0"})


class FeatureLogError(ValueError):
    """A feature log that cannot be read or written, with the reason in the message."""


@dataclass(frozen=True)
class FeatureLog:
    """A feature log in memory, in file order.

    Attributes
    ----------
    X : numpy.ndarray
        ``float32`` matrix, one row per transaction, columns in
        ``feature_names`` order.
    y : numpy.ndarray or None
        ``int8`` labels (1 = fraud), or None for an unlabelled log.
    event_ts : numpy.ndarray
        Event times, ``float64`` seconds since the epoch (UTC).
    transaction_ids, card_hashes : list of str
    feature_names : tuple of str
    path : Path or None
        Where it was read from.
    """

    X: np.ndarray
    y: np.ndarray | None
    event_ts: np.ndarray
    transaction_ids: list[str]
    card_hashes: list[str]
    feature_names: tuple[str, ...]
    path: Path | None = None

    def __len__(self) -> int:
        return len(self.event_ts)

    @property
    def n_frauds(self) -> int:
        """Number of fraud labels (0 for an unlabelled log)."""
        return 0 if self.y is None else int(self.y.sum())


def snapshot_row(snapshot: Any, is_fraud: bool | None = None,
                 feature_names: Sequence[str] = FEATURE_NAMES) -> dict:
    """One feature-log row from a labelled :class:`~features.store.base.Snapshot`.

    ``is_fraud`` defaults to ``snapshot.label``; a snapshot without a label or
    lacking one of ``feature_names`` raises :class:`FeatureLogError`.

    >>> from features.store.base import Snapshot
    >>> snap = Snapshot("t1", 1522584000.0, "u1", "c1", "s1", {"amount": 40.0}, label=True)
    >>> snapshot_row(snap, feature_names=["amount"])
    {'transaction_id': 't1', 'event_time': '2018-04-01T12:00:00.000Z', 'card_hash': 'c1', \
'amount': 40.0, 'is_fraud': True}
    """
    label = snapshot.label if is_fraud is None else is_fraud
    if label is None:
        raise FeatureLogError(f"snapshot {snapshot.transaction_id} has no label yet; only "
                              "labelled snapshots belong in a feature log")
    missing = [f for f in feature_names if f not in snapshot.features]
    if missing:
        raise FeatureLogError(f"snapshot {snapshot.transaction_id} lacks features: "
                              f"{', '.join(missing)}")
    row = {"transaction_id": snapshot.transaction_id,
           "event_time": format_time(snapshot.event_ts), "card_hash": snapshot.card_hash}
    row.update((f, float(snapshot.features[f])) for f in feature_names)
    row[LABEL_COLUMN] = bool(label)
    return row


def check_suffix(path: str | os.PathLike) -> Path:
    """The path, if its suffix is one a feature log or score file can have.

    >>> check_suffix("scores.xlsx")
    Traceback (most recent call last):
    ...
    models.feature_log.FeatureLogError: unsupported feature log suffix '.xlsx' for \
scores.xlsx; use one of .parquet, .csv, .jsonl
    """
    path = Path(path)
    if path.suffix.lower() not in SUFFIXES:
        raise FeatureLogError(f"unsupported feature log suffix {path.suffix or '(none)'!r} for "
                              f"{path}; use one of {', '.join(SUFFIXES)}")
    return path


def _plain(values: Sequence) -> list:
    return values.tolist() if isinstance(values, np.ndarray) else list(values)


def write_columns(columns: Mapping[str, Sequence], path: str | os.PathLike) -> int:
    """Write equal-length columns to a file whose format follows its suffix.

    The file appears whole or not at all (written aside, then renamed), so a
    reader never trains on half a log. NaN and infinities are refused. CSV
    booleans are ``true``/``false``, a None is an empty cell.

    Returns
    -------
    int
        Number of rows written.
    """
    path = check_suffix(path)
    suffix = path.suffix.lower()
    cols = {name: _plain(values) for name, values in columns.items()}
    lengths = {len(v) for v in cols.values()}
    if len(lengths) != 1:
        raise FeatureLogError(f"columns for {path} differ in length: {sorted(lengths)}")
    n = lengths.pop()
    for name, values in cols.items():
        # JSON would turn NaN into null and CSV into text: refuse it here, where it is made.
        bad = next((i for i, v in enumerate(values) if v.__class__ is float and v - v != 0), None)
        if bad is not None:
            raise _bad(path, name, bad, values[bad], "is NaN or infinite")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        if suffix == ".parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            try:
                table = pa.table(cols)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
                raise FeatureLogError(f"cannot write {path}: a column mixes types ({exc})") from None
            pq.write_table(table, tmp)
        elif suffix == ".csv":
            with tmp.open("w", encoding="utf-8", newline="") as fh:
                writer = csv.writer(fh, lineterminator="\n")
                writer.writerow(cols)
                for row in zip(*cols.values()):
                    writer.writerow(["" if v is None else ("true" if v else "false")
                                     if isinstance(v, bool) else v for v in row])
        else:
            names = list(cols)
            with tmp.open("wb") as fh:
                for row in zip(*cols.values()):
                    fh.write(orjson.dumps(dict(zip(names, row))) + b"\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return n


def write_feature_log(rows: Iterable[Mapping[str, Any]], path: str | os.PathLike) -> int:
    """Write feature-log rows (e.g. from :func:`snapshot_row`); returns the row count.

    Columns are the union of the rows' keys in first-seen order.
    """
    rows = list(rows)
    if not rows:
        raise FeatureLogError(f"no rows to write to {path}: an empty feature log cannot train")
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row))
    return write_columns({k: [row.get(k) for row in rows] for k in names}, path)


def _load(path: Path, suffix: str) -> tuple[dict[str, Any], int]:
    """Columns (Arrow arrays or Python lists) and the row count of a file."""
    if suffix == ".jsonl":
        records = []
        with path.open("rb") as fh:
            for line_no, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    record = orjson.loads(line)
                except orjson.JSONDecodeError:
                    raise FeatureLogError(f"{path}: line {line_no} is not valid JSON") from None
                if not isinstance(record, dict):
                    raise FeatureLogError(f"{path}: line {line_no} is not a JSON object")
                records.append(record)
        names: dict[str, None] = {}
        for record in records:
            names.update(dict.fromkeys(record))
        return {k: [r.get(k) for r in records] for k in names}, len(records)
    import pyarrow as pa

    try:
        if suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
        else:
            import pyarrow.csv as pcsv

            # Ids and times stay text (an id like "007" must not become 7); only
            # an empty cell is missing, so "nan" reaches the NaN check by name.
            table = pcsv.read_csv(path, convert_options=pcsv.ConvertOptions(
                column_types={k: pa.string() for k in KEY_COLUMNS}, null_values=[""],
                strings_can_be_null=True))
    except (pa.ArrowInvalid, OSError) as exc:
        raise FeatureLogError(f"{path} is not a readable {suffix[1:]} file: {exc}") from None
    return {name: table.column(name) for name in table.column_names}, table.num_rows


def _bad(path: Path, column: str, row: int, value: Any, why: str,
         hint: str = "") -> FeatureLogError:
    return FeatureLogError(f"{path}: column {column!r} {why} at row {row + 1} "
                           f"(value {value!r}){': ' + hint if hint else ''}")


def _is_number(value: Any, text_numbers: bool) -> bool:
    if type(value) in _NUMBER_TYPES:
        return True
    if text_numbers and isinstance(value, str):
        try:
            float(value)
            return True
        except ValueError:
            return False
    return False


def _floats(path: Path, name: str, column: Any, text_numbers: bool) -> np.ndarray:
    """A finite float64 column, or an error naming the first bad row."""
    values = column
    if not isinstance(column, list):
        import pyarrow as pa

        kind = column.type
        if (pa.types.is_integer(kind) or pa.types.is_floating(kind)
                or pa.types.is_boolean(kind)) and column.null_count == 0:
            values = None
            out = column.to_numpy().astype(np.float64)
        else:
            values = column.to_pylist()
    if values is not None:
        kinds = set(map(type, values))
        try:
            if not kinds <= _NUMBER_TYPES and not (text_numbers and kinds <= _NUMBER_TYPES | {str}):
                raise ValueError
            out = np.array(values, dtype=np.float64)
        except (ValueError, TypeError):
            row = next(i for i, v in enumerate(values) if not _is_number(v, text_numbers))
            why = "has a missing value" if values[row] is None else "is not numeric"
            raise _bad(path, name, row, values[row], why) from None
    finite = np.isfinite(out)
    if not finite.all():
        row = int(np.argmin(finite))
        raise _bad(path, name, row, float(out[row]), "is NaN or infinite")
    return out


def _texts(path: Path, name: str, column: Any) -> list[str]:
    values = column if isinstance(column, list) else column.to_pylist()
    if None in values:
        row = values.index(None)
        raise _bad(path, name, row, None, "has a missing value")
    return [v if isinstance(v, str) else str(v) for v in values]


def _event_seconds(path: Path, column: Any, text_numbers: bool) -> np.ndarray:
    """Seconds since the epoch from ISO-8601 text or epoch milliseconds."""
    if not isinstance(column, list):
        import pyarrow as pa

        kind = column.type
        if column.null_count:
            column = column.to_pylist()
        elif pa.types.is_timestamp(kind):
            micros = column.cast(pa.timestamp("us", tz=kind.tz)).cast(pa.int64())
            out = micros.to_numpy().astype(np.float64) / 1e6
        elif pa.types.is_integer(kind) or pa.types.is_floating(kind):
            out = column.to_numpy().astype(np.float64) / 1000.0
        else:
            column = column.to_pylist()
    if isinstance(column, list):
        out = np.empty(len(column), dtype=np.float64)
        for i, v in enumerate(column):
            if text_numbers and isinstance(v, str):
                try:
                    v = float(v)  # a CSV cell of epoch milliseconds
                except ValueError:
                    pass
            try:
                out[i] = parse_time(v, "event_time")
            except InvalidEvent as exc:
                raise _bad(path, "event_time", i, v, "is not a valid time", exc.detail) from None
    bad = ~np.isfinite(out) | (out < MIN_TIMESTAMP)
    if bad.any():
        row = int(np.argmax(bad))
        raise _bad(path, "event_time", row, float(out[row]) * 1000,
                   "is not a plausible epoch-millisecond time")
    return out


def _labels(path: Path, column: Any, require: bool) -> np.ndarray | None:
    values = column if isinstance(column, list) else column.to_pylist()
    if None in values:
        if require:
            row = values.index(None)
            raise _bad(path, LABEL_COLUMN, row, None, "has a missing label")
        return None  # scoring an unlabelled or partly labelled log: no labels to pass on
    out = np.empty(len(values), dtype=np.int8)
    for i, v in enumerate(values):
        if isinstance(v, str):
            v = True if v.lower() in _TRUE_TEXT else False if v.lower() in _FALSE_TEXT else v
        if type(v) in _NUMBER_TYPES and v in (0, 1):
            out[i] = int(v)
        else:
            raise _bad(path, LABEL_COLUMN, i, v, "must be boolean or 0/1")
    return out


def read_feature_log(path: str | os.PathLike, feature_names: Sequence[str] = FEATURE_NAMES,
                     require_label: bool = True) -> FeatureLog:
    """Read and validate a feature log.

    Parameters
    ----------
    path : path-like
        A ``.parquet``, ``.csv`` or ``.jsonl`` file.
    feature_names : sequence of str
        The feature columns to read, in the order of ``X``'s columns; other
        columns are ignored.
    require_label : bool, default True
        Whether ``is_fraud`` must be present and complete. When False, a
        missing column or any missing label gives ``y = None``.

    Returns
    -------
    FeatureLog

    Raises
    ------
    FeatureLogError
        For a missing or empty file, an unsupported suffix, missing columns
        (all listed), a non-numeric, NaN or infinite feature value, a bad
        event time or a label that is not boolean or 0/1.
    """
    path = check_suffix(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise FeatureLogError(f"feature log {path} does not exist")
    if path.stat().st_size == 0:
        raise FeatureLogError(f"feature log {path} is empty")
    columns, n_rows = _load(path, suffix)
    feature_names = tuple(feature_names)
    required = [*KEY_COLUMNS, *feature_names] + ([LABEL_COLUMN] if require_label else [])
    missing = [c for c in required if c not in columns]
    if missing:
        raise FeatureLogError(f"{path} lacks {len(missing)} required column"
                              f"{'s' if len(missing) > 1 else ''}: {', '.join(missing)}")
    if n_rows == 0:
        raise FeatureLogError(f"feature log {path} has no rows")
    text_numbers = suffix == ".csv"
    X = np.empty((n_rows, len(feature_names)), dtype=np.float32)
    for j, name in enumerate(feature_names):
        X[:, j] = _floats(path, name, columns[name], text_numbers)
    y = None
    if LABEL_COLUMN in columns:
        y = _labels(path, columns[LABEL_COLUMN], require_label)
    return FeatureLog(X=X, y=y, event_ts=_event_seconds(path, columns["event_time"], text_numbers),
                      transaction_ids=_texts(path, "transaction_id", columns["transaction_id"]),
                      card_hashes=_texts(path, "card_hash", columns["card_hash"]),
                      feature_names=feature_names, path=path)



class FeatureLogAppender:
    """Appends labelled snapshots to a JSON Lines feature log as the stream learns.

    Each row is written once its label has been applied, with the features
    the transaction was scored with, so the file is point-in-time correct and
    ready for ``fraudstream train-static``.

    >>> import tempfile
    >>> from features.store.base import Snapshot
    >>> path = Path(tempfile.mkdtemp()) / "features.jsonl"
    >>> log = FeatureLogAppender(path, feature_names=["amount"])
    >>> log.append([(Snapshot("t1", 1522584000.0, "u1", "c1", "s1", {"amount": 4.0}), True)])
    1
    >>> read_feature_log(path, feature_names=["amount"]).y.tolist()
    [1]
    """

    def __init__(self, path: str | os.PathLike, feature_names: Sequence[str] = FEATURE_NAMES):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.feature_names = tuple(feature_names)

    def append(self, labelled: Iterable[tuple[Any, bool]]) -> int:
        """Append ``(snapshot, is_fraud)`` pairs; returns how many rows were written."""
        lines = [orjson.dumps(snapshot_row(snap, is_fraud, self.feature_names)) + b"\n"
                 for snap, is_fraud in labelled]
        if lines:
            with open(self.path, "ab") as fh:
                fh.write(b"".join(lines))
        return len(lines)
