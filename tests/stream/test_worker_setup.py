"""How the worker sets itself up: its heap once running, its models from settings."""

from __future__ import annotations

import gc

from stream.app import GC_YOUNG_THRESHOLD, settle_heap


def test_the_blend_floor_setting_reaches_the_models(tmp_path):
    from stream.app import build_pipeline
    from stream.settings import Settings

    pipeline = build_pipeline(Settings(data_dir=str(tmp_path), blend_floor=0.002))
    try:
        assert pipeline.models.blend_floor == 0.002
    finally:
        pipeline.close()


def test_settle_heap_freezes_what_lives_and_makes_young_passes_rarer():
    threshold = gc.get_threshold()
    long_lived = [[i] for i in range(1000)]  # noqa: F841 - kept alive across the freeze
    try:
        settle_heap()
        frozen = gc.get_freeze_count()
        assert frozen >= 1000
        assert gc.get_threshold()[0] == GC_YOUNG_THRESHOLD
        assert gc.get_threshold()[1:] == threshold[1:]
        gc.collect()
        assert gc.get_freeze_count() == frozen  # a full collection leaves the frozen alone
    finally:
        gc.unfreeze()
        gc.set_threshold(*threshold)


def test_the_blend_setting_reaches_the_models(tmp_path):
    from stream.app import build_pipeline
    from stream.settings import Settings

    for how in ("logit", "mean"):
        pipeline = build_pipeline(Settings(data_dir=str(tmp_path / how), blend=how))
        try:
            assert pipeline.models.blend == how
        finally:
            pipeline.close()


def test_the_agents_iterate_with_faust_compiled_fast_path(tmp_path):
    # Without the compiled extension the setting does nothing and every event
    # takes the channel's async get again (about a third of the throughput).
    from faust._cython.streams import StreamIterator  # noqa: F401 - built with Faust
    from faust.utils.optin import cython_optimizations_enabled

    from stream.app import build_pipeline, create_app
    from stream.settings import Settings

    settings = Settings(data_dir=str(tmp_path))
    pipeline = build_pipeline(settings)
    try:
        app = create_app(settings, pipeline)
        assert cython_optimizations_enabled(app.conf)
        assert app.conf.cython_optimizations
    finally:
        pipeline.close()
