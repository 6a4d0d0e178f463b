"""Model versions: publishing, hot swap, rollback, restart and tampering."""

from __future__ import annotations

import pytest

from models.registry import ModelRegistry, TamperedSnapshot
from models.serving import ModelRuntime

FRAUD = {"amount": 900.0, "card_recent_velocity": 0.8}
LEGIT = {"amount": 20.0, "card_recent_velocity": 0.0}


def teach(runtime: ModelRuntime, rounds: int = 50) -> None:
    for _ in range(rounds):
        runtime.learn(FRAUD, True)
        runtime.learn(LEGIT, False)


def runtime(tmp_path, **kw) -> ModelRuntime:
    kw.setdefault("refresh_seconds", 0.0)
    return ModelRuntime(ModelRegistry(tmp_path, "dynamic"), publish_every_labels=10, **kw)


def test_a_published_version_reaches_another_worker_without_restart(tmp_path):
    learner, scorer = runtime(tmp_path), runtime(tmp_path)
    before = scorer.score_batch([FRAUD]).scores[0]["dynamic"]
    teach(learner)
    learner.maybe_publish()
    decision = scorer.score_batch([FRAUD])
    assert decision.versions["dynamic"] == learner.version >= 1
    assert decision.scores[0]["dynamic"] > before


def test_rollback_reaches_every_worker_and_the_learner(tmp_path):
    learner, scorer = runtime(tmp_path), runtime(tmp_path)
    learner.maybe_publish(force=True)  # nothing learned: nothing published
    assert learner.version == 0
    teach(learner, 5)
    learner.maybe_publish()
    v1_score = scorer.score_batch([FRAUD]).scores[0]["dynamic"]
    teach(learner, 200)
    learner.maybe_publish()
    assert scorer.score_batch([FRAUD]).scores[0]["dynamic"] > v1_score
    ModelRegistry(tmp_path, "dynamic").rollback(1)
    assert scorer.score_batch([FRAUD]).scores[0]["dynamic"] == pytest.approx(v1_score)
    assert learner.score_batch([FRAUD]).versions["dynamic"] == 1
    teach(learner, 10)
    learner.maybe_publish()
    assert learner.version == 3  # learning goes on from the rolled-back version


def test_a_restarted_worker_resumes_the_newest_version(tmp_path):
    learner = runtime(tmp_path)
    teach(learner)
    learner.maybe_publish()
    restarted = runtime(tmp_path)
    assert restarted.version == learner.version
    assert restarted.dynamic.n_labels == learner.dynamic.n_labels == 100
    assert restarted.score_batch([FRAUD]).scores == learner.score_batch([FRAUD]).scores


def test_a_tampered_snapshot_is_refused(tmp_path):
    learner = runtime(tmp_path)
    teach(learner)
    learner.maybe_publish()
    path = tmp_path / "dynamic" / f"v{learner.version:06d}.pkl"
    blob = bytearray(path.read_bytes())
    blob[-2] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(TamperedSnapshot):
        ModelRegistry(tmp_path, "dynamic").load()
    with pytest.raises(TamperedSnapshot):
        runtime(tmp_path)


def test_only_a_bounded_number_of_versions_is_kept(tmp_path):
    registry = ModelRegistry(tmp_path, "dynamic", keep=3)
    for n in range(5):
        registry.publish({"n": n}, n_labels=n)
    assert [v.version for v in registry.versions()] == [3, 4, 5]
    assert len(list((tmp_path / "dynamic").glob("v*.pkl"))) == 3
    with pytest.raises(KeyError):
        registry.rollback(1)
