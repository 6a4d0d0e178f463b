"""The champion's blend of the dynamic and static scores, and the choice of its weight."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.champion import blend, blend_many, choose_blend_weight, dynamic_floor
from models.quality import average_precision
from models.serving import ModelRuntime


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def test_the_logit_blend_is_the_weighted_mean_of_log_odds():
    for d, s, w in [(0.01, 0.3, 0.5), (0.9, 0.002, 0.25), (0.5, 0.5, 0.7)]:
        z = w * _logit(d) + (1 - w) * _logit(s)
        assert blend(d, s, w) == pytest.approx(1 / (1 + math.exp(-z)))
        assert blend_many([d], [s], w)[0] == pytest.approx(blend(d, s, w))
    assert blend(0.2, 0.7, 1.0) == pytest.approx(0.2) and blend(0.2, 0.7, 0.0) == pytest.approx(0.7)
    assert blend(0.2, 0.7, 0.25, "mean") == pytest.approx(0.25 * 0.2 + 0.75 * 0.7)


def test_a_small_probability_moves_the_logit_blend_as_much_as_a_large_one():
    """Tripling the odds of either model triples the blend's odds (w = 0.5: by sqrt 3),
    whether the score is tiny or not; a mean of probabilities barely notices a tiny one."""
    def odds(p):
        return p / (1 - p)

    for base in (1e-4, 0.3):
        up = odds(base) * 3 / (1 + odds(base) * 3)
        ratio = odds(blend(up, 0.05, 0.5)) / odds(blend(base, 0.05, 0.5))
        assert ratio == pytest.approx(math.sqrt(3), rel=1e-6)
    assert blend(3e-4, 0.05, 0.5, "mean") - blend(1e-4, 0.05, 0.5, "mean") < 2e-4


def test_scores_of_exactly_0_or_1_stay_finite():
    out = blend_many([0.0, 1.0, 0.0], [1.0, 1.0, 0.0], 0.5)
    assert np.isfinite(out).all() and out[1] > 0.99 and out[2] < 1e-6
    assert out[0] == pytest.approx(0.5)


def test_the_weight_chosen_follows_the_model_that_ranks_the_slice_better():
    rng = np.random.default_rng(0)
    y = rng.random(4000) < 0.05
    sharp = np.where(y, rng.beta(5, 2, y.size), rng.beta(1, 30, y.size))  # separates well
    vague = np.clip(0.02 + 0.05 * y + rng.normal(0, 0.05, y.size), 0.001, 0.999)
    w, tried = choose_blend_weight(sharp, vague, y)
    assert w >= 0.75 and tried[w] == max(tried.values())
    assert choose_blend_weight(vague, sharp, y)[0] <= 0.25  # the same, the other way round
    assert tried[w] == pytest.approx(average_precision(y, blend_many(sharp, vague, w)))


def test_two_complementary_models_get_a_blend_better_than_either():
    rng = np.random.default_rng(1)
    y = rng.random(6000) < 0.05
    kind = rng.random(y.size) < 0.5  # half the frauds show in one model, half in the other
    a = np.clip(0.02 + 0.5 * (y & kind) + rng.normal(0, 0.05, y.size), 1e-4, 1 - 1e-4)
    b = np.clip(0.02 + 0.5 * (y & ~kind) + rng.normal(0, 0.05, y.size), 1e-4, 1 - 1e-4)
    w, tried = choose_blend_weight(a, b, y)
    assert 0.2 <= w <= 0.8
    assert tried[w] > max(tried[0.0], tried[1.0]) + 0.05


def test_ties_go_to_the_even_weight_and_a_one_class_slice_is_refused():
    y = [False, True, False, True]
    s = [0.1, 0.9, 0.2, 0.8]
    assert choose_blend_weight(s, s, y)[0] == 0.5
    with pytest.raises(ValueError, match="frauds and legitimate"):
        choose_blend_weight(s, s, [False] * 4)


def test_the_runtime_refuses_an_unknown_blend():
    with pytest.raises(ValueError, match="unknown blend"):
        ModelRuntime(blend="median")


def test_the_floor_lifts_only_dynamic_scores_below_it():
    d, s = [1e-6, 0.002, 0.3], [0.2, 0.2, 0.2]
    floored = blend_many(d, s, 0.4, floor=0.01)
    assert floored[0] == pytest.approx(blend(0.01, 0.2, 0.4))  # counted as the floor
    assert floored[1] == pytest.approx(blend(0.01, 0.2, 0.4))
    assert floored[2] == pytest.approx(blend(0.3, 0.2, 0.4))  # above it: unchanged
    assert blend(1e-6, 0.2, 0.4, floor=0.01) == pytest.approx(floored[0])
    assert blend_many(d, s, 0.4, "mean", floor=0.01)[0] == pytest.approx(0.4 * 0.01 + 0.6 * 0.2)
    assert blend_many([0.5], [1e-9], 0.5, floor=0.01)[0] < 1e-3  # the static score is not floored
    np.testing.assert_allclose(blend_many(d, s, 0.4, floor=0.0), blend_many(d, s, 0.4))


def test_the_floor_keeps_a_dynamic_outlier_from_burying_a_fraud_the_static_model_sees():
    """A fraud the static model ranks first, scored 1e-7 by the dynamic model: without a
    floor the blend puts it below every legitimate purchase, with one it stays on top."""
    rng = np.random.default_rng(2)
    legit_d, legit_s = rng.uniform(1e-3, 0.05, 200), rng.uniform(1e-3, 0.05, 200)
    d, s = np.r_[legit_d, 1e-7], np.r_[legit_s, 0.9]
    y = np.r_[np.zeros(200, bool), True]
    floor = dynamic_floor(d)
    assert np.min(legit_d) < floor < np.max(legit_d)
    assert average_precision(y, blend_many(d, s, 0.5)) < 0.05
    assert average_precision(y, blend_many(d, s, 0.5, floor=floor)) == 1.0
    w, tried = choose_blend_weight(d, s, y, floor=floor)
    assert tried[w] == 1.0 and tried[0.5] == 1.0


def test_the_dynamic_floor_is_a_quantile_of_the_slice():
    scores = np.linspace(0.0, 1.0, 101)
    assert dynamic_floor(scores) == pytest.approx(0.5)
    assert dynamic_floor(scores, 0.25) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="no dynamic scores"):
        dynamic_floor([])


def test_the_runtime_blends_with_its_floor():
    rt = ModelRuntime(blend_floor=0.01)
    assert rt.blend_floor == 0.01 and ModelRuntime().blend_floor == 0.0
