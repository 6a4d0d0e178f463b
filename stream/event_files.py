"""Event files: purchases and labels as JSON Lines, CSV or Parquet, chosen by suffix.

Used by the simulator's output, by replay's input, and by anyone who keeps
events in files.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path


_SUFFIXES = (".jsonl", ".csv", ".parquet")
_INT_FIELDS = frozenset({"n_items", "scenario"})
_FLOAT_FIELDS = frozenset({"price"})
_BOOL_FIELDS = frozenset({"is_fraud"})


def _suffix(path: Path) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in _SUFFIXES:
        raise ValueError(f"unsupported event file suffix {suffix!r} for {path}; use one of {', '.join(_SUFFIXES)}")
    return suffix


def _field_names(events: list[dict]) -> list[str]:
    names: dict[str, None] = {}
    for ev in events:
        for k in ev:
            names.setdefault(k, None)
    return list(names)


def write_events(events: list[dict], path: Path) -> None:
    """Write events to a file whose format follows its suffix.

    Parameters
    ----------
    events : list of dict
        Purchase or label events (one kind per file).
    path : Path
        ``.jsonl`` (one JSON object a line), ``.csv`` (header = union of
        keys; booleans as ``true``/``false``) or ``.parquet``.

    Raises
    ------
    ValueError
        For any other suffix.
    """
    path = Path(path)
    suffix = _suffix(path)
    if suffix == ".jsonl":
        encode = json.JSONEncoder(separators=(",", ":")).encode
        with path.open("w", encoding="utf-8", newline="\n") as fh:
            for lo in range(0, len(events), 65536):
                fh.write("".join([encode(ev) + "\n" for ev in events[lo:lo + 65536]]))
    elif suffix == ".csv":
        names = _field_names(events)
        with path.open("w", encoding="utf-8", newline="") as fh:
            writer = csv.writer(fh, lineterminator="\n")
            writer.writerow(names)
            for ev in events:
                writer.writerow(["" if (v := ev.get(k)) is None else ("true" if v else "false")
                                 if isinstance(v, bool) else v for k in names])
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        names = _field_names(events)
        table = pa.table({k: [ev.get(k) for ev in events] for k in names})
        pq.write_table(table, path)


def _from_csv(key: str, value: str):
    if value == "":
        return None
    if key in _INT_FIELDS:
        return int(value)
    if key in _FLOAT_FIELDS:
        return float(value)
    if key in _BOOL_FIELDS:
        return value.lower() == "true"
    return value


def read_events(path: Path) -> list[dict]:
    """Read events written by :func:`write_events`.

    Parameters
    ----------
    path : Path
        A ``.jsonl``, ``.csv`` or ``.parquet`` file.

    Returns
    -------
    list of dict
        The events; CSV values of ``price``, ``n_items``, ``scenario`` and
        ``is_fraud`` are converted back to float, int and bool.

    Raises
    ------
    ValueError
        For any other suffix.
    """
    path = Path(path)
    suffix = _suffix(path)
    if suffix == ".jsonl":
        decode = json.JSONDecoder().decode
        with path.open(encoding="utf-8") as fh:
            return [decode(line) for line in fh if line.strip()]
    if suffix == ".csv":
        with path.open(encoding="utf-8", newline="") as fh:
            return [{k: _from_csv(k, v) for k, v in row.items()} for row in csv.DictReader(fh)]
    import pyarrow.parquet as pq

    return pq.read_table(path).to_pylist()
