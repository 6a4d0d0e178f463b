"""Quality benchmark: the handbook protocol, in the stream, beside the published table.

    .venv/bin/python bench/quality.py [--seeds 0 1 2] [--jobs 2] [--start 2018-06-01]
                                      [--train-from 2018-06-08] [--blend logit]
                                      [--blend-weight W] [--no-floor] [--dump DIR]
                                      [--members N] [--hidden-units 64 32] [--dropout D]
                                      [--learning-rate LR] [--batch-size B]
                                      [--ceilings-only]

For each seed: simulate the handbook preset (one card per user, every label
exactly 7 days after its purchase), then replay it through the pipeline
(embedded store, the stream's own code) from ``--start`` (by default 68
days before the test week: the dynamic model has learned from eight weeks
of labels by then, and the static model has eight weeks of feature log to
train on; replayed from 2018-07-01 with the static model trained from
2018-07-08, the 30-day windows and the seller risk are full but both models
see less: the dynamic model's AP was 0.011 lower and the static model's
0.05 lower, mean of seeds 0-2; a seed then takes 5 to 11 minutes instead of
9 to 17 on two shared cores):

1. up to the test week (2018-08-08): the dynamic model scores every purchase
   and learns from each label when it arrives; the labelled features are
   kept as a feature log, as ``replay --feature-log`` writes it;
2. at the start of the test week, the static (Keras) model is trained on the
   feature log of the training weeks, ``--train-from`` to 2018-07-31 (the
   handbook trains on 2018-07-25..31; more weeks of the same log train a
   better network; the 7-day gap is the label delay: nothing later is
   labelled yet), and attached to the running pipeline;
3. the champion blends the two scores (:mod:`models.champion`), by default
   in log-odds with the weight chosen on the last training week by a probe
   static model trained up to a label delay before it (see
   :func:`choose_weight`), the dynamic score counted as no lower than its
   median over that week (``--no-floor``: as it is); nothing of the test
   week chooses anything;
4. through the test week, every purchase is scored by the dynamic model
   (still learning online), the static model and the champion.

Evaluation follows the handbook: ROC AUC and average precision over the test
week's transactions, card precision@100 per day (each card's highest score
of the day, the top 100 cards, cards found on earlier days skipped),
after removing the cards already known to be compromised before each test
day (a fraud since the start of the training week whose label had arrived).
Prints each seed and the mean ± sd over the seeds beside the published
figures, and two ceilings: the oracle (perfect scores), and the oracle of
what the features can see (:func:`visible_frauds`: perfect scores for every
fraud but those on a compromised terminal before any fraud of that
compromise was labelled, which it ranks at random with everything else). Per seed and
model it also prints the share of the legitimate purchases scored below a
visible fraud and below a hidden one (:func:`fraud_ranks`): the ROC AUC is
their average over the frauds, and a model that cannot see the hidden ones
gets 50% there, give or take chance.

The static model's options (``--members``, ``--hidden-units``, ...) apply to
both the static model and the probe; by default they are
:func:`models.static.train_static`'s. ``--dump`` saves, per seed, what the
evaluation saw (scores, features, the feature log) to study models offline.
"""

from __future__ import annotations

import argparse
import logging
import math
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from features.schemas import FEATURE_NAMES, parse_time  # noqa: E402
from features.state import DAY  # noqa: E402
from features.store.embedded import EmbeddedStore  # noqa: E402
from models.champion import BLENDS, choose_blend_weight, dynamic_floor  # noqa: E402
from models.feature_log import FeatureLog  # noqa: E402
from models.quality import average_precision, card_precision_at_k, roc_auc  # noqa: E402
from models.serving import ModelRuntime  # noqa: E402
from stream import simulator  # noqa: E402
from stream.pipeline import FraudPipeline  # noqa: E402
from stream.replay import replay  # noqa: E402

PUBLISHED = [("logistic regression", 0.871, 0.606, 0.291),
             ("random forest", 0.867, 0.658, 0.287),
             ("XGBoost", 0.862, 0.639, 0.273),
             ("best, model selection (FFNN / XGBoost)", 0.876, 0.687, 0.303)]
