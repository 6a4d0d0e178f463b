"""The default dynamic model equals river's scaler and logistic regression."""

from __future__ import annotations

import math
import pickle
import random

import numpy as np
from river import compose, linear_model, optim, preprocessing

from features.schemas import FEATURE_NAMES
import pytest

from models.linear import LinearFraudModel, derive, is_log_scaled


def log_scale(x: dict) -> dict:
    return {k: math.log1p(max(v, 0.0)) if is_log_scaled(k) else v for k, v in x.items()}


def test_scores_equal_river_pipeline_on_the_same_stream_missing_features_included():
    rng = random.Random(0)
    river_model = compose.Pipeline(compose.FuncTransformer(log_scale),
                                   preprocessing.StandardScaler(),
                                   linear_model.LogisticRegression(optimizer=optim.SGD(0.005)))
    ours = LinearFraudModel(lr=0.005)
    for i in range(3000):
        x = {k: rng.uniform(0, 50) for k in FEATURE_NAMES if i % 97 or rng.random() < 0.7}
        y = rng.random() < 0.1 + 0.5 * (x.get("amount", 0) > 40)
        assert math.isclose(ours.predict_proba_one(x)[True],
                            river_model.predict_proba_one(x)[True], abs_tol=1e-12)
        ours.learn_one(x, y)
        river_model.learn_one(x, y)


@pytest.mark.parametrize("band_width", [0.0, 0.25])
def test_with_derived_features_scores_equal_river_on_the_derived_dicts(band_width):
    """The amount-to-mean ratios and amount bands, on arrays, are river's pipeline over
    :func:`derive`'s dicts; features missing at first and arriving later included."""
    rng = random.Random(1)
    river_model = compose.Pipeline(
        compose.FuncTransformer(lambda x: derive(log_scale(x), band_width)),
        preprocessing.StandardScaler(),
        linear_model.LogisticRegression(optimizer=optim.SGD(0.005)))
    ours = LinearFraudModel(lr=0.005, derived=True, band_width=band_width)
    for i in range(3000):
        x = {k: rng.lognormvariate(3, 1) if "amount" in k else rng.uniform(0, 50)
             for k in FEATURE_NAMES if i % 97 or rng.random() < 0.7}
        y = rng.random() < 0.1 + 0.5 * (x.get("amount", 0) > 40)
        assert math.isclose(ours.predict_proba_one(x)[True],
                            river_model.predict_proba_one(x)[True], abs_tol=1e-12)
        ours.learn_one(x, y)
        river_model.learn_one(x, y)
    assert len(ours.columns) == len(FEATURE_NAMES) + 6 + (32 if band_width else 0)


def test_amount_bands_learn_a_step_the_log_amount_alone_cannot():
    """Fraud exactly above 220 whatever else: with bands the ranking is near perfect."""
    rng = random.Random(2)
    rows = [({"amount": rng.uniform(5, 400), "card_mean_amount_7d": rng.uniform(5, 100),
              "is_night": float(rng.random() < 0.2)}, None) for _ in range(20_000)]
    rows = [(x, x["amount"] > 220 and x["amount"] < 260) for x, _ in rows]

    def auc(model) -> float:
        for x, y in rows[:15_000]:
            model.learn_one(x, y)
        scored = [(model.predict_proba_one(x)[True], y) for x, y in rows[15_000:]]
        pos = [s for s, y in scored if y]
        neg = [s for s, y in scored if not y]
        return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / len(pos) / len(neg)

    plain = auc(LinearFraudModel())
    banded = auc(LinearFraudModel(derived=True, band_width=0.1))
    assert banded > 0.97 and banded > plain + 0.2, (plain, banded)


