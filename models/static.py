"""The static model: a small Keras network trained offline, scored in numpy.

:func:`train_static` fits a feed-forward network on a feature log (see
:mod:`models.feature_log`) and writes ``model.keras`` (standard Keras format)
and ``metadata.json`` (features in order, preprocessing, training window,
validation metrics, version, SHA-256 of model.keras). :class:`StaticModel`
loads that directory, checksum first. A ``model.predict`` call costs tens of
milliseconds whatever its size, so the dense weights are taken out of Keras
once at load and the forward pass runs in numpy: microseconds per event.

Preprocessing is numpy, outside the network, recorded in the metadata:
``log1p`` of counts and amounts (heavy-tailed, as for the dynamic model), then
standardization with the training part's mean and standard deviation.
TensorFlow is imported only inside the functions that train or load a model.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import operator
import os
import warnings
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from features.packed import packed_matrix
from features.schemas import FEATURE_NAMES
from features.schemas import format_time
from models.feature_log import FeatureLog, check_suffix, read_feature_log, write_columns
from models.quality import average_precision, roc_auc  # the live metrics' definitions

MODEL_FILE = "model.keras"
METADATA_FILE = "metadata.json"
FORMAT = "fraudstream-static/1"
HIDDEN_UNITS = (64, 32)
DROPOUT = 0.2
SCORE_CHUNK = 16_384  # rows per forward pass: bounds the hidden activations' memory
# From about this many rows OpenBLAS splits a matmul this small over threads; on
# busy cores that made a 500-row batch 6x slower than one thread (see bench/).
_THREADED_ROWS = 128
_blas = None  # threadpoolctl controller, made on first use; False without threadpoolctl
_ACTIVATIONS = ("relu", "sigmoid", "linear")


class StaticModelError(ValueError):
    """A static model that cannot be trained, loaded or used as asked."""


class TamperedModel(StaticModelError):
    """A ``model.keras`` whose bytes do not match the checksum in its metadata."""


class FeatureMismatch(StaticModelError):
    """A model whose features differ from the ones it is asked to score."""


def log_features(names: Sequence[str]) -> list[str]:
    """The features put on a log scale: counts and amounts.

    >>> log_features(["amount", "card_count_1d", "is_night", "user_tenure"])
    ['amount', 'card_count_1d']
    """
    return [n for n in names if "count" in n or "amount" in n]


def validation_mask(event_ts: np.ndarray, share: float) -> np.ndarray:
    """Rows in the latest ``share`` of the event-time span: the validation part.

    >>> validation_mask(np.arange(11.0), 0.2).nonzero()[0].tolist()
    [9, 10]
    """
    if share <= 0:
        return np.zeros(len(event_ts), dtype=bool)
    lo, hi = float(event_ts.min()), float(event_ts.max())
    return event_ts > hi - share * (hi - lo)


def _sha256(path: Path) -> str:
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def _one_blas_thread():
    """Run BLAS on one thread meanwhile (if threadpoolctl is installed)."""
    global _blas
    if _blas is None:
        try:
            from threadpoolctl import ThreadpoolController
            _blas = ThreadpoolController()
        except ImportError:
            _blas = False
    return _blas.limit(limits=1, user_api="blas") if _blas else contextlib.nullcontext()


def _keras():
    # Keeps most of TF's C++ start-up notes out of the CLI's output; a user's setting wins.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    return keras


def _dense_layers(model, n_features: int) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """``(kernel, bias, activation)`` of each Dense layer, checked to form a chain."""
    layers, width = [], n_features
    for layer in model.layers:
        kind = type(layer).__name__
        if kind in ("InputLayer", "Dropout"):
            continue  # dropout is the identity at inference
        if kind != "Dense":
            raise StaticModelError(f"unsupported layer {layer.name!r} ({kind}) in the static "
                                   "model: only Dense and Dropout layers can be served")
        activation = getattr(layer.activation, "__name__", str(layer.activation))
        kernel, bias = (np.asarray(w, np.float32) for w in layer.get_weights())
        if activation not in _ACTIVATIONS or kernel.shape[0] != width:
            raise StaticModelError(f"layer {layer.name!r} ({activation}, {kernel.shape}) does "
                                   f"not fit a {width}-wide input with {'/'.join(_ACTIVATIONS)}")
        layers.append((kernel, bias, activation))
        width = kernel.shape[1]
    if not layers or width != 1:
        raise StaticModelError("the static model must end in a single-unit Dense layer")
    return layers


class StaticModel:
    """A trained static model: numpy preprocessing and forward pass over dense weights.

    Usually made by :meth:`load`; the constructor takes the weights directly.

    >>> m = StaticModel(["amount", "is_night"], [(np.array([[1.0], [2.0]]), np.zeros(1), "sigmoid")],
    ...                 mean=[0.0, 0.0], std=[1.0, 1.0], log1p=[], version=3)
    >>> [round(s, 6) for s in m.score_dicts([{"amount": 0.0, "is_night": 0.0},
    ...                                      {"amount": 1.0, "is_night": 1.0}])]
    [0.5, 0.952574]
    """

    name = "static"

    def __init__(self, feature_names: Sequence[str], layers: Sequence[tuple], mean: Sequence[float],
                 std: Sequence[float], log1p: Sequence[str] = (), version: int = 0,
                 metadata: Mapping | None = None, model_dir: str | os.PathLike | None = None):
        self.feature_names = tuple(feature_names)
        self.layers = [(np.asarray(w, np.float32), np.asarray(b, np.float32), a)
                       for w, b, a in layers]
        self.mean = np.asarray(mean, np.float32)
        self.std = np.asarray(std, np.float32)
        self.log1p = tuple(log1p)
        self._log_idx = np.array([self.feature_names.index(f) for f in self.log1p], dtype=np.intp)
        self._row = operator.itemgetter(*self.feature_names)
        self.version = version
        self.metadata = dict(metadata or {})
        self.model_dir = Path(model_dir) if model_dir is not None else None
        self.keras_model = None  # the Keras network when loaded from disk, for comparison only

    @classmethod
    def load(cls, model_dir: str | os.PathLike,
             feature_names: Sequence[str] | None = FEATURE_NAMES) -> "StaticModel":
        """Load a model directory written by :func:`train_static`.

        ``feature_names`` are the features the caller scores with (default:
        the current definitions; None skips the check). Raises
        :class:`TamperedModel` if ``model.keras`` does not match its checksum,
        :class:`FeatureMismatch` if the model's features differ (in any order
        is fine), :class:`StaticModelError` if the directory is not a model.
        """
        model_dir = Path(model_dir)
        meta_path, model_path = model_dir / METADATA_FILE, model_dir / MODEL_FILE
        if not meta_path.is_file() or not model_path.is_file():
            raise StaticModelError(f"{model_dir} is not a static model directory: it needs "
                                   f"{MODEL_FILE} and {METADATA_FILE}")
        try:
            metadata = json.loads(meta_path.read_text(encoding="utf-8"))
            names = tuple(metadata["features"])
            prep = metadata["preprocessing"]
            mean, std = [prep["mean"][f] for f in names], [prep["std"][f] for f in names]
        except (ValueError, KeyError, TypeError) as exc:
            raise StaticModelError(f"{meta_path} is not valid static model metadata: {exc!r}") from None
        expected = metadata.get("sha256")
        if _sha256(model_path) != expected:
            raise TamperedModel(f"{model_path} does not match the SHA-256 recorded in "
                                f"{meta_path}; refusing to load it")
        if feature_names is not None:
            check_features(names, feature_names, model_dir)
        keras_model = _keras().saving.load_model(model_path, compile=False)
        if _sha256(model_path) != expected:  # replaced while it was being loaded
            raise TamperedModel(f"{model_path} changed while loading; refusing to use it")
        model = cls(names, _dense_layers(keras_model, len(names)), mean, std, prep["log1p"],
                    metadata["version"], metadata, model_dir)
        model.keras_model = keras_model
        return model

    def prepare(self, X: np.ndarray) -> np.ndarray:
        """The network's input: ``log1p`` of counts and amounts, then standardized."""
        Z = np.array(X, dtype=np.float32)  # a copy: the caller's matrix stays as it was
        if Z.ndim != 2 or Z.shape[1] != len(self.feature_names):
            raise FeatureMismatch(f"expected a matrix of {len(self.feature_names)} feature "
                                  f"columns ({', '.join(self.feature_names)}), got shape {Z.shape}")
        if self._log_idx.size:
            Z[:, self._log_idx] = np.log1p(np.maximum(Z[:, self._log_idx], 0.0))
        Z -= self.mean
        Z /= self.std
        return Z

    def _forward(self, Z: np.ndarray) -> np.ndarray:
        h = Z
        for kernel, bias, activation in self.layers:
            h = h @ kernel
            h += bias
            if activation == "relu":
                np.maximum(h, 0.0, out=h)
            elif activation == "sigmoid":
                np.clip(h, -80.0, 80.0, out=h)  # exp stays finite in float32
                np.negative(h, out=h)
                np.exp(h, out=h)
                h += 1.0
                np.reciprocal(h, out=h)
        return h[:, 0]

    def score_matrix(self, X: np.ndarray) -> np.ndarray:
        """Fraud probability of each row of ``X`` (columns in :attr:`feature_names` order)."""
        X = np.asarray(X)
        out = np.empty(len(X), dtype=np.float64)
        with _one_blas_thread() if len(X) > _THREADED_ROWS else contextlib.nullcontext():
            for lo in range(0, len(X), SCORE_CHUNK):
                out[lo:lo + SCORE_CHUNK] = self._forward(self.prepare(X[lo:lo + SCORE_CHUNK]))
        return out

    def score_dicts(self, xs: Sequence[Mapping[str, float]]) -> list[float]:
        """Fraud probability of each feature dict, scored as one micro-batch."""
        if not xs:
            return []
        X = packed_matrix(xs, self.feature_names)  # as the feature store gives them
        try:
            X = (np.array([self._row(x) for x in xs], dtype=np.float32) if X is None
                 else X.astype(np.float32))
        except KeyError:
            i, x = next((i, x) for i, x in enumerate(xs) if not set(self.feature_names) <= x.keys())
            missing = [f for f in self.feature_names if f not in x]
            raise FeatureMismatch(f"event {i} lacks features: {', '.join(missing)}") from None
        return self.score_matrix(X.reshape(len(xs), -1)).tolist()

    score_many = score_dicts  # the dynamic model's name for the same call

    def score(self, x: Mapping[str, float]) -> float:
        """Fraud probability of one feature dict (prefer batches in a stream)."""
        return self.score_dicts([x])[0]


