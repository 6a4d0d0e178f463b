"""Adapting the dynamic model to a drift: a background model replaces it only when better."""

from __future__ import annotations

import copy
import random

from models.serving import ADAPT_LABELS, ModelRuntime


def stream(rng: random.Random, fraud_amount: float, legit_amount: float, n: int):
    for _ in range(n):
        is_fraud = rng.random() < 0.1
        amount = (fraud_amount if is_fraud else legit_amount) * rng.uniform(0.8, 1.2)
        yield {"amount": amount}, is_fraud


def trained_runtime(rng) -> ModelRuntime:
    runtime = ModelRuntime()
    for x, y in stream(rng, fraud_amount=900, legit_amount=30, n=20_000):
        runtime.learn(x, y)
    return runtime


def test_a_false_alarm_does_not_throw_away_what_the_model_knew():
    rng = random.Random(1)
    runtime = trained_runtime(rng)
    model = runtime.dynamic
    runtime.on_drift_warning()
    runtime.on_drift()
    for x, y in stream(rng, fraud_amount=900, legit_amount=30, n=2000):
        runtime.learn(x, y)
    # Kept, or replaced by its own fork when that did better on the labels since:
    # either way every label is in it, and it still tells the classes apart.
    assert runtime.dynamic.n_labels == 22_000
    assert runtime.dynamic is model or runtime.background is None
    held_out = list(stream(rng, fraud_amount=900, legit_amount=30, n=2000))
    scores = runtime.dynamic.score_many([x for x, _ in held_out])
    assert min(s for s, (_, y) in zip(scores, held_out) if y) > 0.9
    assert max(s for s, (_, y) in zip(scores, held_out) if not y) < 0.1


def test_a_reversed_pattern_is_learned_by_the_background_model_that_replaces_the_old_one():
    rng = random.Random(2)
    runtime = trained_runtime(rng)
    old = runtime.dynamic
    runtime.on_drift_warning()
    labels = list(stream(rng, fraud_amount=30, legit_amount=900, n=1000))
    for x, y in labels[:200]:
        runtime.learn(x, y)
    runtime.on_drift()
    for x, y in labels[200:]:
        runtime.learn(x, y)
    assert runtime.dynamic is not old and runtime.background is None
    # Forked from the old model at the warning: its labels, plus every label since.
    assert runtime.dynamic.n_labels == 21_000
    assert runtime.score_batch([{"amount": 30.0}]).scores[0]["dynamic"] > \
        runtime.score_batch([{"amount": 900.0}]).scores[0]["dynamic"]


def new_pattern(rng: random.Random, n: int, new: bool = True):
    """The old pattern goes on (frauds at large amounts) and, with ``new``, a new one
    starts: frauds at usual amounts with more items than anyone buys."""
    for _ in range(n):
        u = rng.random()
        if u < 0.03:
            yield {"amount": 900 * rng.uniform(0.8, 1.2), "n_items": float(rng.randint(1, 9))}, True
        elif u < 0.06 and new:
            yield {"amount": 30 * rng.uniform(0.8, 1.2), "n_items": 12.0}, True
        else:
            yield {"amount": 30 * rng.uniform(0.8, 1.2), "n_items": float(rng.randint(1, 9))}, False


def test_the_forked_model_learns_a_new_pattern_sooner_and_keeps_the_old_one():
    rng = random.Random(3)
    adapting = ModelRuntime()
    for x, y in new_pattern(rng, 40_000, new=False):
        adapting.learn(x, y)
    plain = copy.deepcopy(adapting)  # the same model, without a drift signal
    adapting.on_drift_warning()
    adapting.on_drift()
    for x, y in new_pattern(rng, 2_000):
        adapting.learn(x, y)
        plain.learn(x, y)
    assert adapting.background is None and adapting.dynamic.n_labels == 42_000
    probe = {"amount": 30.0, "n_items": 12.0}
    assert adapting.dynamic.score(probe) > 0.3 > 5 * plain.dynamic.score(probe)
    assert adapting.dynamic.score({"amount": 900.0, "n_items": 3.0}) > 0.9  # kept the old one
    assert adapting.dynamic.score({"amount": 30.0, "n_items": 3.0}) < 0.01
    assert 0 < adapting.boost_labels < ADAPT_LABELS
    for x, y in new_pattern(rng, ADAPT_LABELS):
        adapting.learn(x, y)
    assert adapting.boost_labels == 0  # back to its usual pace