def test_reasons_name_the_amount_to_mean_ratio_with_its_plain_value():
    m = LinearFraudModel(derived=True, band_width=0.1)
    for i in range(400):
        m.learn_one({"amount": 20.0 + i % 7, "card_mean_amount_7d": 22.0}, False)
        m.learn_one({"amount": 110.0 + i % 5, "card_mean_amount_7d": 30.0}, True)
    x = {"amount": 110.0, "card_mean_amount_7d": 22.0}
    push = m.contributions(x)
    assert set(push) == {"amount", "card_mean_amount_7d", "amount_to_card_mean_7d"}
    assert push["amount_to_card_mean_7d"] > 0
    assert math.isclose(m.values(x)["amount_to_card_mean_7d"], 111.0 / 23.0)


def test_a_model_survives_pickling_with_its_state():
    m = LinearFraudModel()
    for i in range(100):
        m.learn_one({"amount": float(i), "is_night": float(i % 2)}, i > 80)
    copy = pickle.loads(pickle.dumps(m))
    x = {"amount": 90.0, "is_night": 1.0}
    assert copy.predict_proba_one(x) == m.predict_proba_one(x)


def test_the_dynamic_model_explains_a_purchase_far_above_the_cards_usual_amount():
    from models.dynamic import DynamicModel

    rng = random.Random(3)
    m = DynamicModel()
    for _ in range(3000):
        usual = rng.uniform(10, 100)
        fraud = rng.random() < 0.05
        price = usual * (5 if fraud else rng.uniform(0.5, 1.5))
        m.learn({"amount": price, "card_mean_amount_30d": usual, "is_night": 0.0}, fraud)
    x = {"amount": 250.0, "card_mean_amount_30d": 50.0, "is_night": 0.0}
    assert m.score(x) > 0.5 > m.score({**x, "amount": 50.0})
    reasons = {r["feature"]: r for r in m.reasons(x)}
    assert "amount_to_card_mean_30d" in reasons
    assert reasons["amount_to_card_mean_30d"]["value"] == round(251.0 / 51.0, 6)


def test_a_model_pickled_before_the_derived_columns_existed_still_scores_the_same():
    m = LinearFraudModel()
    for i in range(300):
        m.learn_one({"is_night": float(i % 2), "amount": float(i), "card_count_1d": i % 5}, i > 250)
    x = {"is_night": 1.0, "amount": 260.0, "card_count_1d": 3.0}
    expected = m.predict_proba_one(x)[True]
    # What an older version pickled: inputs in the order first seen, no derived columns.
    order = ["is_night", "amount", "card_count_1d"]
    where = [m.names.index(n) for n in order]
    state = {k: v for k, v in m.__dict__.items()
             if k not in ("columns", "_n_log", "_n_base", "_n_ratios", "_ratios", "_amount",
                          "_edges", "_edge_list")}
    state.update(names=order, _index={n: i for i, n in enumerate(order)},
                 **{k: m.__dict__[k][where] for k in ("count", "mean", "m2", "weights", "_log")})
    old = LinearFraudModel.__new__(LinearFraudModel)
    old.__setstate__(state)
    assert math.isclose(old.predict_proba_one(x)[True], expected, abs_tol=1e-15)


def test_a_micro_batch_scores_as_each_event_alone():
    from models.dynamic import DynamicModel

    rng = np.random.default_rng(3)
    model = DynamicModel()
    xs = [{k: float(v) for k, v in zip(FEATURE_NAMES, rng.lognormal(1.0, 2.0, len(FEATURE_NAMES)))}
          for _ in range(400)]
    for i, x in enumerate(xs[:300]):
        model.learn(x, x["amount"] > 20.0 or i % 50 == 0)
    xs.append({**xs[0], "amount": 1e9})  # far beyond the bands and the sigmoid's range
    many = model.score_many(xs)
    one = [model.score(x) for x in xs]
    assert len(many) == len(one) == 401
    assert max(abs(a - b) for a, b in zip(many, one)) < 1e-12
    assert model.score_many(xs[:2] + [{"amount": 5.0}]) == [model.score(x) for x in
                                                          xs[:2] + [{"amount": 5.0}]]