def check_features(model_names: Sequence[str], wanted: Sequence[str], where: object = "") -> None:
    """Raise :class:`FeatureMismatch` naming what differs; order may differ.

    >>> check_features(["a", "b"], ["b", "c"], "m/")
    Traceback (most recent call last):
    ...
    models.static.FeatureMismatch: static model m/ does not fit the requested features: \
missing from the model: c; not requested: a
    """
    missing = [f for f in wanted if f not in model_names]
    extra = [f for f in model_names if f not in wanted]
    if missing or extra:
        parts = [f"missing from the model: {', '.join(missing)}" if missing else "",
                 f"not requested: {', '.join(extra)}" if extra else ""]
        raise FeatureMismatch(f"static model {where} does not fit the requested features: "
                              + "; ".join(p for p in parts if p))


@dataclass(frozen=True)
class StaticModelInfo:
    """What :func:`train_static` produced; ``metadata`` is the full metadata.json."""

    model_dir: Path
    version: int
    n_rows: int
    n_frauds: int
    n_train: int
    n_validation: int
    epochs_run: int
    roc_auc: float | None
    average_precision: float | None
    metadata: dict


def _window(ts: np.ndarray, y: np.ndarray) -> dict:
    if not len(ts):
        return {"n_rows": 0, "n_frauds": 0, "first_event_time": None, "last_event_time": None}
    return {"n_rows": int(len(ts)), "n_frauds": int(y.sum()),
            "first_event_time": format_time(float(ts.min())),
            "last_event_time": format_time(float(ts.max()))}


