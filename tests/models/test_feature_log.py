"""The offline feature log: round trips in every format and a clear error for each bad input."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features.definitions import FEATURE_NAMES
from features.store.base import Snapshot
from models.feature_log import (FeatureLogError, read_feature_log, snapshot_row, write_columns,
                                write_feature_log)

FORMATS = ("parquet", "csv", "jsonl")
T0 = 1_522_584_000.0  # 2018-04-01T12:00:00Z


def snapshot(i: int, label: bool | None) -> Snapshot:
    features = {name: float(i + k) / 7 for k, name in enumerate(FEATURE_NAMES)}
    return Snapshot(f"tx-{i:03d}", T0 + 60.0 * i, f"u{i}", f"card-{i % 3}", "s1", features,
                    scores={"dynamic": 0.1}, label=label)


def rows(n: int = 6) -> list[dict]:
    return [snapshot_row(snapshot(i, i % 3 == 0)) for i in range(n)]


@pytest.mark.parametrize("fmt", FORMATS)
def test_snapshots_round_trip_through_every_format(tmp_path, fmt):
    path = tmp_path / f"log.{fmt}"
    assert write_feature_log(rows(), path) == 6
    log = read_feature_log(path)
    snaps = [snapshot(i, None) for i in range(6)]
    expected = np.array([[s.features[f] for f in FEATURE_NAMES] for s in snaps], np.float32)
    np.testing.assert_array_equal(log.X, expected)
    assert log.y.tolist() == [1, 0, 0, 1, 0, 0] and log.n_frauds == 2
    assert log.event_ts.tolist() == [s.event_ts for s in snaps]
    assert log.transaction_ids == [s.transaction_id for s in snaps]
    assert log.card_hashes == [s.card_hash for s in snaps]
    assert log.feature_names == FEATURE_NAMES and len(log) == 6


@pytest.mark.parametrize("fmt", FORMATS)
def test_epoch_milliseconds_and_zero_one_labels_are_accepted(tmp_path, fmt):
    path = tmp_path / f"log.{fmt}"
    write_feature_log([{"transaction_id": "007", "event_time": 1522584000250, "card_hash": "1e5",
                        "amount": 3, "is_fraud": 1},
                       {"transaction_id": "008", "event_time": 1522584060000, "card_hash": "c",
                        "amount": 4.5, "is_fraud": 0}], path)
    log = read_feature_log(path, feature_names=["amount"])
    assert log.event_ts.tolist() == [1522584000.25, 1522584060.0]
    assert log.y.tolist() == [1, 0]
    assert log.transaction_ids == ["007", "008"] and log.card_hashes == ["1e5", "c"]


def test_columns_come_in_the_requested_order_and_extra_columns_are_ignored(tmp_path):
    path = tmp_path / "log.csv"
    write_feature_log([{"transaction_id": "t", "event_time": "2018-04-01T12:00:00Z",
                        "card_hash": "c", "a": 1.0, "b": 2.0, "note": "x", "is_fraud": False}], path)
    assert read_feature_log(path, feature_names=["b", "a"]).X.tolist() == [[2.0, 1.0]]


def test_an_unlabelled_log_reads_without_labels_when_they_are_optional(tmp_path):
    path = tmp_path / "log.jsonl"
    unlabelled = [{k: v for k, v in row.items() if k != "is_fraud"} for row in rows(3)]
    write_feature_log(unlabelled, path)
    assert read_feature_log(path, require_label=False).y is None
    with pytest.raises(FeatureLogError, match="lacks 1 required column: is_fraud"):
        read_feature_log(path)


def test_only_labelled_snapshots_make_rows():
    with pytest.raises(FeatureLogError, match="tx-001 has no label"):
        snapshot_row(snapshot(1, None))
    assert snapshot_row(snapshot(1, None), is_fraud=True)["is_fraud"] is True
    with pytest.raises(FeatureLogError, match="lacks features: device_age"):
        snapshot_row(snapshot(1, True), feature_names=["amount", "device_age"])


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(FeatureLogError, match=r"nope\.csv does not exist"):
        read_feature_log(tmp_path / "nope.csv")


@pytest.mark.parametrize("fmt", FORMATS)
def test_an_empty_file_is_reported(tmp_path, fmt):
    path = tmp_path / f"log.{fmt}"
    path.write_bytes(b"")
    with pytest.raises(FeatureLogError, match="is empty"):
        read_feature_log(path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_file_without_rows_is_reported(tmp_path, fmt):
    path = tmp_path / f"log.{fmt}"
    names = ["transaction_id", "event_time", "card_hash", *FEATURE_NAMES, "is_fraud"]
    if fmt == "csv":
        path.write_text(",".join(names) + "\n")
    elif fmt == "jsonl":
        path.write_text("\n\n")
    else:
        pq.write_table(pa.table({n: pa.array([], pa.float64()) for n in names}), path)
    with pytest.raises(FeatureLogError, match="(has no rows|lacks)"):
        read_feature_log(path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_missing_columns_are_all_listed(tmp_path, fmt):
    path = tmp_path / f"log.{fmt}"
    write_feature_log([{k: v for k, v in row.items() if k not in ("amount", "is_night")}
                       for row in rows()], path)
    with pytest.raises(FeatureLogError, match="lacks 2 required columns: amount, is_night$"):
        read_feature_log(path)


def test_text_in_a_feature_column_names_column_and_row(tmp_path):
    path = tmp_path / "log.csv"
    good = rows()
    write_feature_log(good[:2] + [{**good[2], "amount": "12,50 EUR"}] + good[3:], path)
    with pytest.raises(FeatureLogError, match=r"column 'amount' is not numeric at row 3 "
                                              r"\(value '12,50 EUR'\)"):
        read_feature_log(path)


@pytest.mark.parametrize("fmt", ("parquet", "jsonl"))
def test_a_number_written_as_text_is_the_wrong_type(tmp_path, fmt):
    path = tmp_path / f"log.{fmt}"
    write_feature_log([{**row, "amount": str(row["amount"])} for row in rows()], path)
    with pytest.raises(FeatureLogError, match="column 'amount' is not numeric at row 1"):
        read_feature_log(path)


def write_raw(path, rows_: list[dict]) -> None:
    """Write rows without the writer's checks, as another tool might."""
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows_), path)
    elif path.suffix == ".csv":
        names = list(rows_[0])
        path.write_text("\n".join([",".join(names)] + [",".join(str(r[k]) for k in names)
                                                       for r in rows_]) + "\n")
    else:
        path.write_text("".join(json.dumps(r) + "\n" for r in rows_))