@pytest.mark.parametrize("derived,band_width", [(False, 0.0), (True, 0.0), (True, 0.1)])
def test_the_compiled_kernels_equal_the_array_code_to_the_last_bit(derived, band_width):
    """Learning and scoring of complete vectors (kernels) against the array code on the same
    stream: features missing now and then, new features appearing, amounts beyond the bands."""
    rng = random.Random(4)
    fast = LinearFraudModel(derived=derived, band_width=band_width)
    ref = LinearFraudModel(derived=derived, band_width=band_width)
    names = list(FEATURE_NAMES)
    for i in range(4000):
        known = names[:6] if i < 300 else names[:18] if i < 1200 else names
        x = {k: rng.lognormvariate(3, 1.5) if "amount" in k else rng.uniform(0, 50)
             for k in known if i % 37 or rng.random() < 0.8}
        if i % 211 == 0 and "amount" in x:
            x["amount"] = rng.choice([1e9, 0.0, 1e-9])
        y = rng.random() < 0.2
        assert fast.predict_proba_one(x)[True] == ref._predict_arrays(x)
        fast.learn_one(x, y, w=1.0 if y else 0.5)
        ref._learn_arrays(x, y, w=1.0 if y else 0.5)
    assert fast.columns == ref.columns
    for name in ("count", "mean", "m2", "weights", "_inv_std"):
        assert np.array_equal(getattr(fast, name), getattr(ref, name)), name
    assert fast.intercept == ref.intercept


def test_explain_ranks_what_contributions_and_values_give():
    rng = random.Random(11)
    names = ["amount", "card_mean_amount_1d", "user_mean_amount_7d", "card_count_1d", "is_night",
             "seller_risk_7d"]
    for band_width in (0.0, 0.1, 1.0):
        m = LinearFraudModel(derived=True, band_width=band_width)
        for i in range(600):
            x = {n: rng.uniform(0, 300) if "amount" in n else rng.random() for n in names}
            m.learn_one(x, rng.random() < 0.1 + 0.5 * (x["amount"] > 200))
        for _ in range(200):
            x = {n: rng.uniform(0, 300) if "amount" in n else rng.random() for n in names}
            if rng.random() < 0.2:
                del x[rng.choice(names)]  # a missing feature
            push, values = m.contributions(x), m.values(x)
            for top in (1, 3, 10):
                expected = sorted(((k, values[k], p) for k, p in push.items()
                                   if p > 0 and math.isfinite(p)),
                                  key=lambda kvp: kvp[2], reverse=True)[:top]
                got = m.explain(x, top)
                assert [k for k, _, _ in got] == [k for k, _, _ in expected]
                for (_, value, p), (_, value_e, p_e) in zip(got, expected):
                    assert math.isclose(value, value_e, rel_tol=1e-12)
                    assert math.isclose(p, p_e, rel_tol=1e-9, abs_tol=1e-12)


@pytest.mark.parametrize("derived,band_width", [(False, 0.0), (True, 0.1)])
def test_learning_a_batch_equals_learning_one_by_one_to_the_last_bit(derived, band_width):
    """Batches of complete vectors (one kernel call), with weights, repeated steps and
    batches with a missing or a new feature (one by one), against learn_one in order."""
    rng = random.Random(8)
    batch = LinearFraudModel(derived=derived, band_width=band_width)
    one = LinearFraudModel(derived=derived, band_width=band_width)
    names = list(FEATURE_NAMES)
    for k in range(60):
        known = names[:10] if k < 10 else names
        xs = [{n: rng.lognormvariate(3, 1.5) if "amount" in n else rng.uniform(0, 50)
               for n in known} for _ in range(rng.randint(0, 90))]
        if k % 13 == 5 and xs:
            del xs[0][known[3]]
        if xs and k % 17 == 3:
            xs[-1]["amount"] = 1e9
        ys = [rng.random() < 0.2 for _ in xs]
        ws = [2.0 if y else 1.0 for y in ys]
        steps = [rng.choice([1, 1, 5]) for _ in xs] if k % 3 == 0 else None
        batch.learn_many(xs, ys, ws, steps)
        for i, (x, y, w) in enumerate(zip(xs, ys, ws)):
            for _ in range(1 if steps is None else steps[i]):
                one.learn_one(x, y, w)
        x = xs[0] if xs else {n: 1.0 for n in names}
        assert batch.predict_proba_one(x) == one.predict_proba_one(x)
    assert batch.columns == one.columns
    for name in ("count", "mean", "m2", "weights", "_inv_std"):
        assert np.array_equal(getattr(batch, name), getattr(one, name)), name
    assert batch.intercept == one.intercept