def _build_network(keras, n_features: int, learning_rate: float, seed: int,
                   hidden_units: Sequence[int] = HIDDEN_UNITS, dropout: float = DROPOUT):
    inputs = keras.Input(shape=(n_features,), name="features")
    h = inputs
    for i, units in enumerate(hidden_units, 1):
        h = keras.layers.Dense(units, activation="relu", name=f"hidden_{i}")(h)
        if dropout > 0:
            h = keras.layers.Dropout(dropout, seed=seed + i, name=f"dropout_{i}")(h)
    out = keras.layers.Dense(1, activation="sigmoid", name="fraud")(h)
    model = keras.Model(inputs, out, name="fraudstream_static")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="binary_crossentropy",
                  metrics=[keras.metrics.AUC(name="auc"),
                           keras.metrics.AUC(curve="PR", name="pr_auc")])
    return model


def merge_networks(keras, nets: Sequence, n_features: int):
    """One network of Dense layers whose output logit is the mean of the members' logits.

    The members (same shape) sit side by side: the first layer's kernels
    are concatenated (they read the same input), the later ones are
    block-diagonal (each member's units read only its own), and the output
    unit averages the members' output logits. The forward pass, in Keras or
    in numpy, is the same as averaging the members' log-odds.
    """
    chains = [_dense_layers(net, n_features) for net in nets]
    inputs = keras.Input(shape=(n_features,), name="features")
    h, k = inputs, len(nets)
    for depth, (_, _, activation) in enumerate(chains[0]):
        kernels = [chain[depth][0] for chain in chains]
        biases = [chain[depth][1] for chain in chains]
        last = depth == len(chains[0]) - 1
        if depth == 0 and last:  # no hidden layers: one linear model, averaged
            kernel, bias = np.mean(kernels, axis=0), np.mean(biases, axis=0)
        elif depth == 0:
            kernel, bias = np.concatenate(kernels, axis=1), np.concatenate(biases)
        elif last:
            kernel, bias = np.concatenate(kernels, axis=0) / k, np.mean(biases, axis=0)
        else:
            rows, cols = kernels[0].shape
            kernel = np.zeros((rows * k, cols * k), np.float32)
            for i, w in enumerate(kernels):
                kernel[i * rows:(i + 1) * rows, i * cols:(i + 1) * cols] = w
            bias = np.concatenate(biases)
        layer = keras.layers.Dense(kernel.shape[1], activation=activation,
                                   name="fraud" if last else f"hidden_{depth + 1}")
        h = layer(h)
        layer.set_weights([kernel, bias])
    return keras.Model(inputs, h, name="fraudstream_static")