TARGET = (0.88, 0.70, 0.31)
TEST_START, TEST_DAYS, GAP_DAYS, TRAIN_DAYS = "2018-08-08", 7, 7, 7
VALIDATION_SHARE = 0.2  # latest share of the static model's weeks: early stopping, blend weight
FLOOR_QUANTILE = 0.5  # the dynamic score's floor in the blend: its median over the last week
MODELS = ("dynamic", "static", "blend")
LABELS = {"dynamic": "dynamic (online, learns in the stream)",
          "static": "static (Keras, trained on the training weeks)",
          "blend": "champion (blend of both)", "oracle": "oracle (perfect scores): ceiling",
          "visible": "oracle of the frauds the features can see, the rest at random: ceiling"}
CEILINGS = ("oracle", "visible")
COMPROMISED_TERMINAL = 2  # the handbook scenario no feature sees before its first label
RISK_DAYS = 30  # the longest seller risk window (it ends a label delay before the purchase)


def _ts(day: str) -> float:
    return parse_time(day + "T00:00:00Z", "day")


def compromise_runs(sim) -> dict[str, list[tuple[float, float]]]:
    """Each compromised terminal's spans of compromise, ``(start, end)`` event times.

    From the simulation's ground truth: a terminal compromised on day ``d`` is
    compromised until day ``d`` + ``terminal_compromise_days``; overlapping or
    touching spans of one terminal (compromised again before the last span
    ended) are one run.
    """
    t0 = _ts(sim.config.start_date)
    days = sim.config.terminal_compromise_days
    spans: dict[str, list[tuple[float, float]]] = {}
    for hit in sorted(sim.ground_truth.get("compromised_terminals", []),
                      key=lambda h: (h["seller_id"], h["day"])):
        begin, end = t0 + hit["day"] * DAY, t0 + (hit["day"] + days) * DAY
        runs = spans.setdefault(hit["seller_id"], [])
        if runs and begin <= runs[-1][1]:
            runs[-1] = (runs[-1][0], max(end, runs[-1][1]))
        else:
            runs.append((begin, end))
    return spans


def visible_frauds(purchases: list[dict], labels: list[dict],
                   runs: dict[str, list[tuple[float, float]]] | None = None) -> set[str]:
    """The frauds a feature can tell from legitimate purchases when they are scored.

    Every fraud but one on a compromised terminal at a moment when none of
    the frauds of that compromise had been labelled within the seller risk's
    reach (its purchase at most ``RISK_DAYS`` + the label delay before, its
    label arrived). Such a purchase is like any other of its user, card and
    seller: the handbook's terminals are compromised at random, their frauds
    keep the customers' usual amounts, and a fraud of another kind labelled
    at the same seller (a card's) tells nothing of the terminal. Nor does one
    of an earlier compromise of the same terminal that had ended: it was
    compromised again at random. ``runs`` are the terminals' compromises
    (:func:`compromise_runs`); without them every labelled fraud of the
    terminal counts, a looser bound. A generous bound either way: a single
    labelled fraud of the compromise counts as enough to see all its later
    frauds.

    >>> ps = [{"transaction_id": t, "seller_id": "s", "event_time": f"2018-08-{d:02d}T12:00:00Z"}
    ...       for t, d in (("a", 1), ("b", 5), ("c", 9))]
    >>> ls = [{"transaction_id": t, "is_fraud": True, "scenario": 2,
    ...        "label_time": f"2018-08-{d:02d}T12:00:00Z"} for t, d in (("a", 8), ("b", 12), ("c", 16))]
    >>> sorted(visible_frauds(ps, ls))  # c: a's label came on the 8th
    ['c']
    >>> again = {"s": [(_ts("2018-08-01"), _ts("2018-08-03")), (_ts("2018-08-04"), _ts("2018-09-01"))]}
    >>> sorted(visible_frauds(ps, ls, again))  # c: b's label (the 12th) had not come
    []
    """
    terminal = {lb["transaction_id"]: parse_time(lb["label_time"], "label_time")
                for lb in labels
                if lb["is_fraud"] and int(lb.get("scenario") or 0) == COMPROMISED_TERMINAL}
    at: dict[str, tuple[float, str]] = {}  # fraud -> its purchase's time and seller
    labelled: dict[str, list[tuple[float, float]]] = {}  # seller -> (purchase, label) times
    for p in purchases:
        tx = p["transaction_id"]
        if tx in terminal:
            at[tx] = (parse_time(p["event_time"], "event_time"), p["seller_id"])
            labelled.setdefault(p["seller_id"], []).append((at[tx][0], terminal[tx]))
    reach = (RISK_DAYS + GAP_DAYS) * DAY

    def since(ts: float, seller: str) -> float:
        """The earliest purchase whose label may reveal the terminal at ``ts``."""
        for begin, end in (runs or {}).get(seller, ()):
            if begin <= ts < end:
                return max(ts - reach, begin)
        return ts - reach

    unseen = {tx for tx, (ts, seller) in at.items()
              if not any(since(ts, seller) <= bought and known <= ts
                         for bought, known in labelled[seller])}
    return {lb["transaction_id"] for lb in labels if lb["is_fraud"]} - unseen