def test_features_read_back_packed_are_learned_as_their_dicts_to_the_last_bit():
    """A label's snapshot from the store has its features packed (float64 in the store's
    order); a batch of them is learned as the same batch of dicts, and one alone too."""
    from features.columnar import REFERENCE_ORDER
    from features.packed import VALUES, PackedFeatures

    rng = random.Random(3)
    packed, plain = (LinearFraudModel(derived=True, band_width=0.1) for _ in range(2))
    for k in range(20):
        dicts = [{n: rng.lognormvariate(3, 1.5) if "amount" in n else rng.uniform(0, 50)
                  for n in REFERENCE_ORDER} for _ in range(rng.randint(1, 40))]
        xs = [PackedFeatures(VALUES.pack(*d.values())) for d in dicts]
        ys = [rng.random() < 0.2 for _ in xs]
        ws = [1.0] * len(xs)
        if k % 4 == 3:  # one alone goes through the mapping
            packed.learn_one(xs[0], ys[0])
            plain.learn_one(dicts[0], ys[0])
        assert packed.learn_many(xs, ys, ws, None, "before") == \
            plain.learn_many(dicts, ys, ws, None, "before")
    for name in ("count", "mean", "m2", "weights"):
        assert np.array_equal(getattr(packed, name), getattr(plain, name)), name
    assert packed.intercept == plain.intercept


def test_the_runtime_learns_a_batch_as_one_by_one_boost_and_background_included():
    from models.serving import ADAPT_BOOST, ModelRuntime

    rng = np.random.default_rng(5)
    xs = [{k: float(v) for k, v in zip(FEATURE_NAMES, rng.lognormal(1.0, 2.0, len(FEATURE_NAMES)))}
          for _ in range(900)]
    ys = [bool(x["amount"] > 20.0) for x in xs]
    batch, one = ModelRuntime(fraud_weight=3.0), ModelRuntime(fraud_weight=3.0)
    for rt in (batch, one):
        rt.boost_labels = 150  # as after a swap: boosted, then at the usual pace
    for part in (slice(0, 100), slice(100, 400)):
        batch.learn_many(xs[part], ys[part])
        for x, y in zip(xs[part], ys[part]):
            one.learn(x, y)
    for rt in (batch, one):
        rt.on_drift_warning()  # a background model: one by one, both learn and are judged
    batch.learn_many(xs[400:], ys[400:])
    for x, y in zip(xs[400:], ys[400:]):
        one.learn(x, y)
    assert ADAPT_BOOST > 1 and batch.boost_labels == one.boost_labels == 0
    for a, b in ((batch.dynamic, one.dynamic), (batch.background, one.background)):
        assert (a.n_labels, a.n_frauds) == (b.n_labels, b.n_frauds)
        la, lb = a._linear(), b._linear()
        assert np.array_equal(la.weights, lb.weights) and la.intercept == lb.intercept
        assert np.array_equal(la.mean, lb.mean) and np.array_equal(la.m2, lb.m2)
    assert batch.unpublished == one.unpublished and batch._contest == one._contest