def train_static(log: FeatureLog, out_dir: str | os.PathLike, *, validation_share: float = 0.2,
                 epochs: int = 50, batch_size: int = 512, patience: int = 5, seed: int = 0,
                 learning_rate: float = 1e-3, version: int | None = None,
                 hidden_units: Sequence[int] = HIDDEN_UNITS, dropout: float = DROPOUT,
                 balanced: bool = False, members: int = 1,
                 progress: Callable[[int, int, dict], None] | None = None) -> StaticModelInfo:
    """Train the static model on a labelled feature log and write it to ``out_dir``.

    The latest ``validation_share`` of the event-time span validates (a
    random split would let the model peek at the future); preprocessing
    statistics come from the training part only. Every row weighs the same,
    so scores are probabilities at the real fraud rate (comparable to the
    dynamic model's, under one alert threshold). With ``balanced`` frauds
    weigh ``n_legit / n_frauds`` times more and the log of that ratio is
    taken off the output bias afterwards; on the handbook preset
    (bench/quality.py replayed from 2018-07-01, trained from 2018-07-08) that
    lowered the test week's average precision, 0.626 against 0.654 (mean of
    seeds 0-2), as weighting did for the dynamic model.
    ``members`` networks (seeds ``seed``, ``seed + 1``, ...) can be trained
    and served as one (:func:`merge_networks`): their log-odds averaged. Training stops when the
    validation PR-AUC has not improved for ``patience`` epochs and keeps the
    best epoch's weights.
    With ``validation_share=0`` every row trains for ``epochs`` epochs and no
    metrics are reported.

    ``progress(epoch, epochs, logs)`` is called after each epoch.
    ``version`` defaults to the UTC time as the integer ``YYYYMMDDhhmmss``.
    """
    if log.y is None:
        raise StaticModelError(f"feature log {log.path or ''} has no is_fraud labels to train on")
    if not 0 <= validation_share < 1:
        raise StaticModelError(f"validation share must be in [0, 1), got {validation_share}")
    if members < 1:
        raise StaticModelError(f"a static model needs at least one member network, got {members}")
    order = np.argsort(log.event_ts, kind="stable")
    ts, X, y = log.event_ts[order], log.X[order], log.y[order].astype(np.float32)
    val = validation_mask(ts, validation_share)
    parts = {"training": ~val, "validation": val} if validation_share > 0 else {"training": ~val}
    for part, mask in parts.items():
        n, frauds = int(mask.sum()), int(y[mask].sum())
        if frauds == 0 or frauds == n:
            raise StaticModelError(
                f"the {part} part ({n} rows, {frauds} frauds) needs frauds and legitimate "
                f"transactions both; use a longer log or another --validation-share")
    names = log.feature_names
    logged = log_features(names)
    model = StaticModel(names, [], np.zeros(len(names)), np.ones(len(names)), logged)
    Zt = model.prepare(X[~val])  # log scale first, so the statistics are of what the net sees
    mean, std = Zt.mean(axis=0, dtype=np.float64), Zt.std(axis=0, dtype=np.float64)
    std[std < 1e-6] = 1.0  # a constant feature carries nothing; keep it finite
    model.mean, model.std = mean.astype(np.float32), std.astype(np.float32)
    Zt, Zv = model.prepare(X[~val]), model.prepare(X[val])
    yt, yv = y[~val], y[val]
    n_pos = float(yt.sum())
    weights = {0: len(yt) / (2.0 * (len(yt) - n_pos)), 1: len(yt) / (2.0 * n_pos)} \
        if balanced else {0: 1.0, 1: 1.0}

    keras = _keras()
    prior_shift = math.log(weights[1] / weights[0])
    nets, histories, best_epochs = [], [], []
    for k in range(members):
        keras.utils.set_random_seed(seed + k)
        net = _build_network(keras, len(names), learning_rate, seed + k, hidden_units, dropout)
        stopper = keras.callbacks.EarlyStopping(monitor="val_pr_auc", mode="max",
                                                patience=patience, restore_best_weights=True)
        callbacks = [keras.callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: progress(
            epoch + 1, epochs, dict(logs or {})))] if progress is not None else []
        callbacks += [stopper] if val.any() else []
        history = net.fit(Zt, yt, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=0,
                          validation_data=(Zv, yv) if val.any() else None,
                          class_weight=weights, callbacks=callbacks)
        # Undo the class weighting's shift of the odds: logit(p) = logit(p_weighted) - log(w1/w0).
        kernel, bias = net.get_layer("fraud").get_weights()
        net.get_layer("fraud").set_weights([kernel, bias - prior_shift])
        nets.append(net)
        histories.append(len(history.history["loss"]))
        best_epochs.append(stopper.best_epoch + 1 if val.any() else None)
    net = nets[0] if members == 1 else merge_networks(keras, nets, len(names))

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / f".model-{os.getpid()}.keras"  # Keras insists on the suffix
    with warnings.catch_warnings():  # Keras' own numpy-2 deprecation, nothing a user can fix
        warnings.filterwarnings("ignore", "__array__ implementation", DeprecationWarning)
        net.save(tmp)
    os.replace(tmp, out_dir / MODEL_FILE)
    model.layers = _dense_layers(net, len(names))
    val_scores = model.score_matrix(X[val]) if val.any() else np.empty(0)
    auc, ap = roc_auc(yv, val_scores), average_precision(yv, val_scores)
    now = datetime.now(timezone.utc)
    version = int(now.strftime("%Y%m%d%H%M%S")) if version is None else int(version)
    metadata = {
        "format": FORMAT, "version": version, "created_at": format_time(now.timestamp()),
        "features": list(names),
        "preprocessing": {"log1p": logged,
                          "mean": dict(zip(names, mean.tolist())),
                          "std": dict(zip(names, std.tolist()))},
        "n_rows": len(y), "n_frauds": int(y.sum()),
        "training_window": {"validation_share": validation_share,
                            "train": _window(ts[~val], yt), "validation": _window(ts[val], yv)},
        "validation_metrics": {k: None if math.isnan(v) else round(v, 6)
                               for k, v in (("roc_auc", auc), ("average_precision", ap))},
        "training": {"epochs": epochs, "epochs_run": sum(histories),
                     "batch_size": batch_size, "patience": patience, "seed": seed,
                     "best_epoch": best_epochs[0] if members == 1 else best_epochs,
                     "members": members,
                     "learning_rate": learning_rate, "hidden_units": list(hidden_units),
                     "dropout": dropout, "class_weight": {str(k): w for k, w in weights.items()},
                     "output_bias_shift": -prior_shift, "keras": keras.__version__},
        "model_file": MODEL_FILE, "sha256": _sha256(out_dir / MODEL_FILE),
    }
    tmp_meta = out_dir / f".{METADATA_FILE}.{os.getpid()}.tmp"
    tmp_meta.write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp_meta, out_dir / METADATA_FILE)
    return StaticModelInfo(out_dir, version, len(y), int(y.sum()), int((~val).sum()),
                           int(val.sum()), metadata["training"]["epochs_run"],
                           metadata["validation_metrics"]["roc_auc"],
                           metadata["validation_metrics"]["average_precision"], metadata)


def score_file(model: StaticModel, in_path: str | os.PathLike, out_path: str | os.PathLike,
               progress: Callable[[int, int], None] | None = None,
               batch_size: int = 10_000) -> int:
    """Offline inference: score every row of a feature log and write the scores.

    The output (format by suffix) has ``transaction_id``, ``event_time``,
    ``score`` and, when the input is fully labelled, ``is_fraud``.
    ``progress(rows_done, rows_total)`` follows each batch. Returns the
    number of rows scored.
    """
    out_path = check_suffix(out_path)  # fail before the expensive part
    log = read_feature_log(in_path, model.feature_names, require_label=False)
    n, scores = len(log), np.empty(len(log), dtype=np.float64)
    for lo in range(0, n, batch_size):
        scores[lo:lo + batch_size] = model.score_matrix(log.X[lo:lo + batch_size])
        if progress is not None:
            progress(min(n, lo + batch_size), n)
    columns = {"transaction_id": log.transaction_ids,
               "event_time": [format_time(t) for t in log.event_ts.tolist()], "score": scores}
    if log.y is not None:
        columns["is_fraud"] = log.y.astype(bool)
    return write_columns(columns, out_path)
