"""The embedded feature store: SQLite on local disk, no server.

Entities live in memory while the worker runs and reach disk at every
:meth:`EmbeddedStore.commit` in one SQLite transaction together with the new
snapshots, so a killed worker restarts from its last committed micro-batch
and Kafka redelivers what came after. One worker owns a store directory at a
time (an exclusive lock file).

Time-to-live is measured on the stream clock (the newest event time seen), not
the wall clock, so replaying a year of history expires entities exactly as the
live stream did.
"""

from __future__ import annotations

import fcntl
import math
import os
import sqlite3
import threading
from pathlib import Path
from typing import Sequence


from features.schemas import Label
from features.state import STATE_TYPES, EntityState, apply_label, state_from_json, state_to_json
from features.store.base import (FeatureStore, LabelResult, Snapshot, StoreConfig,
                                 StoreUnavailable, featurize_and_apply)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entities (
    kind TEXT NOT NULL, id TEXT NOT NULL, last_ts REAL NOT NULL, state BLOB NOT NULL,
    PRIMARY KEY (kind, id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS snapshots (
    transaction_id TEXT PRIMARY KEY, event_ts REAL NOT NULL, body BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS applied_labels (seq INTEGER PRIMARY KEY, transaction_id TEXT NOT NULL);
"""
# Commits between two expiry sweeps. A sweep scans the tables (an index on the
# time columns would slow every write to speed up a rare sweep); expired rows
# are invisible before that anyway, because every read checks the TTL.
PURGE_EVERY = 2000
APPLIED_LABELS_KEPT = 1_000_000


class EmbeddedStore(FeatureStore):
    """A persistent feature store in one directory.

    >>> import tempfile
    >>> from features.schemas import Purchase
    >>> store = EmbeddedStore(tempfile.mkdtemp())
    >>> p = Purchase("t1", 1522584000.0, "u1", "s1", "i1", "c1", 40.0, 1)
    >>> snap, again = store.process_purchases([p, p])
    >>> snap.features["card_count_1d"], again.duplicate, store.entity("card", "c1").n_purchases
    (1.0, True, 1)
    >>> store.close()
    """

    def __init__(self, directory: str | os.PathLike, config: StoreConfig | None = None,
                 max_cached_entities: int = 200_000):
        self.config = config or StoreConfig()
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.directory / "LOCK", "a+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise RuntimeError(f"feature store {self.directory} is in use by another process "
                               "(stop the other worker or give this one its own directory)") from None
        self._db = sqlite3.connect(self.directory / "state.db", isolation_level=None,
                                   check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        # A committed batch survives a crashed or killed worker either way: the
        # data is in the operating system. fsync also survives a crash of the
        # machine, at the price of a disk flush per checkpoint.
        self._db.execute(f"PRAGMA synchronous={'NORMAL' if self.config.fsync else 'OFF'}")
        self._db.execute("PRAGMA cache_size=-65536")  # 64 MiB of pages
        self._db.executescript(_SCHEMA)
        row = self._db.execute("SELECT value FROM meta WHERE key='clock'").fetchone()
        self.clock = float(row[0]) if row else float("-inf")
        self._entities: dict[tuple[str, str], EntityState] = {}
        self._dirty: set[tuple[str, str]] = set()
        self._pending: dict[str, Snapshot] = {}
        self._applied: list[str] = []  # transaction ids of the labels applied since the commit
        self.label_seq = self._db.execute("SELECT coalesce(max(seq), 0) FROM applied_labels"
                                          ).fetchone()[0]
        self._max_cached = max_cached_entities
        self._commits = 0
        self._mutex = threading.RLock()
        self.round_trips = 0  # SQLite statements issued, for the benchmarks

    # -- entities -------------------------------------------------------
    def _entity(self, kind: str, entity_id: str) -> EntityState:
        key = (kind, entity_id)
        state = self._entities.get(key)
        if state is not None and _expired(state, self.clock - self.config.entity_ttl):
            state = None  # idle past its time-to-live: forgotten
        if state is None:
            self.round_trips += 1
            row = self._db.execute("SELECT last_ts, state FROM entities WHERE kind=? AND id=?",
                                   key).fetchone()
            if row is not None and row[0] >= self.clock - self.config.entity_ttl:
                state = state_from_json(kind, row[1])
            else:
                state = STATE_TYPES[kind]()
            self._entities[key] = state
        self._dirty.add(key)
        return state

    def entity(self, kind: str, entity_id: str) -> EntityState | None:
        with self._mutex:
            cached = self._entities.get((kind, entity_id))
            if cached is not None and _expired(cached, self.clock - self.config.entity_ttl):
                return None
            if cached is None:
                row = self._db.execute("SELECT last_ts FROM entities WHERE kind=? AND id=?",
                                       (kind, entity_id)).fetchone()
                if row is None or row[0] < self.clock - self.config.entity_ttl:
                    return None
            state = self._entity(kind, entity_id)
            self._dirty.discard((kind, entity_id))
            return state

    # -- snapshots ------------------------------------------------------
    def snapshot(self, transaction_id: str) -> Snapshot | None:
        with self._mutex:
            snap = self._pending.get(transaction_id)
            if snap is None:
                self.round_trips += 1
                row = self._db.execute("SELECT body FROM snapshots WHERE transaction_id=?",
                                       (transaction_id,)).fetchone()
                if row is None:
                    return None
                snap = Snapshot.from_bytes(row[0])
            if snap.event_ts < self.clock - self.config.label_horizon:
                return None
            return snap

    def _preload(self, kind: str, ids: set[str]) -> None:
        """Load the entities of a batch that are not cached: one query per 500."""
        missing = [i for i in ids if (kind, i) not in self._entities]
        horizon = self.clock - self.config.entity_ttl
        for i in range(0, len(missing), 500):
            chunk = missing[i:i + 500]
            self.round_trips += 1
            marks = ",".join("?" * len(chunk))
            for eid, last_ts, raw in self._db.execute(
                    f"SELECT id, last_ts, state FROM entities WHERE kind=? AND id IN ({marks})",
                    [kind, *chunk]):
                if last_ts >= horizon:
                    self._entities[(kind, eid)] = state_from_json(kind, raw)
            for eid in chunk:
                self._entities.setdefault((kind, eid), STATE_TYPES[kind]())

    def _stored_ids(self, ids: list[str]) -> set[str]:
        """Which of these transaction ids have a snapshot on disk: one query per 500."""
        found: set[str] = set()
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            self.round_trips += 1
            marks = ",".join("?" * len(chunk))
            found.update(r[0] for r in self._db.execute(
                f"SELECT transaction_id FROM snapshots WHERE transaction_id IN ({marks})", chunk))
        return found

    # -- processing -----------------------------------------------------
    def process_purchases(self, purchases) -> list[Snapshot]:
        out = []
        with self._mutex:
            stored = self._stored_ids([p.transaction_id for p in purchases])
            self._preload("user", {p.user_id for p in purchases})
            self._preload("card", {p.card_hash for p in purchases})
            self._preload("seller", {p.seller_id for p in purchases})
            for p in purchases:
                known = (self._pending.get(p.transaction_id)
                         or (self.snapshot(p.transaction_id) if p.transaction_id in stored
                             else None))
                if known is not None:
                    out.append(_as_duplicate(known))
                    continue
                if p.event_ts > self.clock:
                    self.clock = p.event_ts
                snap = featurize_and_apply(p, self._entity("user", p.user_id),
                                           self._entity("card", p.card_hash),
                                           self._entity("seller", p.seller_id), self.config)
                self._pending[p.transaction_id] = snap
                out.append(snap)
        return out

    def process_labels(self, labels: Sequence[Label]) -> list[LabelResult]:
        out = []
        with self._mutex:
            for label in labels:
                snap = self.snapshot(label.transaction_id)
                if snap is None:
                    out.append(LabelResult(label, "unknown"))
                elif snap.label is not None:
                    out.append(LabelResult(label, "duplicate", _as_duplicate(snap)))
                else:
                    apply_label(label, snap.event_ts, self._entity("user", snap.user_id),
                                self._entity("card", snap.card_hash),
                                self._entity("seller", snap.seller_id))
                    snap.label = label.is_fraud
                    self._pending[label.transaction_id] = snap
                    self._applied.append(label.transaction_id)
                    out.append(LabelResult(label, "applied", snap))
        return out

    def commit(self) -> None:
        with self._mutex:
            if not self._dirty and not self._pending:
                return
            entity_rows = [(kind, eid, self._entities[(kind, eid)].last_ts,
                            state_to_json(self._entities[(kind, eid)]))
                           for kind, eid in self._dirty]
            snapshot_rows = [(s.transaction_id, s.event_ts, s.to_bytes())
                             for s in self._pending.values()]
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.executemany("INSERT OR REPLACE INTO entities VALUES (?, ?, ?, ?)",
                                     entity_rows)
                self._db.executemany("INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?)",
                                     snapshot_rows)
                self._db.execute("INSERT OR REPLACE INTO meta VALUES ('clock', ?)", (self.clock,))
                self._db.executemany("INSERT INTO applied_labels (transaction_id) VALUES (?)",
                                     [(tx,) for tx in self._applied])
                label_seq = self._db.execute("SELECT coalesce(max(seq), 0) FROM applied_labels"
                                             ).fetchone()[0]
                self._commits += 1
                if self._commits % PURGE_EVERY == 0:
                    self._purge()
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                self._forget_uncommitted()
                raise StoreUnavailable(f"embedded store {self.directory}: {exc}") from exc
            self.round_trips += 3
            self._dirty.clear()
            self._pending.clear()
            self._applied.clear()
            self.label_seq = label_seq
            if len(self._entities) > self._max_cached:
                self._entities.clear()

    def applied_since(self, seq: int) -> list[Snapshot]:
        """Snapshots of the labels applied after sequence number ``seq``, in order."""
        with self._mutex:
            return [Snapshot.from_bytes(body) for body, in self._db.execute(
                "SELECT s.body FROM applied_labels a JOIN snapshots s USING (transaction_id) "
                "WHERE a.seq > ? ORDER BY a.seq", (seq,))]

    def _forget_uncommitted(self) -> None:
        """Back to the last committed state: the failed batch is applied afresh when retried."""
        self._entities.clear()
        self._dirty.clear()
        self._pending.clear()
        self._applied.clear()
        try:
            row = self._db.execute("SELECT value FROM meta WHERE key='clock'").fetchone()
            self.clock = float(row[0]) if row else float("-inf")
        except sqlite3.Error:
            pass

    def _purge(self) -> None:
        """Forget idle entities and snapshots past the label horizon."""
        self._db.execute("DELETE FROM entities WHERE last_ts < ?",
                         (self.clock - self.config.entity_ttl,))
        self._db.execute("DELETE FROM snapshots WHERE event_ts < ?",
                         (self.clock - self.config.label_horizon,))
        # A restarted learner catches up from the labels after its model version, which
        # is published every few seconds: a million labels back is far more than enough.
        self._db.execute("DELETE FROM applied_labels WHERE seq < ?",
                         (self.label_seq - APPLIED_LABELS_KEPT,))
        expired = [k for k, s in self._entities.items()
                   if s.last_ts < self.clock - self.config.entity_ttl and k not in self._dirty]
        for key in expired:
            del self._entities[key]

    def purge(self) -> None:
        """Run the expiry sweep now (it also runs every few commits)."""
        with self._mutex:
            self.commit()
            self._db.execute("BEGIN IMMEDIATE")
            self._purge()
            self._db.execute("COMMIT")

    def count(self, kind: str) -> int:
        """How many live entities of a kind the store holds on disk."""
        with self._mutex:
            self.commit()
            return self._db.execute(
                "SELECT count(*) FROM entities WHERE kind=? AND last_ts >= ?",
                (kind, self.clock - self.config.entity_ttl)).fetchone()[0]

    def close(self) -> None:
        with self._mutex:
            if self._db is None:
                return
            try:
                self.commit()
            finally:
                self._db.close()
                self._db = None
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)
                self._lock_file.close()


def _expired(state: EntityState, horizon: float) -> bool:
    """Idle since before the horizon (a state never updated has nothing to expire)."""
    return -math.inf < state.last_ts < horizon


def _as_duplicate(snap: Snapshot) -> Snapshot:
    return Snapshot(snap.transaction_id, snap.event_ts, snap.user_id, snap.card_hash,
                    snap.seller_id, dict(snap.features), dict(snap.scores), snap.label,
                    duplicate=True)
