"""The static model: training from every log format, fast scoring equal to Keras, clear refusals."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer import Typer
from typer.testing import CliRunner

from features.definitions import FEATURE_NAMES
from features.schemas import format_time
from models.feature_log import FeatureLog, read_feature_log, write_feature_log
from models.quality import roc_auc
from models.static import (FeatureMismatch, StaticModel, StaticModelError, TamperedModel,
                           score_file, train_static)
from stream.cli_offline import register

ROOT = Path(__file__).resolve().parents[2]
T0 = 1_522_584_000.0
FAST = dict(epochs=12, batch_size=32, learning_rate=0.01, patience=12)


def synthetic_rows(n: int = 400, seed: int = 0) -> list[dict]:
    """Uniform features; fraud exactly when card velocity plus user fraud ratio > 1.5 (~12%)."""
    rng = np.random.default_rng(seed)
    X = rng.uniform(0.0, 1.0, (n, len(FEATURE_NAMES)))
    X[:, FEATURE_NAMES.index("amount")] = rng.lognormal(3.0, 1.0, n)  # heavy-tailed, as real
    fraud = X[:, FEATURE_NAMES.index("card_recent_velocity")] \
        + X[:, FEATURE_NAMES.index("user_fraud_ratio")] > 1.5
    return [{"transaction_id": f"tx-{i:04d}", "event_time": format_time(T0 + 600.0 * i),
             "card_hash": f"card-{i % 17}", **dict(zip(FEATURE_NAMES, X[i].tolist())),
             "is_fraud": bool(fraud[i])} for i in range(n)]


def as_log(rows: list[dict], names=FEATURE_NAMES) -> FeatureLog:
    return FeatureLog(np.array([[r[f] for f in names] for r in rows], np.float32),
                      np.array([r["is_fraud"] for r in rows], np.int8),
                      T0 + 600.0 * np.arange(len(rows)), [r["transaction_id"] for r in rows],
                      [r["card_hash"] for r in rows], tuple(names))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One model trained on the synthetic pattern, shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("static") / "model"
    log = as_log(synthetic_rows())
    return train_static(log, out, seed=0, **FAST), log


@pytest.fixture
def app() -> Typer:
    cli = Typer()
    register(cli)
    return cli


def invoke(app: Typer, *args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *fragments: str) -> None:
    """Exit code 2 and the output ends in one ``error:`` line naming the problem."""
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("error: "), result.output
    assert sum(line.startswith("error") for line in lines) == 1
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[-1], lines[-1]


def test_importing_the_static_model_does_not_import_tensorflow():
    code = ("import models.static, sys; "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


@pytest.mark.parametrize("fmt", ("parquet", "csv", "jsonl"))
def test_train_static_from_each_format_gives_a_model_that_loads_and_scores(tmp_path, app, fmt):
    path = tmp_path / f"log.{fmt}"
    write_feature_log(synthetic_rows(200, seed=1), path)
    result = invoke(app, "train-static", path, "--out", tmp_path / "m", "--epochs", "2",
                    "--seed", "3")
    assert result.exit_code == 0, result.output
    assert "validation ROC AUC" in result.output and "wrote" in result.output
    model = StaticModel.load(tmp_path / "m")
    scores = model.score_matrix(read_feature_log(path).X)
    assert scores.shape == (200,) and ((scores >= 0) & (scores <= 1)).all()
    meta = json.loads((tmp_path / "m" / "metadata.json").read_text())
    assert meta["features"] == list(FEATURE_NAMES) and meta["n_rows"] == 200
    assert meta["training"]["seed"] == 3 and model.version == meta["version"]


def test_train_static_takes_the_network_shape_dropout_and_members(tmp_path, app):
    path = tmp_path / "log.csv"
    write_feature_log(synthetic_rows(200, seed=1), path)
    result = invoke(app, "train-static", path, "--out", tmp_path / "m", "--epochs", "2",
                    "--hidden-units", "8,4", "--dropout", "0", "--members", "2",
                    "--learning-rate", "0.01")
    assert result.exit_code == 0, result.output
    training = json.loads((tmp_path / "m" / "metadata.json").read_text())["training"]
    assert training["hidden_units"] == [8, 4] and training["dropout"] == 0.0
    assert training["members"] == 2 and training["learning_rate"] == 0.01
    model = StaticModel.load(tmp_path / "m")  # the two members side by side, served as one
    assert [w.shape for w, _, _ in model.layers] == [(len(FEATURE_NAMES), 16), (16, 8), (8, 1)]
    assert_one_line_error(invoke(app, "train-static", path, "--out", tmp_path / "x",
                                 "--hidden-units", "8,wide"), "--hidden-units must be")


def test_the_command_line_defaults_are_the_static_models():
    import models.static
    import stream.cli_offline

    assert stream.cli_offline.HIDDEN_UNITS == models.static.HIDDEN_UNITS
    assert stream.cli_offline.DROPOUT == models.static.DROPOUT


def test_numpy_scores_equal_the_keras_network(trained):
    info, log = trained
    model = StaticModel.load(info.model_dir)
    rng = np.random.default_rng(5)
    X = np.vstack([log.X, rng.uniform(-1.0, 50.0, (77, len(FEATURE_NAMES))).astype(np.float32)])
    keras_scores = model.keras_model(model.prepare(X)).numpy().ravel()
    np.testing.assert_allclose(model.score_matrix(X), keras_scores, atol=1e-5, rtol=0)
    dicts = [dict(zip(FEATURE_NAMES, row.tolist())) for row in X[:9]]
    np.testing.assert_allclose(model.score_dicts(dicts), keras_scores[:9], atol=1e-5, rtol=0)
    assert model.score(dicts[0]) == pytest.approx(keras_scores[0], abs=1e-5)


def test_features_as_the_store_packs_them_score_as_their_dicts(trained):
    from features.columnar import REFERENCE_ORDER
    from features.packed import VALUES, PackedFeatures

    model = StaticModel.load(trained[0].model_dir)
    rng = np.random.default_rng(6)
    dicts = [dict(zip(REFERENCE_ORDER, rng.uniform(0.0, 50.0, len(REFERENCE_ORDER)).tolist()))
             for _ in range(20)]
    packed = [PackedFeatures(VALUES.pack(*d.values())) for d in dicts]
    assert model.score_dicts(packed) == model.score_dicts(dicts)


def test_the_model_learns_a_separable_pattern_and_validates_on_the_latest_time(trained):
    info, log = trained
    assert info.roc_auc > 0.9 and info.average_precision > 0.5
    window = info.metadata["training_window"]
    assert window["train"]["last_event_time"] < window["validation"]["first_event_time"]
    assert info.n_validation == pytest.approx(0.2 * len(log), abs=2)
    model = StaticModel.load(info.model_dir)
    val = slice(info.n_train, None)
    assert roc_auc(log.y[val], model.score_matrix(log.X[val])) == pytest.approx(info.roc_auc,
                                                                                abs=1e-4)
    # rows weigh the same: scores are probabilities near the true fraud rate
    assert model.score_matrix(log.X).mean() == pytest.approx(log.y.mean(), abs=0.08)
    assert info.metadata["training"]["class_weight"] == {"0": 1.0, "1": 1.0}


def test_balanced_classes_weigh_frauds_up_and_shift_the_output_back(tmp_path):
    log = as_log(synthetic_rows())
    info = train_static(log, tmp_path / "m", seed=0, balanced=True, **FAST)
    training = info.metadata["training"]
    n_train_frauds = int(log.y[:info.n_train].sum())
    ratio = (info.n_train - n_train_frauds) / n_train_frauds
    assert training["class_weight"]["1"] / training["class_weight"]["0"] == pytest.approx(ratio)
    assert training["output_bias_shift"] == pytest.approx(-np.log(ratio))
    scores = StaticModel.load(info.model_dir).score_matrix(log.X)
    assert scores.mean() == pytest.approx(log.y.mean(), abs=0.08)  # not the weighted rate
    assert info.roc_auc > 0.9


def test_the_network_shape_and_dropout_are_settings(tmp_path):
    log = as_log(synthetic_rows(200))
    info = train_static(log, tmp_path / "m", seed=0, hidden_units=(8,), dropout=0.0, epochs=2,
                        batch_size=32)
    model = StaticModel.load(info.model_dir)
    assert [w.shape for w, _, _ in model.layers] == [(len(FEATURE_NAMES), 8), (8, 1)]
    assert not any(type(layer).__name__ == "Dropout" for layer in model.keras_model.layers)
    assert info.metadata["training"]["hidden_units"] == [8]


def test_preprocessing_comes_from_the_training_part_only(trained):
    info, log = trained
    mean = info.metadata["preprocessing"]["mean"]
    train = log.X[:info.n_train, FEATURE_NAMES.index("user_tenure")]
    assert mean["user_tenure"] == pytest.approx(float(train.mean()), abs=1e-6)
    assert mean["amount"] == pytest.approx(
        float(np.log1p(log.X[:info.n_train, FEATURE_NAMES.index("amount")]).mean()), abs=1e-5)


def test_the_same_seed_gives_the_same_model(tmp_path):
    log = as_log(synthetic_rows(150, seed=2))
    first = train_static(log, tmp_path / "a", seed=7, epochs=1, batch_size=32)
    second = train_static(log, tmp_path / "b", seed=7, epochs=1, batch_size=32)
    a = StaticModel.load(first.model_dir).score_matrix(log.X)
    np.testing.assert_allclose(StaticModel.load(second.model_dir).score_matrix(log.X), a,
                               atol=1e-6)


def test_a_tampered_model_file_is_refused(trained, tmp_path, app):
    info, _ = trained
    copy = shutil.copytree(info.model_dir, tmp_path / "copy")
    with open(copy / "model.keras", "ab") as fh:
        fh.write(b"\0")
    with pytest.raises(TamperedModel, match="does not match the SHA-256"):
        StaticModel.load(copy)
    write_feature_log(synthetic_rows(5), tmp_path / "in.csv")
    result = invoke(app, "score-batch", "--model", copy, tmp_path / "in.csv", tmp_path / "o.csv")
    assert_one_line_error(result, "does not match the SHA-256", "refusing to load it")


def test_a_model_with_other_features_is_refused_naming_them(trained, tmp_path, app):
    info, _ = trained
    with pytest.raises(FeatureMismatch, match="missing from the model: device_age$"):
        StaticModel.load(info.model_dir, feature_names=(*FEATURE_NAMES, "device_age"))
    copy = shutil.copytree(info.model_dir, tmp_path / "copy")
    meta = json.loads((copy / "metadata.json").read_text())
    meta["features"] = ["amount_eur" if f == "amount" else f for f in meta["features"]]
    for stat in ("mean", "std"):
        meta["preprocessing"][stat]["amount_eur"] = meta["preprocessing"][stat].pop("amount")
    (copy / "metadata.json").write_text(json.dumps(meta))
    write_feature_log(synthetic_rows(5), tmp_path / "in.csv")
    result = invoke(app, "score-batch", "--model", copy, tmp_path / "in.csv", tmp_path / "o.csv")
    assert_one_line_error(result, "missing from the model: amount", "not requested: amount_eur")
    model, row = StaticModel.load(info.model_dir), synthetic_rows(1)[0]
    with pytest.raises(FeatureMismatch, match="event 1 lacks features: amount"):
        model.score_dicts([row, {k: v for k, v in row.items() if k != "amount"}])


@pytest.mark.parametrize("fmt", ("parquet", "csv", "jsonl"))
def test_score_batch_writes_a_score_per_transaction(trained, tmp_path, app, fmt):
    info, _ = trained
    rows = synthetic_rows(30, seed=4)
    write_feature_log(rows, tmp_path / "in.jsonl")
    out = tmp_path / f"scores.{fmt}"
    result = invoke(app, "score-batch", "--model", info.model_dir, tmp_path / "in.jsonl", out)
    assert result.exit_code == 0, result.output
    assert "scored 30 rows" in result.output
    from stream.simulator import read_events

    scored = read_events(out)
    expected = StaticModel.load(info.model_dir).score_matrix(read_feature_log(tmp_path / "in.jsonl").X)
    assert [s["transaction_id"] for s in scored] == [r["transaction_id"] for r in rows]
    assert [s["event_time"] for s in scored] == [r["event_time"] for r in rows]
    np.testing.assert_allclose([float(s["score"]) for s in scored], expected, rtol=1e-12)
    assert [s["is_fraud"] in (True, "true") for s in scored] == [r["is_fraud"] for r in rows]


def test_scoring_an_unlabelled_log_writes_no_labels(trained, tmp_path):
    info, _ = trained
    rows = [{k: v for k, v in r.items() if k != "is_fraud"} for r in synthetic_rows(7)]
    write_feature_log(rows, tmp_path / "in.parquet")
    calls = []
    n = score_file(StaticModel.load(info.model_dir), tmp_path / "in.parquet",
                   tmp_path / "out.jsonl", progress=lambda done, total: calls.append((done, total)),
                   batch_size=3)
    first = json.loads((tmp_path / "out.jsonl").read_text().splitlines()[0])
    assert n == 7 and sorted(first) == ["event_time", "score", "transaction_id"]
    assert calls == [(3, 7), (6, 7), (7, 7)]


def test_bad_inputs_exit_2_with_one_clear_line(trained, tmp_path, app):
    info, _ = trained
    rows = synthetic_rows(20)
    write_feature_log([{k: v for k, v in r.items() if k != "seller_risk_1d"} for r in rows],
                      tmp_path / "nocol.csv")
    assert_one_line_error(invoke(app, "train-static", tmp_path / "nocol.csv", "--out", tmp_path),
                          "lacks 1 required column: seller_risk_1d")
    assert_one_line_error(invoke(app, "score-batch", "--model", info.model_dir,
                                 tmp_path / "nocol.csv", tmp_path / "o.csv"),
                          "lacks 1 required column: seller_risk_1d")
    write_feature_log([{**r, "amount": "12,50 EUR" if i == 3 else r["amount"]}
                       for i, r in enumerate(rows)], tmp_path / "text.csv")
    assert_one_line_error(invoke(app, "train-static", tmp_path / "text.csv", "--out", tmp_path),
                          "column 'amount' is not numeric at row 4")
    (tmp_path / "empty.jsonl").write_text("")
    assert_one_line_error(invoke(app, "train-static", tmp_path / "empty.jsonl", "--out", tmp_path),
                          "is empty")
    assert_one_line_error(invoke(app, "score-batch", "--model", info.model_dir,
                                 tmp_path / "text.csv", tmp_path / "o.xlsx"),
                          "unsupported feature log suffix '.xlsx'")
    assert_one_line_error(invoke(app, "score-batch", "--model", tmp_path, tmp_path / "text.csv",
                                 tmp_path / "o.csv"), "is not a static model directory")


def test_training_needs_frauds_on_both_sides_of_the_time_split(tmp_path, app):
    rows = [{**r, "is_fraud": r["is_fraud"] and i < 90} for i, r in enumerate(synthetic_rows(120))]
    write_feature_log(rows, tmp_path / "log.parquet")
    assert_one_line_error(invoke(app, "train-static", tmp_path / "log.parquet", "--out",
                                 tmp_path / "m"), "the validation part", "0 frauds")
    with pytest.raises(StaticModelError, match="validation share must be in"):
        train_static(as_log(rows), tmp_path / "m", validation_share=1.0)


def test_a_runtime_attaches_a_static_model_while_running_and_blends_it(trained, tmp_path):
    from models.champion import EPS
    from models.serving import ModelRuntime

    info, log = trained
    rt = ModelRuntime(warmup_frauds=0, warmup_legit=0)
    x = dict(zip(FEATURE_NAMES, log.X[0].tolist()))
    assert set(rt.score_batch([x]).scores[0]) == {"dynamic"}
    with pytest.raises(StaticModelError):
        rt.attach_static(str(tmp_path / "nothing-here"), champion="blend")
    assert rt.champion == "dynamic" and rt.static is None  # a failed attach changes nothing
    rt.attach_static(str(info.model_dir), champion="blend")
    scores = rt.score_batch([x]).scores[0]
    assert rt.champion == "blend" and rt.models() == ("dynamic", "static", "blend")
    assert scores["static"] == pytest.approx(StaticModel.load(info.model_dir).score(x))
    d, s = (np.clip(scores[m], EPS, 1 - EPS) for m in ("dynamic", "static"))
    logit = 0.5 * np.log(d / (1 - d)) + 0.5 * np.log(s / (1 - s))
    assert scores["blend"] == pytest.approx(1 / (1 + np.exp(-logit)))  # log-odds by default
    rt.blend, rt.blend_weight = "mean", 0.25
    scores = rt.score_batch([x]).scores[0]
    assert scores["blend"] == pytest.approx(0.25 * scores["dynamic"] + 0.75 * scores["static"])


def test_members_are_served_as_one_network_averaging_their_log_odds(tmp_path):
    log = as_log(synthetic_rows(300, seed=3))
    fast = dict(epochs=3, batch_size=32, learning_rate=0.01)
    single = [StaticModel.load(train_static(log, tmp_path / f"s{k}", seed=k, **fast).model_dir)
              for k in (0, 1)]
    info = train_static(log, tmp_path / "both", seed=0, members=2, **fast)
    both = StaticModel.load(info.model_dir)
    assert [w.shape for w, _, _ in both.layers] == [(len(FEATURE_NAMES), 128), (128, 64),
                                                   (64, 1)]
    logits = [np.log(p / (1 - p)) for p in (m.score_matrix(log.X) for m in single)]
    expected = 1 / (1 + np.exp(-(logits[0] + logits[1]) / 2))
    np.testing.assert_allclose(both.score_matrix(log.X), expected, atol=1e-5, rtol=0)
    keras_scores = both.keras_model(both.prepare(log.X)).numpy().ravel()
    np.testing.assert_allclose(keras_scores, expected, atol=1e-5, rtol=0)
    assert info.metadata["training"]["members"] == 2
    assert len(info.metadata["training"]["best_epoch"]) == 2
