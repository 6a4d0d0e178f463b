"""Adapting the dynamic model to a drift: a background model replaces it only when better."""

from __future__ import annotations

import random

from models.serving import ModelRuntime


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


def test_a_false_alarm_keeps_the_trained_model():
    rng = random.Random(1)
    runtime = trained_runtime(rng)
    model = runtime.dynamic
    runtime.on_drift_warning()
    runtime.on_drift()
    for x, y in stream(rng, fraud_amount=900, legit_amount=30, n=2000):
        runtime.learn(x, y)
    assert runtime.dynamic is model and runtime.dynamic.n_labels == 22_000


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
    assert runtime.dynamic.n_labels == 1000  # it learned from the warning on
    assert runtime.score_batch([{"amount": 30.0}]).scores[0]["dynamic"] > \
        runtime.score_batch([{"amount": 900.0}]).scores[0]["dynamic"]
