"""Store backends for the contract suite: every contract test runs on each of them."""

from __future__ import annotations

import os
import uuid

import pytest

from features.store import StoreConfig


def _embedded(place: str, config: StoreConfig):
    from features.store.embedded import EmbeddedStore

    return EmbeddedStore(place, config)


def _aerospike(place: str, config: StoreConfig):
    hosts = os.environ.get("AEROSPIKE_HOSTS")
    if not hosts:
        pytest.skip("Aerospike contract tests need a server: set AEROSPIKE_HOSTS "
                    "(e.g. 127.0.0.1:3000) and optionally AEROSPIKE_NAMESPACE")
    from features.store.aerospike import AerospikeStore

    namespace = os.environ.get("AEROSPIKE_NAMESPACE", "test")
    return AerospikeStore.from_url(f"aerospike://{hosts}/{namespace}?set_prefix={place}", config)


BACKENDS = {"embedded": _embedded, "aerospike": _aerospike}


@pytest.fixture(params=sorted(BACKENDS))
def make_store(request, tmp_path):
    """``make_store(config=None, fresh=False)``: a store of one backend.

    Every store a test makes shares one place (a directory, or Aerospike set
    names unique to the test), so closing one and making another is a restart;
    ``fresh=True`` gives an empty store in a place of its own.
    """
    backend = request.param

    def new_place() -> str:
        name = f"t{uuid.uuid4().hex[:8]}"
        return str(tmp_path / name) if backend == "embedded" else name

    place = new_place()
    opened = []

    def make(config: StoreConfig | None = None, fresh: bool = False):
        store = BACKENDS[backend](new_place() if fresh else place, config or StoreConfig())
        opened.append(store)
        return store

    make.backend = backend
    yield make
    for store in opened:
        try:
            store.close()
        except Exception:
            pass
