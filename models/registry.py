"""Versioned model snapshots with checksums, in a directory.

The learner publishes a new version every few labels; every scorer polls
:meth:`ModelRegistry.current_version` (a small file read) and swaps to the
newest one without pausing. Snapshots are pickled model objects, so loading
one runs code: a snapshot is only ever loaded from this registry, and only
after its SHA-256 matches the one recorded when it was published.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson


class TamperedSnapshot(RuntimeError):
    """A snapshot whose bytes do not match its recorded checksum."""


@dataclass(frozen=True)
class VersionInfo:
    version: int
    created_at: float
    n_labels: int
    sha256: str
    kind: str
    label_seq: int = 0  # the store's applied-label sequence number it learned up to


class ModelRegistry:
    """Model versions of one model name, kept in ``directory``.

    >>> import tempfile
    >>> reg = ModelRegistry(tempfile.mkdtemp(), "dynamic")
    >>> reg.publish({"w": 1}, n_labels=10).version, reg.publish({"w": 2}, n_labels=20).version
    (1, 2)
    >>> reg.load()[1], reg.rollback(1).version, reg.load()[1]
    ({'w': 2}, 1, {'w': 1})
    """

    def __init__(self, directory: str | os.PathLike, name: str, keep: int = 20):
        self.directory = Path(directory) / name
        self.directory.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.keep = keep
        self._index_path = self.directory / "index.json"

    def _read_index(self) -> dict:
        try:
            return orjson.loads(self._index_path.read_bytes())
        except FileNotFoundError:
            return {"current": None, "versions": []}

    def _write_index(self, index: dict) -> None:
        tmp = self._index_path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(index, option=orjson.OPT_INDENT_2))
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, self._index_path)

    def versions(self) -> list[VersionInfo]:
        return [VersionInfo(**v) for v in self._read_index()["versions"]]

    def current_version(self) -> int | None:
        return self._read_index()["current"]

    def publish(self, model: object, n_labels: int, kind: str = "",
                label_seq: int = 0) -> VersionInfo:
        """Store a new version and make it current."""
        blob = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
        index = self._read_index()
        version = max((v["version"] for v in index["versions"]), default=0) + 1
        path = self.directory / f"v{version:06d}.pkl"
        with open(path, "wb") as fh:
            fh.write(blob)
            fh.flush()
            os.fsync(fh.fileno())
        info = VersionInfo(version, time.time(), n_labels, hashlib.sha256(blob).hexdigest(), kind,
                           label_seq)
        index["versions"].append(asdict(info))
        for old in index["versions"][:-self.keep]:
            (self.directory / f"v{old['version']:06d}.pkl").unlink(missing_ok=True)
        index["versions"] = index["versions"][-self.keep:]
        index["current"] = version
        self._write_index(index)
        return info

    def load(self, version: int | None = None) -> tuple[VersionInfo, object] | None:
        """The model of a version (default: the current one), checksum verified."""
        index = self._read_index()
        version = index["current"] if version is None else version
        if version is None:
            return None
        info = next((VersionInfo(**v) for v in index["versions"] if v["version"] == version), None)
        if info is None:
            raise KeyError(f"{self.name} model has no version {version}; "
                           f"kept: {[v['version'] for v in index['versions']]}")
        blob = (self.directory / f"v{version:06d}.pkl").read_bytes()
        if hashlib.sha256(blob).hexdigest() != info.sha256:
            raise TamperedSnapshot(f"{self.name} model version {version} does not match its "
                                   "checksum; refusing to load it")
        return info, pickle.loads(blob)

    def rollback(self, version: int) -> VersionInfo:
        """Make an older (kept) version current; scorers switch to it."""
        info, _ = self.load(version)  # verifies it exists and is intact
        index = self._read_index()
        index["current"] = version
        self._write_index(index)
        return info