@pytest.mark.parametrize("kind", ["logreg", "hoeffding"])
def test_the_dynamic_model_learns_a_batch_with_steps_as_one_by_one(kind):
    from models.dynamic import DynamicModel
    from models.serving import _learn

    rng = np.random.default_rng(8)
    xs = [{k: float(v) for k, v in zip(FEATURE_NAMES, rng.lognormal(1.0, 2.0, len(FEATURE_NAMES)))}
          for _ in range(300)]
    ys = [bool(x["amount"] > 20.0) for x in xs]
    steps = [3 if i < 40 else 1 for i in range(len(xs))]
    batch, one = DynamicModel(kind, fraud_weight=2.0), DynamicModel(kind, fraud_weight=2.0)
    batch.learn_many(xs, ys, steps)
    for x, y, k in zip(xs, ys, steps):
        _learn(one, x, y, k)
    assert (batch.n_labels, batch.n_frauds) == (one.n_labels, one.n_frauds) == (300, sum(ys))
    assert [batch.score(x) for x in xs[:50]] == [one.score(x) for x in xs[:50]]


@pytest.mark.parametrize("kind", ["logreg", "hoeffding"])
def test_a_background_model_judged_on_a_batch_as_one_by_one_until_it_is_dropped(kind,
                                                                                 monkeypatch):
    """With a background model, a batch is learned and scored by both models at once, with the
    contest, the boost and the drop at its last label as :meth:`ModelRuntime.learn` in order."""
    from models import serving

    monkeypatch.setattr(serving, "BACKGROUND_MAX_LABELS", 700)
    rng = np.random.default_rng(11)
    xs = [{k: float(v) for k, v in zip(FEATURE_NAMES, rng.lognormal(1.0, 2.0, len(FEATURE_NAMES)))}
          for _ in range(1200)]
    ys = [bool(x["amount"] > 20.0) for x in xs]
    xs[650].pop("amount")  # a batch with an incomplete dict is learned without the kernel
    batch, one = (serving.ModelRuntime(kind=kind, fraud_weight=2.0) for _ in range(2))
    for rt in (batch, one):
        rt.dynamic = serving.DynamicModel(kind, 2.0)
        rt.learn_many(xs[:100], ys[:100])
        rt.boost_labels = 130  # boosted while the background model is judged
        rt.on_drift_warning()
    for part in (slice(100, 400), slice(400, 640), slice(640, 660), slice(660, 1000)):
        batch.learn_many(xs[part], ys[part])
    for x, y in zip(xs[100:1000], ys[100:1000]):
        one.learn(x, y)
    assert batch.background is None is one.background  # dropped after its 700th label
    assert batch._contest == one._contest and batch._background_labels == 700
    assert (batch.boost_labels, batch.unpublished) == (one.boost_labels, one.unpublished)
    assert (batch.dynamic.n_labels, batch.dynamic.n_frauds) == (one.dynamic.n_labels,
                                                                one.dynamic.n_frauds)
    assert [batch.dynamic.score(x) for x in xs[1000:]] == [one.dynamic.score(x) for x in xs[1000:]]


def test_labels_that_may_swap_the_background_model_in_are_learned_as_one_by_one():
    from models.serving import ModelRuntime

    rng = np.random.default_rng(12)
    xs = [{k: float(v) for k, v in zip(FEATURE_NAMES, rng.lognormal(1.0, 2.0, len(FEATURE_NAMES)))}
          for _ in range(1500)]
    ys = [bool(x["amount"] > 20.0) for x in xs]
    batch, one = ModelRuntime(), ModelRuntime()
    flipped = [not y for y in ys]  # the pattern reverses: the background model adapts sooner
    for rt in (batch, one):
        rt.learn_many(xs[:300], ys[:300])
        rt.on_drift()  # too few labels since the warning to judge: the swap is pending
        assert rt.swap_pending and rt.background is not None
    for part in (slice(300, 700), slice(700, 1500)):
        batch.learn_many(xs[part], flipped[part])
    for x, y in zip(xs[300:], flipped[300:]):
        one.learn(x, y)
    assert batch.background is None is one.background and batch.boost_labels > 0
    assert batch._contest == one._contest and batch.boost_labels == one.boost_labels
    assert [batch.dynamic.score(x) for x in xs[:100]] == [one.dynamic.score(x) for x in xs[:100]]
