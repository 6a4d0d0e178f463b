"""Feature stores: the protocol and its backends, chosen by URL.

``embedded:///path/to/dir`` (the default) keeps state in SQLite on local disk;
``aerospike://host:3000,host2:3000/namespace`` uses an Aerospike cluster.
"""

from __future__ import annotations

from urllib.parse import urlparse

from features.store.base import FeatureStore, Snapshot, StoreConfig, StoreUnavailable

__all__ = ["FeatureStore", "Snapshot", "StoreConfig", "StoreUnavailable", "open_store"]


def open_store(url: str, config: StoreConfig | None = None) -> FeatureStore:
    """Open the feature store a URL names.

    >>> import tempfile
    >>> with open_store(f"embedded://{tempfile.mkdtemp()}") as store:
    ...     type(store).__name__
    'EmbeddedStore'
    """
    config = config or StoreConfig()
    parsed = urlparse(url)
    if parsed.scheme == "embedded":
        from features.store.embedded import EmbeddedStore
        return EmbeddedStore(parsed.netloc + parsed.path, config)
    if parsed.scheme == "aerospike":
        from features.store.aerospike import AerospikeStore
        return AerospikeStore.from_url(url, config)
    raise ValueError(f"unknown feature store URL {url!r}: use embedded:///DIR or "
                     "aerospike://HOST:PORT[,HOST:PORT]/NAMESPACE")
