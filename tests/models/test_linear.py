"""The default dynamic model equals river's scaler and logistic regression."""

from __future__ import annotations

import math
import pickle
import random

from river import compose, linear_model, optim, preprocessing

from features.schemas import FEATURE_NAMES
from models.linear import LinearFraudModel, is_log_scaled


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


def test_a_model_survives_pickling_with_its_state():
    m = LinearFraudModel()
    for i in range(100):
        m.learn_one({"amount": float(i), "is_night": float(i % 2)}, i > 80)
    copy = pickle.loads(pickle.dumps(m))
    x = {"amount": 90.0, "is_night": 1.0}
    assert copy.predict_proba_one(x) == m.predict_proba_one(x)
