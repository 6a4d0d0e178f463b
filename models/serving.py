"""Models at serving time: scoring, learning, publishing and hot-swapping versions.

One :class:`ModelRuntime` per worker. Every model scores every event: the
dynamic model, the static model when one is configured, and their ``blend``
(by default in log-odds, ``blend_weight`` on the dynamic score: see
:mod:`models.champion`). The ``champion`` (a setting) decides alerts; the
others run in shadow and are measured the same way.

Every worker scores; the worker that
receives labels learns and publishes a new version of the dynamic model every
``publish_every_labels`` labels or ``publish_every_seconds`` seconds. Every
worker checks the registry every ``refresh_seconds`` and swaps to the current
version between two micro-batches, so scoring never pauses, and a rollback
reaches every worker (the learner included) the same way.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

from models.champion import blend_many, check_blend
from models.drift import log_loss
from models.dynamic import DynamicModel
from models.registry import ModelRegistry

log = logging.getLogger(__name__)

BACKGROUND_MAX_LABELS = 20_000  # a background model not better by then is dropped
ADAPT_BOOST = 5  # an adapting model takes this many learning steps per label...
ADAPT_LABELS = 10_000  # ...for this many labels after it replaced the old one (about a day)
SWAP_MARGIN = 0.05  # it replaces the old one when its log-loss is lower by this share


@dataclass(slots=True)
class Decision:
    scores: list[dict[str, float]]  # per event: model name -> score
    champion: str
    versions: dict[str, int]
    ready: bool = True  # False while the champion has too few labels to be trusted


class ModelRuntime:
    """The models of one worker.

    >>> rt = ModelRuntime()
    >>> d = rt.score_batch([{"amount": 1.0}])
    >>> d.champion, d.scores, d.versions, d.ready
    ('dynamic', [{'dynamic': 0.5}], {'dynamic': 0}, False)
    """

    def __init__(self, registry: ModelRegistry | None = None, kind: str = "logreg",
                 fraud_weight: float = 1.0, publish_every_labels: int = 500,
                 publish_every_seconds: float = 30.0, refresh_seconds: float = 1.0,
                 warmup_frauds: int = 10, warmup_legit: int = 100,
                 static_model_dir: str | None = None, champion: str = "dynamic",
                 blend_weight: float = 0.5, blend: str = "logit", blend_floor: float = 0.0):
        self.registry = registry
        self.kind = kind
        self.fraud_weight = fraud_weight
        self.publish_every_labels = publish_every_labels
        self.publish_every_seconds = publish_every_seconds
        self.refresh_seconds = refresh_seconds
        self.warmup_frauds = warmup_frauds
        self.warmup_legit = warmup_legit
        self.dynamic = DynamicModel(kind, fraud_weight)
        self.background: DynamicModel | None = None  # learning since a drift warning
        self.boost_labels = 0  # labels the current model still learns with a boost
        self._background_labels = self._background_frauds = 0  # since the warning
        self._contest = [0.0, 0.0]  # log-loss since the warning: background, current
        self.swap_pending = False
        self.version = 0
        self.unpublished = 0
        self.label_seq = 0  # applied labels (store sequence) this model has learned
        self._last_publish = time.monotonic()
        self._last_refresh = 0.0
        self.static = None
        self.static_dir = static_model_dir or None
        self._static_stamp = None
        self.blend_weight = blend_weight
        self.blend = check_blend(blend)
        self.blend_floor = blend_floor  # the least the dynamic score counts as in the blend
        if champion not in ("dynamic", "static", "blend"):
            raise ValueError(f"unknown champion {champion!r}: dynamic, static or blend")
        if champion != "dynamic" and not self.static_dir:
            raise ValueError(f"champion {champion!r} needs a static model: set the static "
                             "model directory (train one with: fraudstream train-static)")
        self.champion = champion
        self._refresh(force=True)

    def _refresh(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_refresh < self.refresh_seconds:
            return
        self._last_refresh = now
        if self.static_dir:
            self._refresh_static()
        if self.registry is None:
            return
        current = self.registry.current_version()
        if current is None or current == self.version:
            return
        info, model = self.registry.load(current)
        if self.unpublished:
            log.warning("model version %d became current while %d labels were not yet "
                        "published; continuing from version %d", current, self.unpublished,
                        current)
        self.dynamic, self.version, self.unpublished = model, info.version, 0
        self.label_seq = info.label_seq
        log.info("dynamic model now at version %d (%d labels)", info.version, info.n_labels)

    def _refresh_static(self) -> None:
        """Load the static model, again whenever its directory gets a new version."""
        from models.static import StaticModel, StaticModelError

        meta = Path(self.static_dir) / "metadata.json"
        try:
            stamp = meta.stat().st_mtime_ns
        except FileNotFoundError:
            if self.static is None:
                raise
            return
        if stamp == self._static_stamp:
            return
        try:
            self.static = StaticModel.load(self.static_dir)
        except StaticModelError:
            if self.static is None:  # no model to fall back on: say so at start
                raise
            log.warning("static model in %s could not be reloaded; keeping version %s",
                        self.static_dir, self.static.version, exc_info=True)
            return
        self._static_stamp = stamp
        log.info("static model version %s loaded from %s", self.static.version, self.static_dir)

    def attach_static(self, model_dir: str, champion: str | None = None) -> None:
        """Score with the static model in ``model_dir`` from the next batch on.

        For a runtime started without one (a static model trained while the
        stream ran); ``champion`` optionally changes which score decides.
        """
        from models.static import METADATA_FILE, StaticModelError

        if champion is not None and champion not in ("dynamic", "static", "blend"):
            raise ValueError(f"unknown champion {champion!r}: dynamic, static or blend")
        if not (Path(model_dir) / METADATA_FILE).is_file():
            raise StaticModelError(f"{model_dir} is not a static model directory: no "
                                   f"{METADATA_FILE}")
        previous = (self.static_dir, self.static, self._static_stamp)
        self.static_dir, self.static, self._static_stamp = str(model_dir), None, None
        try:
            self._refresh_static()
        except Exception:
            self.static_dir, self.static, self._static_stamp = previous
            raise
        if champion is not None:
            self.champion = champion

    def models(self) -> tuple[str, ...]:
        """The names of the models that score each event."""
        return ("dynamic", "static", "blend") if self.static_dir else ("dynamic",)

    def score_batch(self, xs: Sequence[Mapping[str, float]]) -> Decision:
        """Every model's score of each feature dict (one static call per micro-batch)."""
        self._refresh()
        dynamic = self.dynamic.score_many(xs)
        if self.static is None:
            scores = [{"dynamic": d} for d in dynamic]
        else:
            static = self.static.score_dicts(xs)
            blended = blend_many(dynamic, static, self.blend_weight, self.blend,
                                 self.blend_floor).tolist()
            scores = [{"dynamic": d, "static": s, "blend": b}
                      for d, s, b in zip(dynamic, static, blended)]
        return Decision(scores, self.champion, self.versions(), self.ready())

    def versions(self) -> dict[str, int]:
        """The version each model scores with now (the blend: the dynamic one's)."""
        out = {"dynamic": self.version}
        if self.static is not None:
            out["static"] = int(self.static.version)
            out["blend"] = self.version
        return out

    def ready(self) -> bool:
        """Whether the champion has learned from enough labels of both classes to alert.

        A model that has seen a handful of labels (and with late labels, the
        first ones are mostly frauds) would alert on nearly everything; the
        static model was trained offline and is ready as soon as it is loaded.
        """
        return self.champion != "dynamic" or self._trained(self.dynamic)

    def learn(self, x: Mapping[str, float], is_fraud: bool) -> None:
        boosted = self.boost_labels > 0
        self.boost_labels -= boosted
        _learn(self.dynamic, x, is_fraud, ADAPT_BOOST if boosted else 1)
        self.unpublished += 1
        background = self.background
        if background is not None:
            # Both are judged on the same labels, each before learning from them.
            self._contest[0] += log_loss(background.score(x), is_fraud)
            self._contest[1] += log_loss(self.dynamic.score(x), is_fraud)
            _learn(background, x, is_fraud, ADAPT_BOOST)
            self._background_labels += 1
            self._background_frauds += bool(is_fraud)
            if self.swap_pending:
                self._swap_if_better()
            if (self._background_labels >= BACKGROUND_MAX_LABELS
                    and self.background is background):
                log.info("background dynamic model dropped: after %d labels it is not better "
                         "than the current one", self._background_labels)
                self.background, self.swap_pending = None, False

    def learn_many(self, xs: Sequence[Mapping[str, float]], ys: Sequence[bool]) -> None:
        """:meth:`learn` of each example in order, with the same result.

        Each model learns the whole batch at once (boosted labels included).
        With a background model both also score each label as :meth:`learn`
        does (the background model before it learns it, the current one
        after), and the contest adds up their log-losses in order; the batch
        stops where the background model reaches its last label, and labels
        that may swap the models in (after a confirmed drift) are learned one
        by one.
        """
        background = self.background
        if background is not None:
            if self.swap_pending:
                for x, y in zip(xs, ys):
                    self.learn(x, y)
                return
            k = max(1, BACKGROUND_MAX_LABELS - self._background_labels)  # up to its last label
            if k < len(xs):
                self.learn_many(xs[:k], ys[:k])
                self.learn_many(xs[k:], ys[k:])
                return
        n = len(xs)
        if not n:
            return
        boosted = min(max(self.boost_labels, 0), n)
        self.boost_labels -= boosted
        steps = [ADAPT_BOOST] * boosted + [1] * (n - boosted) if boosted else None
        self.unpublished += n
        if background is None:
            self.dynamic.learn_many(xs, ys, steps)
            return
        current = self.dynamic.learn_many(xs, ys, steps, scored="after")
        judged = background.learn_many(xs, ys, [ADAPT_BOOST] * n, scored="before")
        contest = self._contest
        for b, c, y in zip(judged, current, ys):
            contest[0] += log_loss(b, y)
            contest[1] += log_loss(c, y)
        self._background_labels += n
        self._background_frauds += sum(map(bool, ys))
        if self._background_labels >= BACKGROUND_MAX_LABELS:
            log.info("background dynamic model dropped: after %d labels it is not better "
                     "than the current one", self._background_labels)
            self.background, self.swap_pending = None, False

    def on_drift_warning(self) -> None:
        """The error rises: fork the current model into a background model that adapts faster.

        The background model starts as a copy of the current one (it keeps
        what still holds: the old patterns do not stop when a new one
        starts) and takes ``ADAPT_BOOST`` learning steps per label, so a new
        pattern moves its weights that much sooner.
        """
        if self.background is None:
            self.background = copy.deepcopy(self.dynamic)
            self._contest = [0.0, 0.0]
            self._background_labels = self._background_frauds = 0
            log.info("drift warning: background dynamic model forked from version %d",
                     self.version)

    def on_drift(self) -> None:
        """A confirmed drift: the background model replaces the current one if it is better.

        It replaces the current model once it has learned from enough labels
        of both classes since the warning and its log-loss on those labels
        (each scored before it learned from it) is lower than the current
        model's on the same labels by ``SWAP_MARGIN``, so a false alarm
        keeps the current model. The new model keeps learning with the boost for
        ``ADAPT_LABELS`` labels more, then at its usual pace.
        """
        self.on_drift_warning()
        self.swap_pending = True
        self._swap_if_better()

    def _swap_if_better(self) -> None:
        frauds = self._background_frauds
        if (frauds >= self.warmup_frauds and self._background_labels - frauds >= self.warmup_legit
                and self._contest[0] < (1.0 - SWAP_MARGIN) * self._contest[1]):
            self._swap()

    def _trained(self, model: DynamicModel) -> bool:
        return model.n_frauds >= self.warmup_frauds and \
            model.n_labels - model.n_frauds >= self.warmup_legit

    def _swap(self) -> None:
        self.dynamic, self.background, self.swap_pending = self.background, None, False
        self.boost_labels = ADAPT_LABELS
        n = self._background_labels
        log.warning("drift: dynamic model replaced by the background model adapted on the %d "
                    "labels since the warning (mean log-loss %.4f against %.4f for the "
                    "replaced one on the same labels)", n, self._contest[0] / n,
                    self._contest[1] / n)
        self.unpublished += 1
        self.maybe_publish(force=True)

    def maybe_publish(self, force: bool = False) -> None:
        """Publish a new version when enough labels or time have passed."""
        if self.registry is None or not self.unpublished:
            return
        due = (self.unpublished >= self.publish_every_labels
               or time.monotonic() - self._last_publish >= self.publish_every_seconds)
        if not (force or due):
            return
        self._refresh(force=True)  # a rollback wins over what was learned since
        if not self.unpublished:
            return
        try:
            info = self.registry.publish(self.dynamic, self.dynamic.n_labels, kind=self.kind,
                                         label_seq=self.label_seq)
        except OSError as exc:
            log.warning("could not publish the dynamic model (%s); retrying after the next "
                        "labels", exc)
            return
        self.version, self.unpublished = info.version, 0
        self._last_publish = time.monotonic()
        log.info("published dynamic model version %d (%d labels)", info.version, info.n_labels)

    def reasons(self, model: str, x: Mapping[str, float]) -> list[dict]:
        """Why the score is high: the dynamic model's weighted contributions.

        For the static and blended scores this is an approximation: the
        network has no per-feature weights, and the linear model's reasons
        over the same features are what an analyst can read.
        """
        return self.dynamic.reasons(x)


def _learn(model: DynamicModel, x: Mapping[str, float], is_fraud: bool, steps: int) -> None:
    """Learn one label in ``steps`` learning steps, counted as one label."""
    for _ in range(steps):
        model.learn(x, is_fraud)
    model.n_labels -= steps - 1
    model.n_frauds -= (steps - 1) * bool(is_fraud)