@pytest.mark.parametrize("fmt", ("parquet", "csv"))
@pytest.mark.parametrize("bad", [math.nan, -math.inf])
def test_nan_and_inf_feature_values_name_column_and_row(tmp_path, fmt, bad):
    path = tmp_path / f"log.{fmt}"
    good = rows()
    write_raw(path, good[:4] + [{**good[4], "seller_risk_7d": bad}] + good[5:])
    with pytest.raises(FeatureLogError, match="column 'seller_risk_7d' is NaN or infinite at row 5"):
        read_feature_log(path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_missing_feature_value_names_column_and_row(tmp_path, fmt):
    path = tmp_path / f"log.{fmt}"
    good = rows()
    write_feature_log(good[:4] + [{**good[4], "seller_risk_7d": None}] + good[5:], path)
    with pytest.raises(FeatureLogError, match="column 'seller_risk_7d' has a missing value at row 5"):
        read_feature_log(path)


def test_json_nan_is_not_json(tmp_path):
    path = tmp_path / "log.jsonl"
    write_raw(path, [{**row, "amount": math.nan} for row in rows()])
    with pytest.raises(FeatureLogError, match="line 1 is not valid JSON"):
        read_feature_log(path)


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_writer_refuses_nan_rather_than_writing_null(tmp_path, fmt):
    path = tmp_path / f"log.{fmt}"
    with pytest.raises(FeatureLogError, match="column 'amount' is NaN or infinite at row 2"):
        write_feature_log([rows()[0], {**rows()[1], "amount": math.inf}], path)
    assert not path.exists()


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("label", [2, "maybe", 0.5])
def test_labels_must_be_boolean_or_zero_one(tmp_path, fmt, label):
    path = tmp_path / f"log.{fmt}"
    other = "false" if isinstance(label, str) else 0  # a Parquet column has one type
    write_feature_log([{**row, "is_fraud": label if i == 1 else other}
                       for i, row in enumerate(rows())], path)
    with pytest.raises(FeatureLogError, match="column 'is_fraud' must be boolean or 0/1 at row 2"):
        read_feature_log(path)


def test_a_missing_label_is_an_error_only_when_labels_are_required(tmp_path):
    path = tmp_path / "log.parquet"
    write_feature_log([{**row, "is_fraud": None if i == 2 else row["is_fraud"]}
                       for i, row in enumerate(rows())], path)
    with pytest.raises(FeatureLogError, match="'is_fraud' has a missing label at row 3"):
        read_feature_log(path)
    assert read_feature_log(path, require_label=False).y is None


def test_a_bad_event_time_names_the_row(tmp_path):
    path = tmp_path / "log.jsonl"
    write_feature_log([{**row, "event_time": "yesterday" if i == 1 else row["event_time"]}
                       for i, row in enumerate(rows())], path)
    with pytest.raises(FeatureLogError, match="column 'event_time' is not a valid time at row 2 "
                                              "\\(value 'yesterday'\\): .*not ISO-8601"):
        read_feature_log(path)


def test_a_parquet_column_of_mixed_types_cannot_be_written(tmp_path):
    with pytest.raises(FeatureLogError, match="mixes types"):
        write_feature_log([{**row, "is_fraud": "maybe" if i else 0}
                           for i, row in enumerate(rows())], tmp_path / "log.parquet")


def test_unsupported_suffixes_are_refused_for_reading_and_writing(tmp_path):
    path = tmp_path / "log.xlsx"
    path.write_bytes(b"PK")
    for call in (lambda: read_feature_log(path), lambda: write_feature_log(rows(), path)):
        with pytest.raises(FeatureLogError, match="unsupported feature log suffix '.xlsx'"):
            call()


def test_a_corrupt_file_is_reported_not_raised_raw(tmp_path):
    path = tmp_path / "log.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(FeatureLogError, match="not a readable parquet file"):
        read_feature_log(path)
    path = tmp_path / "log.jsonl"
    path.write_text('{"transaction_id": "t"}\n{oops\n')
    with pytest.raises(FeatureLogError, match="line 2 is not valid JSON"):
        read_feature_log(path)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.floats(allow_nan=False, allow_infinity=False, width=32), min_size=1,
                       max_size=5))
def test_any_finite_float32_value_survives_every_format(tmp_path, values):
    for fmt in FORMATS:
        path = tmp_path / f"prop.{fmt}"
        write_columns({"transaction_id": [f"t{i}" for i in range(len(values))],
                       "event_time": [1522584000000] * len(values),
                       "card_hash": ["c"] * len(values), "x": values,
                       "is_fraud": [False] * len(values)}, path)
        np.testing.assert_array_equal(read_feature_log(path, ["x"]).X[:, 0],
                                      np.array(values, np.float32))