def evaluated_rows(scored: dict, labels: list[dict]) -> list[tuple[str, float, str, dict]]:
    """The test week's ``(transaction, event_ts, card, scores)``, as the handbook keeps them.

    ``scored`` maps transaction ids to ``(event_ts, card, scores)``. A card
    is removed from a test day once it is known compromised: a fraud on it
    since the start of the training week whose label arrived before that
    day began.
    """
    t0 = _ts(TEST_START)
    train_start = t0 - (GAP_DAYS + TRAIN_DAYS) * DAY
    known_at: dict[str, float] = {}  # card -> when its first fraud label (since train_start) came
    for lb in labels:
        row = scored.get(lb["transaction_id"])
        if lb["is_fraud"] and row is not None and row[0] >= train_start:
            at = parse_time(lb["label_time"], "label_time")
            known_at[row[1]] = min(at, known_at.get(row[1], math.inf))
    return [(tx, ts, card, scores) for tx, (ts, card, scores) in scored.items()
            if t0 <= ts < t0 + TEST_DAYS * DAY
            and known_at.get(card, math.inf) > (ts // DAY) * DAY]


def evaluate(rows: list[tuple], truth: dict, model: str, visible: set[str] | None = None,
             seed: int = 0) -> tuple[float, float, float]:
    """AUC, AP and CP@100 of ``model`` over the test week's ``rows``
    (:func:`evaluated_rows`), as the handbook measures them.

    ``truth`` maps transaction ids to whether they were fraud. The model
    ``oracle`` scores the truth; ``visible`` scores 1 for the ``visible``
    frauds and a random number (from ``seed``) below 1 for every other
    transaction.
    """
    y = np.array([truth.get(tx, False) for tx, *_ in rows])
    if model == "oracle":
        s = y.astype(float)
    elif model == "visible":
        seen = visible or set()
        s = np.random.default_rng(seed).random(len(rows))
        s[[i for i, r in enumerate(rows) if r[0] in seen]] = 1.0
    else:
        s = np.array([r[3][model] for r in rows], dtype=float)
    days = np.array([int(ts // DAY) for _, ts, _, _ in rows])
    cards = np.array([card for _, _, card, _ in rows])
    return roc_auc(y, s), average_precision(y, s), card_precision_at_k(days, cards, y, s, k=100)


def fraud_ranks(rows: list[tuple], truth: dict, model: str, visible: set[str]
                ) -> tuple[float, float]:
    """The share of the legitimate purchases among the test week's ``rows`` that ``model``
    scores below a fraud (ties count half), on average over the ``visible`` frauds and
    over the rest.

    The ROC AUC is the average of this share over all frauds; the hidden
    frauds' share is 0.5 for a model that cannot tell them from legitimate
    purchases, give or take chance.
    """
    fraud = np.array([truth.get(tx, False) for tx, *_ in rows])
    s = np.array([r[3][model] for r in rows], dtype=float)
    legit = np.sort(s[~fraud])
    share = (np.searchsorted(legit, s, "left") + np.searchsorted(legit, s, "right")) / (
        2 * len(legit))
    seen = np.array([tx in visible for tx, *_ in rows])
    return float(share[fraud & seen].mean()), float(share[fraud & ~seen].mean())


class _LogCollector:
    """The labelled snapshots of the replay, as a feature log in memory."""

    def __init__(self):
        self.rows: list[list[float]] = []
        self.y: list[bool] = []
        self.ts: list[float] = []
        self.tx: list[str] = []
        self.cards: list[str] = []

    def __call__(self, pairs) -> None:
        for snap, is_fraud in pairs:
            self.rows.append([snap.features[f] for f in FEATURE_NAMES])
            self.y.append(bool(is_fraud))
            self.ts.append(snap.event_ts)
            self.tx.append(snap.transaction_id)
            self.cards.append(snap.card_hash)

    def window(self, lo: float, hi: float) -> FeatureLog:
        ts = np.array(self.ts)
        keep = np.flatnonzero((ts >= lo) & (ts < hi))
        return FeatureLog(X=np.array(self.rows, dtype=np.float32)[keep],
                          y=np.array(self.y, dtype=np.int8)[keep], event_ts=ts[keep],
                          transaction_ids=[self.tx[i] for i in keep],
                          card_hashes=[self.cards[i] for i in keep],
                          feature_names=tuple(FEATURE_NAMES))


def choose_weight(collect: _LogCollector, train_from: str, scored: dict, how: str,
                  out_dir: Path, seed: int, static_options: dict, floor_quantile: float | None
                  ) -> tuple[float, dict[float, float], int, float]:
    """The champion's weight, chosen the way the test week will use the blend.

    In the test week the static model is a label delay (7 days) and more
    behind, while the dynamic model keeps learning; judged on its own
    validation part (the days just after its training rows) it would look
    better than it will be. So a probe static model is trained on the same
    log up to the gap before the last training week, and the weight is the
    one whose blend has the best AP over that week: the probe's scores
    beside the dynamic model's online scores (each made before its label
    came). With ``floor_quantile`` the dynamic score's floor in the blend is
    that quantile of its scores over the week (:func:`dynamic_floor`), and
    the weight is chosen with it. Nothing of the test week is used. Returns
    the weight, the AP of each weight tried, the week's number of
    transactions and the floor (0: none).
    """
    from models.static import StaticModel, train_static

    week_end = _ts(TEST_START) - GAP_DAYS * DAY
    week_start = week_end - TRAIN_DAYS * DAY
    probe = collect.window(_ts(train_from), week_start - GAP_DAYS * DAY)
    train_static(probe, out_dir, seed=seed, version=seed, validation_share=VALIDATION_SHARE,
                 **static_options)
    week = collect.window(week_start, week_end)
    static = StaticModel.load(out_dir).score_matrix(week.X)
    dynamic = [scored[tx][2]["dynamic"] for tx in week.transaction_ids]
    floor = 0.0 if floor_quantile is None else dynamic_floor(dynamic, floor_quantile)
    weight, tried = choose_blend_weight(dynamic, static, week.y.astype(bool), how, floor=floor)
    return weight, tried, len(week), floor


def handbook_events(seed: int, start: str
                    ) -> tuple[list[dict], list[dict], dict[str, bool], dict[str, list]]:
    """The handbook preset's purchases from ``start`` to the end of the test week, their
    labels, whether each was fraud, and the terminals' compromises
    (:func:`compromise_runs`)."""
    sim = simulator.simulate(simulator.preset("handbook"), seed=seed)
    begin, end = _ts(start), _ts(TEST_START) + TEST_DAYS * DAY
    purchases = [p for p in sim.purchases if begin <= parse_time(p["event_time"], "e") < end]
    kept = {p["transaction_id"] for p in purchases}
    labels = [lb for lb in sim.labels if lb["transaction_id"] in kept]
    truth = {lb["transaction_id"]: bool(lb["is_fraud"]) for lb in labels}
    return purchases, labels, truth, compromise_runs(sim)


def ceilings(seed: int, start: str) -> dict[str, tuple[float, float, float]]:
    """The two ceilings of a seed, from its events alone (nothing is replayed)."""
    purchases, labels, truth, runs = handbook_events(seed, start)
    scored = {p["transaction_id"]: (parse_time(p["event_time"], "e"), p["card_hash"], {})
              for p in purchases}
    rows, visible = evaluated_rows(scored, labels), visible_frauds(purchases, labels, runs)
    return {m: evaluate(rows, truth, m, visible, seed) for m in CEILINGS}


def run_seed(seed: int, start: str, train_from: str, kind: str, blend_weight: float | None,
             say, dump: str | None = None, blend: str = "logit",
             static_options: dict | None = None, floor_quantile: float | None = FLOOR_QUANTILE
             ) -> dict[str, tuple[float, float, float]]:
    from models.static import train_static  # TensorFlow: only when it is needed

    purchases, labels, truth, runs = handbook_events(seed, start)
    t0 = _ts(TEST_START)
    end = t0 + TEST_DAYS * DAY
    # Labels arriving after the test week cannot change a score in it.
    arrived = [lb for lb in labels if parse_time(lb["label_time"], "l") < end]

    def before(events, key):
        return [e for e in events if parse_time(e[key], key) < t0]

    def after(events, key):
        return [e for e in events if parse_time(e[key], key) >= t0]

    collect = _LogCollector()
    scored: dict[str, tuple] = {}
    with tempfile.TemporaryDirectory(prefix="fraudstream-quality-") as tmp:
        runtime = ModelRuntime(kind=kind, blend_weight=blend_weight or 0.5, blend=blend)
        pipeline = FraudPipeline(EmbeddedStore(Path(tmp) / "store"), runtime,
                                 on_labelled=collect)
        features: dict[str, list[float]] = {}
        if dump:
            process = pipeline.process_purchases

            def keep_features(messages):
                out = process(messages)
                features.update((s.transaction_id, [s.features[f] for f in FEATURE_NAMES])
                                for s in out.snapshots)
                return out
            pipeline.process_purchases = keep_features
        phases = [("until the test week", before(purchases, "event_time"),
                   before(arrived, "label_time")),
                  ("test week", after(purchases, "event_time"), after(arrived, "label_time"))]
        for i, (name, ps, ls) in enumerate(phases):
            if i == 1:
                log = collect.window(_ts(train_from), t0 - GAP_DAYS * DAY)
                t = time.perf_counter()
                info = train_static(log, Path(tmp) / "static", seed=seed, version=seed,
                                    validation_share=VALIDATION_SHARE, **(static_options or {}))
                say(f"  static model trained on {len(log):,} rows ({log.n_frauds:,} frauds) "
                    f"from {train_from}, {info.epochs_run} epochs, "
                    f"{time.perf_counter() - t:.0f} s")
                if blend_weight is None:
                    t = time.perf_counter()
                    runtime.blend_weight, tried, n, runtime.blend_floor = choose_weight(
                        collect, train_from, scored, blend, Path(tmp) / "probe", seed,
                        static_options or {}, floor_quantile)
                    w = runtime.blend_weight
                    say(f"  champion: {blend} blend, weight {w:.2f} on the dynamic score "
                        f"(counted as at least {runtime.blend_floor:.5f}), "
                        f"chosen on the {n:,} transactions of the last training week (AP "
                        f"{tried[w]:.3f}; static probe alone {tried[0.0]:.3f}, dynamic alone "
                        f"{tried[1.0]:.3f}), {time.perf_counter() - t:.0f} s")
                runtime.attach_static(str(Path(tmp) / "static"), champion="blend")
            t = time.perf_counter()
            last = [0.0]

            def progress(done, total, name=name, t=t):
                if time.perf_counter() - last[0] > 30 or done == total:
                    last[0] = time.perf_counter()
                    say(f"  {name}: {done:,}/{total:,} events, "
                        f"{time.perf_counter() - t:.0f} s")
            result = replay(pipeline, ps, ls, progress=progress)
            scored.update((r.transaction_id, (r.event_ts, r.card_hash, r.scores))
                          for r in result.scored)
        pipeline.close()
    if dump:
        _dump(Path(dump) / f"seed{seed}.npz", scored, truth, labels, features, collect)
    rows, visible = evaluated_rows(scored, labels), visible_frauds(purchases, labels, runs)
    for m in MODELS:
        seen, hidden = fraud_ranks(rows, truth, m, visible)
        say(f"  {m}: scores {seen:.1%} of the legitimate purchases below a visible fraud, "
            f"{hidden:.1%} below a hidden one (on average)")
    return {m: evaluate(rows, truth, m, visible, seed) for m in (*MODELS, *CEILINGS)}


def _dump(path: Path, scored: dict, truth: dict, labels: list[dict], features: dict,
          collect: _LogCollector) -> None:
    """Everything the evaluation saw, for studying models offline on the same replay."""
    path.parent.mkdir(parents=True, exist_ok=True)
    txs = list(scored)
    label_at = {lb["transaction_id"]: parse_time(lb["label_time"], "l") for lb in labels}
    np.savez_compressed(
        path, tx=np.array(txs), ts=np.array([scored[t][0] for t in txs]),
        card=np.array([scored[t][1] for t in txs]),
        y=np.array([truth.get(t, False) for t in txs]),
        label_at=np.array([label_at.get(t, math.inf) for t in txs]),
        X=np.array([features[t] for t in txs], dtype=np.float32),
        **{f"score_{m}": np.array([scored[t][2].get(m, np.nan) for t in txs]) for m in MODELS},
        log_X=np.array(collect.rows, dtype=np.float32), log_y=np.array(collect.y),
        log_ts=np.array(collect.ts), log_tx=np.array(collect.tx),
        log_card=np.array(collect.cards), feature_names=np.array(FEATURE_NAMES))


def _say(text: str) -> None:
    print(text, flush=True)


def _quiet() -> None:
    logging.basicConfig(level=logging.ERROR)  # drift notices are not results
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _one_seed(seed: int, args) -> dict[str, tuple[float, float, float]]:
    t = time.perf_counter()
    if args.ceilings_only:
        out = ceilings(seed, args.start)
    else:
        _say(f"seed {seed}: simulating and replaying from {args.start}")
        out = run_seed(seed, args.start, args.train_from, args.kind, args.blend_weight,
                       lambda text: _say(f"seed {seed}: {text.strip()}"), args.dump, args.blend,
                       static_options(args), None if args.no_floor else FLOOR_QUANTILE)
    for model, r in out.items():
        _say(f"seed {seed}: {model:8s} AUC {r[0]:.3f}  AP {r[1]:.3f}  CP@100 {r[2]:.3f}")
    _say(f"seed {seed}: done in {time.perf_counter() - t:.0f} s")
    return out


def static_options(args) -> dict:
    """The static model's settings given on the command line (the rest: its defaults)."""
    options = {"members": args.members, "hidden_units": args.hidden_units,
               "dropout": args.dropout, "learning_rate": args.learning_rate,
               "batch_size": args.batch_size}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()
            if v is not None}


def _cell(values: list[float]) -> str:
    mean = statistics.mean(values)
    return f"{mean:.3f} ± {statistics.stdev(values):.3f}" if len(values) > 1 else f"{mean:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--start", default="2018-06-01", help="first day replayed")
    ap.add_argument("--train-from", default="2018-06-08",
                    help="first day of the static model's training weeks (they end 2018-07-31)")
    ap.add_argument("--kind", default="logreg", help="dynamic model kind")
    ap.add_argument("--blend", choices=BLENDS, default="logit",
                    help="the champion's blend: of log-odds or of probabilities")
    ap.add_argument("--blend-weight", type=float, default=None,
                    help="weight of the dynamic score in the champion's blend (default: "
                    "the best on the validation part of the training weeks)")
    ap.add_argument("--no-floor", action="store_true",
                    help="blend the dynamic score as it is (default, when the weight is "
                    "chosen: counted as at least its median over the last training week)")
    ap.add_argument("--members", type=int, default=None,
                    help="networks in the static model, their log-odds averaged")
    ap.add_argument("--hidden-units", type=int, nargs="+", default=None,
                    help="widths of the static network's hidden layers")
    ap.add_argument("--dropout", type=float, default=None, help="the static network's dropout")
    ap.add_argument("--learning-rate", type=float, default=None,
                    help="the static network's learning rate")
    ap.add_argument("--batch-size", type=int, default=None,
                    help="rows per training step of the static network")
    ap.add_argument("--jobs", type=int, default=1, help="seeds replayed at once (processes)")
    ap.add_argument("--ceilings-only", action="store_true",
                    help="print only the two ceilings (simulated, not replayed: 10-20 s a seed)")
    ap.add_argument("--dump", help="directory to save each seed's scores, features and "
                    "feature log in (seedN.npz), to study models offline")
    args = ap.parse_args()
    _quiet()
    results: dict[str, list[tuple[float, float, float]]] = {}
    with ProcessPoolExecutor(max_workers=max(1, args.jobs),
                             mp_context=multiprocessing.get_context("spawn"),
                             initializer=_quiet) as pool:
        runs = [pool.submit(_one_seed, seed, args) for seed in args.seeds]
        for run in runs:  # in seed order
            for model, r in run.result().items():
                results.setdefault(model, []).append(r)
    print("\n| model | ROC AUC | AP | CP@100 |\n| --- | --- | --- | --- |")
    for name, *vals in PUBLISHED:
        print(f"| {name} (published, batch) | " + " | ".join(f"{v:.3f}" for v in vals) + " |")
    print("| target | " + " | ".join(f">= {v:.2f}" for v in TARGET) + " |")
    for model in (*MODELS, *CEILINGS):
        if model not in results:
            continue
        cols = list(zip(*results[model]))
        print(f"| fraudstream {LABELS[model]} | " + " | ".join(_cell(list(c)) for c in cols)
              + " |")
    how = ("simulated from {}, not replayed" if args.ceilings_only else
           "replayed from {}; static trained from " + args.train_from).format(args.start)
    print(f"(mean ± sd over seeds {args.seeds}; handbook preset, {how}; "
          f"test week {TEST_START} + {TEST_DAYS} days)")


if __name__ == "__main__":
    main()
