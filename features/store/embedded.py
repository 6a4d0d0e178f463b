"""The embedded feature store: entities in memory, a journal and checkpoints in SQLite.

Every live entity is kept in memory in arrays (:mod:`features.columnar`), and
compiled kernels featurize and apply a whole micro-batch in one call. Disk
holds what is needed to rebuild that memory exactly:

* ``snapshots``: the features each transaction was scored with, with its
  scores and label (as before; labels are joined to them, and they tell
  redeliveries apart);
* ``journal``: per :meth:`EmbeddedStore.commit`, one row with the inputs of
  every purchase and label applied since the previous commit, in order;
* ``checkpoint``: every live entity, written from time to time (when the
  journal since the last one holds as many events as there are entities, and
  on close), after which the journal before it is dropped;
* ``applied_labels``: the sequence of applied labels, for a learner catching
  up after a restart.

A commit is one SQLite transaction (the batch's snapshots, its journal row,
the applied labels, the stream clock), so a killed worker restarts from its
last committed micro-batch: the checkpoint is loaded and the journal after it
re-applied with the same kernels, which gives the same state to the last bit;
Kafka redelivers what came after. A failed commit forgets what was not
committed (memory is rebuilt from disk when next needed) and raises
:class:`StoreUnavailable`. One worker owns a store directory at a time (an
exclusive lock file).

Redeliveries are told apart without a query per batch: an in-memory hash set
of the transaction ids of the snapshots within the label horizon says
"certainly new" for almost every purchase; only its hits are confirmed against
the snapshots.

Time-to-live is measured on the stream clock (the newest event time seen), not
the wall clock, so replaying a year of history expires entities exactly as the
live stream did.
"""

from __future__ import annotations

import contextlib
import fcntl
import math
import os
import sqlite3
import threading
from operator import attrgetter
from pathlib import Path
from typing import Sequence

import numpy as np
import orjson
from numba import njit

from features.columnar import KINDS, REFERENCE_COLUMNS, REFERENCE_ORDER, StateTables, warm_up, zeros
from features.packed import VALUES, PackedFeatures
from features.schemas import Label
from features.state import EntityState, state_from_json
from features.store.base import FeatureStore, LabelResult, Snapshot, StoreConfig, StoreUnavailable

_SCHEMA = """
CREATE TABLE IF NOT EXISTS snapshots (
    transaction_id TEXT PRIMARY KEY, event_ts REAL NOT NULL, body BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS applied_labels (seq INTEGER PRIMARY KEY, transaction_id TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS journal (seq INTEGER PRIMARY KEY, ops BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoint (
    kind TEXT NOT NULL, part INTEGER NOT NULL, ids BLOB NOT NULL, rows BLOB NOT NULL,
    counts BLOB NOT NULL, hours BLOB NOT NULL, bucket_counts BLOB NOT NULL,
    bucket_values BLOB NOT NULL, PRIMARY KEY (kind, part)) WITHOUT ROWID;
"""
# The layout of the checkpoint's arrays; a checkpoint of another layout is not loaded.
LAYOUT = "columnar-1"
# Commits between two expiry sweeps. A sweep scans the snapshots (an index on the time
# column would slow every write to speed up a rare sweep), and only once one of them can
# be past the horizon; expired snapshots are invisible before that anyway, because every
# read checks the label horizon.
PURGE_EVERY = 2000
APPLIED_LABELS_KEPT = 1_000_000
# A checkpoint is written once the journal after the last one holds at least
# this many events and at least as many as there are entities: its cost per
# event stays bounded and a restart re-applies no more than it loads.
CHECKPOINT_MIN_EVENTS = 100_000
CHECKPOINT_PART = 65_536  # entities per checkpoint row
STORED_PER_QUERY = 500  # snapshots looked up per query

_tx = attrgetter("transaction_id")
_ts = attrgetter("event_ts")
_price = attrgetter("price")
_items = attrgetter("n_items")
_user = attrgetter("user_id")
_card = attrgetter("card_hash")
_seller = attrgetter("seller_id")
_ureg = attrgetter("user_registered_ts")
_sreg = attrgetter("seller_registered_ts")
MAX_ITEMS = 1 << 24


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

    def __init__(self, directory: str | os.PathLike, config: StoreConfig | None = None):
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
        self._db.execute("PRAGMA page_size=16384")  # a new database: snapshots are ~1 KiB
        self._db.execute("PRAGMA journal_mode=WAL")
        # A committed batch survives a crashed or killed worker either way: the
        # data is in the operating system. fsync also survives a crash of the
        # machine, at the price of a disk flush per checkpoint.
        self._db.execute(f"PRAGMA synchronous={'NORMAL' if self.config.fsync else 'OFF'}")
        self._db.execute("PRAGMA cache_size=-16384")  # 16 MiB of pages
        self._db.executescript(_SCHEMA)
        self._tables: StateTables | None = None
        warm_up(self.config.features)
        self._seen = TransactionSet()
        self._pending: dict[str, Snapshot] = {}
        self._bodies: dict[str, bytes] = {}  # as stored, of the snapshots labelled since
        self._ops: list = []  # inputs applied since the commit, for the journal
        self._applied: list[str] = []  # transaction ids of the labels applied since the commit
        self._journal_events = 0
        self._commits = 0
        self._mutex = threading.RLock()
        self.round_trips = 0  # SQLite statements issued, for the benchmarks
        self.label_seq = self._db.execute("SELECT coalesce(max(seq), 0) FROM applied_labels"
                                          ).fetchone()[0]
        self._load()

    @property
    def clock(self) -> float:
        """The stream clock: the newest event time applied."""
        return self._ready().clock

    # -- loading --------------------------------------------------------------------------
    def _meta(self, key: str, default=None):
        row = self._db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return default if row is None else row[0]

    def _load(self) -> None:
        """Memory from disk: the checkpoint, then the journal after it re-applied."""
        cfg = self.config
        tables = StateTables(cfg.features, cfg.entity_ttl)
        db = self._db
        layout = self._meta("layout")
        if layout is not None and layout != LAYOUT:
            raise RuntimeError(f"feature store {self.directory} has checkpoint layout "
                               f"{layout!r}, this version reads {LAYOUT!r}")
        after = self._meta("checkpoint", 0)
        tables.clock = float(self._meta("checkpoint_clock", -math.inf))
        if layout is not None:
            for kind, ids, rows, counts, hours, bc, bv in db.execute(
                    "SELECT kind, ids, rows, counts, hours, bucket_counts, bucket_values "
                    "FROM checkpoint ORDER BY kind, part"):
                tables.load(KINDS.index(kind), orjson.loads(ids), rows, counts, hours, bc, bv)
        elif db.execute("SELECT 1 FROM sqlite_master WHERE name='entities'").fetchone():
            # A store written by the row-per-entity version: its entities table is the
            # state at its clock.
            tables.clock = float(self._meta("clock", -math.inf))
            for kind, eid, last_ts, raw in db.execute(
                    "SELECT kind, id, last_ts, state FROM entities WHERE last_ts >= ?",
                    (tables.clock - cfg.entity_ttl,)):
                tables.put(kind, eid, state_from_json(kind, raw))
        events = 0
        for (ops,) in db.execute("SELECT ops FROM journal WHERE seq > ? ORDER BY seq", (after,)):
            ops = orjson.loads(ops)
            events += len(ops)
            replay(tables, ops)
        self._journal_events = events
        horizon = tables.clock - cfg.label_horizon
        txs, times = [], []
        for tx, ts in db.execute("SELECT transaction_id, event_ts FROM snapshots "
                                 "WHERE event_ts >= ?", (horizon,)):
            txs.append(tx)
            times.append(ts)
        self._seen = TransactionSet()
        self._seen.add(np.fromiter(map(hash, txs), np.int64, len(txs)), _hours(times))
        (oldest,) = db.execute("SELECT min(event_ts) FROM snapshots").fetchone()
        self._oldest_snapshot = math.inf if oldest is None else oldest
        self._tables = tables

    def _ready(self) -> StateTables:
        if self._tables is None:
            try:
                self._load()
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"embedded store {self.directory}: {exc}") from exc
        return self._tables

    # -- entities -------------------------------------------------------------------------
    def entity(self, kind: str, entity_id: str) -> EntityState | None:
        """A copy of the current state of one entity; None if unknown or expired."""
        with self._mutex:
            return self._ready().get(kind, entity_id)

    def ids(self, kind: str) -> list[str]:
        """The ids of the live entities of a kind."""
        with self._mutex:
            tables = self._ready()
            k = KINDS.index(kind)
            return [tables.ids[k][s] for s in tables.live_slots(k).tolist()]

    # -- snapshots ------------------------------------------------------------------------
    def snapshot(self, transaction_id: str) -> Snapshot | None:
        with self._mutex:
            snap = self._pending.get(transaction_id)
            if snap is None:
                return self._stored(transaction_id, self._ready().clock)
            if snap.event_ts < self._ready().clock - self.config.label_horizon:
                return None
            return snap

    def _stored(self, transaction_id: str, clock: float) -> Snapshot | None:
        """The committed snapshot of a transaction, unless past the label horizon."""
        self.round_trips += 1
        row = self._db.execute("SELECT body FROM snapshots WHERE transaction_id=?",
                               (transaction_id,)).fetchone()
        if row is None:
            return None
        snap = snapshot_from_bytes(row[0])
        return None if snap.event_ts < clock - self.config.label_horizon else snap

    # -- processing -----------------------------------------------------------------------
    def process_purchases(self, purchases) -> list[Snapshot]:
        if not purchases:
            return []
        with self._mutex:
            tables = self._ready()
            n = len(purchases)
            txs = list(map(_tx, purchases))
            ts_list = list(map(_ts, purchases))
            prices = list(map(_price, purchases))
            items = list(map(_items, purchases))
            ts = np.array(ts_list, np.float64)
            price = np.array(prices, np.float64)
            n_items = np.array(items, np.int64)
            if not (np.isfinite(ts).all() and (price > 0).all() and np.isfinite(price).all()
                    and ((n_items >= 1) & (n_items <= MAX_ITEMS)).all()
                    and set(map(type, items)) == {int}):
                raise ValueError("a purchase out of range for the feature store")
            maybe = self._seen.add(np.fromiter(map(hash, txs), np.int64, n), _hours(ts))
            out: list[Snapshot | None] = [None] * n
            copies: dict[int, int] = {}  # a repeat within the batch -> its first occurrence
            if maybe.any():  # rare: a redelivery, a repeat or a hash collision
                fresh, first = [], {}
                clock = tables.clock  # as it moves with the purchases before each one
                for i, tx in enumerate(txs):
                    if tx in first:
                        copies[i] = first[tx]
                        continue
                    if maybe[i]:
                        known = self._pending.get(tx) or self._stored(tx, clock)
                        if known is not None:
                            out[i] = _as_duplicate(known)
                            continue
                    first[tx] = i
                    fresh.append(i)
                    clock = max(clock, ts_list[i])
                take = np.array(fresh, np.int64)
                ts, price, n_items = ts[take], price[take], n_items[take]
                fresh_ps = [purchases[i] for i in fresh]
                txs = [txs[i] for i in fresh]
                ts_list = [ts_list[i] for i in fresh]
                prices = [prices[i] for i in fresh]
                items = [items[i] for i in fresh]
            else:
                fresh = range(n)
                fresh_ps = purchases
            users = list(map(_user, fresh_ps))
            cards = list(map(_card, fresh_ps))
            sellers = list(map(_seller, fresh_ps))
            uregs = list(map(_ureg, fresh_ps))
            sregs = list(map(_sreg, fresh_ps))
            features = tables.apply_columns(
                ts, price, n_items, np.array(uregs, np.float64), np.array(sregs, np.float64),
                users, cards, sellers, featurize=True)
            # Each snapshot's features as the bytes they are stored as (read on demand).
            packed = features[:, REFERENCE_COLUMNS].astype("<f8").tobytes()
            size = VALUES.size
            pending = self._pending
            for i, tx, t, u, c, s, at in zip(fresh, txs, ts_list, users, cards, sellers,
                                             range(0, len(packed), size)):
                pending[tx] = out[i] = Snapshot(tx, t, u, c, s,
                                                PackedFeatures(packed[at:at + size]))
            self._ops.extend(zip(ts_list, users, cards, sellers, prices, items, uregs, sregs))
            for i, j in copies.items():
                out[i] = _as_duplicate(out[j])
        return out

    def _stored_many(self, transaction_ids, clock: float) -> dict[str, tuple[Snapshot, bytes]]:
        """:meth:`_stored` of many transactions, a few hundred per query, with their bodies."""
        ids = list(dict.fromkeys(transaction_ids))
        found: dict[str, tuple[Snapshot, bytes]] = {}
        horizon = clock - self.config.label_horizon
        for i in range(0, len(ids), STORED_PER_QUERY):
            part = ids[i:i + STORED_PER_QUERY]
            self.round_trips += 1
            for (body,) in self._db.execute(
                    "SELECT body FROM snapshots WHERE transaction_id IN "
                    f"({','.join('?' * len(part))})", part):
                snap = snapshot_from_bytes(body, packed=True)
                if snap.event_ts >= horizon:
                    found[snap.transaction_id] = snap, body
        return found

    def process_labels(self, labels: Sequence[Label]) -> list[LabelResult]:
        out = []
        with self._mutex:
            tables = self._ready()
            applied = []
            pending = self._pending
            clock = tables.clock
            horizon = clock - self.config.label_horizon
            # The committed snapshots of the batch in one query; the loop sees the
            # labels of this batch as it applies them (a repeated label is a duplicate).
            stored = self._stored_many([lb.transaction_id for lb in labels
                                        if lb.transaction_id not in pending], clock)
            for label in labels:
                snap = pending.get(label.transaction_id)
                body = None
                if snap is None:
                    snap, body = stored.get(label.transaction_id, (None, None))
                elif snap.event_ts < horizon:
                    snap = None
                if snap is None:
                    out.append(LabelResult(label, "unknown"))
                elif snap.label is not None:
                    out.append(LabelResult(label, "duplicate", _as_duplicate(snap)))
                else:
                    snap.label = label.is_fraud
                    self._pending[label.transaction_id] = snap
                    if body is not None and _unlabelled(body):
                        self._bodies[label.transaction_id] = body
                    self._applied.append(label.transaction_id)
                    applied.append((snap.event_ts, bool(label.is_fraud), snap.user_id,
                                    snap.card_hash, snap.seller_id))
                    out.append(LabelResult(label, "applied", snap))
            tables.apply_labels(applied)
            self._ops.extend(applied)
        return out

    # -- durability -----------------------------------------------------------------------
    def commit(self) -> None:
        with self._mutex:
            if not self._pending and not self._ops:
                return
            tables = self._ready()
            # A snapshot read back from disk to be labelled changes only its label: its row
            # is updated (cheaper than replaced); the others are written whole.
            bodies = self._bodies
            snapshot_rows, labelled_rows = [], []
            for s in self._pending.values():
                tx = s.transaction_id
                if tx in bodies:
                    labelled_rows.append((_labelled(bodies[tx], s.label), tx))
                else:
                    snapshot_rows.append((tx, s.event_ts, snapshot_to_bytes(s)))
            ops = orjson.dumps(self._ops)
            with self._transaction(on_failure=self._forget_uncommitted):
                if labelled_rows:
                    updated = self._db.executemany(
                        "UPDATE snapshots SET body = ? WHERE transaction_id = ?",
                        labelled_rows).rowcount
                    self.round_trips += 1
                    if updated != len(labelled_rows):  # a row went missing: write them whole
                        snapshot_rows += [(tx, self._pending[tx].event_ts, body)
                                          for body, tx in labelled_rows]
                self._db.executemany("INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?)",
                                     snapshot_rows)
                if snapshot_rows:
                    self._oldest_snapshot = min(self._oldest_snapshot,
                                                min(row[1] for row in snapshot_rows))
                # The stream clock is not written: re-applying the journal moves it as before.
                self._db.execute("INSERT INTO journal (ops) VALUES (?)", (ops,))
                label_seq = self.label_seq
                if self._applied:
                    # Numbered on from the highest number, which a purge never removes.
                    self._db.executemany("INSERT INTO applied_labels (transaction_id) VALUES (?)",
                                         [(tx,) for tx in self._applied])
                    label_seq += len(self._applied)
                    self.round_trips += 1
                self._journal_events += len(self._ops)
                self._commits += 1
                if self._commits % PURGE_EVERY == 0:
                    self._purge()
                if self._journal_events >= max(CHECKPOINT_MIN_EVENTS, tables.entity_count()):
                    self._checkpoint()
            self.round_trips += 3
            self._pending.clear()
            self._bodies.clear()
            self._ops.clear()
            self._applied.clear()
            self.label_seq = label_seq

    def _checkpoint(self) -> None:
        """Write every live entity and drop the journal it covers (inside a transaction)."""
        tables = self._ready()
        db = self._db
        (last,) = db.execute("SELECT coalesce(max(seq), 0) FROM journal").fetchone()
        db.execute("DELETE FROM checkpoint")
        for k, kind in enumerate(KINDS):
            slots = tables.kept_slots(k)
            for part, i in enumerate(range(0, len(slots), CHECKPOINT_PART)):
                ids, *arrays = tables.export(k, slots[i:i + CHECKPOINT_PART])
                db.execute("INSERT INTO checkpoint VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           (kind, part, orjson.dumps(ids), *map(memoryview, arrays)))
                del arrays
                self.round_trips += 1
        db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                       [("layout", LAYOUT), ("checkpoint", last),
                        ("checkpoint_clock", tables.clock)])
        db.execute("DELETE FROM journal WHERE seq <= ?", (last,))
        db.execute("DROP TABLE IF EXISTS entities")
        self.round_trips += 4
        self._journal_events = 0

    def applied_since(self, seq: int) -> list[Snapshot]:
        """Snapshots of the labels applied after sequence number ``seq``, in order."""
        with self._mutex:
            return [snapshot_from_bytes(body) for body, in self._db.execute(
                "SELECT s.body FROM applied_labels a JOIN snapshots s USING (transaction_id) "
                "WHERE a.seq > ? ORDER BY a.seq", (seq,))]

    def _forget_uncommitted(self) -> None:
        """Back to the last committed state: the failed batch is applied afresh when retried.

        Memory is rebuilt from disk (checkpoint and journal) when next needed.
        """
        self._tables = None
        self._pending.clear()
        self._bodies.clear()
        self._ops.clear()
        self._applied.clear()

    def _purge(self) -> None:
        """Forget idle entities and snapshots past the label horizon."""
        tables = self._ready()
        expired = tables.clock - self.config.label_horizon
        if expired > self._oldest_snapshot:
            # A scan of every snapshot: only when one may be past the horizon.
            self._db.execute("DELETE FROM snapshots WHERE event_ts < ?", (expired,))
            self.round_trips += 1
            self._oldest_snapshot = expired  # none older is left
        # A restarted learner catches up from the labels after its model version, which
        # is published every few seconds: a million labels back is far more than enough.
        self._db.execute("DELETE FROM applied_labels WHERE seq < ?",
                         (self.label_seq - APPLIED_LABELS_KEPT,))
        self.round_trips += 1
        tables.forget_idle()
        if tables.clock > -math.inf:
            self._seen.keep_from(int((tables.clock - self.config.label_horizon) // 3600.0))

    @contextlib.contextmanager
    def _transaction(self, on_failure=None):
        """One SQLite write transaction; on a database error it is rolled back, ``on_failure``
        runs and :class:`StoreUnavailable` is raised."""
        try:
            self._db.execute("BEGIN IMMEDIATE")
            yield
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("ROLLBACK")
            if on_failure is not None:
                on_failure()
            raise StoreUnavailable(f"embedded store {self.directory}: {exc}") from exc

    def purge(self) -> None:
        """Run the expiry sweep now (it also runs every few commits)."""
        with self._mutex:
            self.commit()
            with self._transaction():
                self._purge()

    def checkpoint(self) -> None:
        """Commit, then write a checkpoint now (it is also written every so often)."""
        with self._mutex:
            self.commit()
            with self._transaction():
                self._checkpoint()

    def count(self, kind: str) -> int:
        """How many live entities of a kind the store holds."""
        with self._mutex:
            self.commit()
            return self._ready().count(kind)

    def close(self) -> None:
        with self._mutex:
            if self._db is None:
                return
            try:
                self.commit()
                if self._journal_events:
                    # The journal alone is durable; a checkpoint shortens the next start.
                    with contextlib.suppress(StoreUnavailable):
                        self.checkpoint()
            finally:
                self._db.close()
                self._db = None
                fcntl.flock(self._lock_file, fcntl.LOCK_UN)
                self._lock_file.close()


def replay(tables: StateTables, ops: list) -> None:
    """Re-apply journal records in order: purchases ``[ts, user, card, seller, price,
    n_items, user_registered_ts, seller_registered_ts]`` and labels ``[ts, is_fraud, user,
    card, seller]``."""
    i = 0
    while i < len(ops):
        j = i
        if len(ops[i]) == 8:
            while j < len(ops) and len(ops[j]) == 8:
                j += 1
            run = ops[i:j]
            ts, users, cards, sellers, prices, items, uregs, sregs = zip(*run)
            tables.apply_columns(np.array(ts, np.float64), np.array(prices, np.float64),
                                 np.array(items, np.int64), np.array(uregs, np.float64),
                                 np.array(sregs, np.float64), users, cards, sellers,
                                 featurize=False)
        else:
            while j < len(ops) and len(ops[j]) == 5:
                j += 1
            tables.apply_labels(ops[i:j])
        i = j


def _hours(times) -> np.ndarray:
    return (np.asarray(times, np.float64) // 3600.0).astype(np.int64)


# A stored body: the features packed as float64 (little-endian) when their names are the
# usual ones in the usual order, else the JSON of the whole snapshot (bodies written before
# the packed form are JSON too, and are read as ever).
_PACKED = 1  # first byte of a packed body; a JSON body starts with "["
_FEATURES_END = 1 + VALUES.size
_LABEL_BYTES = {None: b"\x00", False: b"\x01", True: b"\x02"}
_LABELS = (None, False, True)


def snapshot_to_bytes(snap: Snapshot) -> bytes:
    """A snapshot as stored. With the usual features: a format byte, the features as
    float64, the JSON of ``[transaction_id, event_ts, user_id, card_hash, seller_id,
    scores]``, then one byte for the label (0 none, 1 false, 2 true). Otherwise
    :meth:`Snapshot.to_bytes`.

    >>> snap = Snapshot("t1", 0.0, "u", "c", "s", dict.fromkeys(REFERENCE_ORDER, 0.5), {"m": 0.1})
    >>> snapshot_from_bytes(snapshot_to_bytes(snap)) == snap
    True
    >>> other = Snapshot("t1", 0.0, "u", "c", "s", {"amount": 2.0})
    >>> snapshot_to_bytes(other) == other.to_bytes(), snapshot_from_bytes(other.to_bytes()) == other
    (True, True)
    """
    features = snap.features
    if type(features) is PackedFeatures:
        values = features.raw
    elif len(features) != len(REFERENCE_ORDER) or tuple(features) != REFERENCE_ORDER:
        return snap.to_bytes()
    else:
        values = VALUES.pack(*features.values())
    return b"".join((b"\x01", values,
                     orjson.dumps([snap.transaction_id, snap.event_ts, snap.user_id,
                                   snap.card_hash, snap.seller_id, snap.scores]),
                     _LABEL_BYTES[snap.label]))


def _unlabelled(body: bytes) -> bool:
    """Whether a stored body has no label yet (so that :func:`_labelled` may set it)."""
    if body[0] == _PACKED:
        return body[-1] == 0
    return body.endswith(b",null]")


def _labelled(body: bytes, label: bool) -> bytes:
    """The stored body of an unlabelled snapshot with ``label`` instead: what
    :func:`snapshot_to_bytes` gives once the label is set, without writing the features again.

    >>> snap = Snapshot("t1", 0.0, "u", "c", "s", dict.fromkeys(REFERENCE_ORDER, 0.5), {"m": 0.1})
    >>> body = snapshot_to_bytes(snap)
    >>> snap.label = True
    >>> _labelled(body, True) == snapshot_to_bytes(snap)
    True
    >>> old = Snapshot("t1", 0.0, "u", "c", "s", {"amount": 2.0}, {"m": 0.1})
    >>> _labelled(old.to_bytes(), False) == Snapshot("t1", 0.0, "u", "c", "s", {"amount": 2.0},
    ...                                            {"m": 0.1}, False).to_bytes()
    True
    """
    if body[0] == _PACKED:
        return body[:-1] + (b"\x02" if label else b"\x01")
    return body[:-5] + (b"true]" if label else b"false]")


def snapshot_from_bytes(raw: bytes, packed: bool = False) -> Snapshot:
    """A snapshot from its stored body (either form; also a JSON body with its features as a
    list of values in the usual order, as an earlier version wrote).

    ``packed``: the features of a packed body as :class:`PackedFeatures` (what a label's
    learning reads fastest) rather than a dict.
    """
    if raw[0] == _PACKED:
        fields = orjson.loads(raw[_FEATURES_END:-1])  # all but the features and the label
        fields.insert(5, PackedFeatures(raw[1:_FEATURES_END]) if packed else
                      dict(zip(REFERENCE_ORDER, VALUES.unpack_from(raw, 1))))
        fields.append(_LABELS[raw[-1]])
        return Snapshot(*fields)
    data = orjson.loads(raw)
    if isinstance(data[5], list):
        data[5] = dict(zip(REFERENCE_ORDER, data[5]))
    return Snapshot(*data)


def _as_duplicate(snap: Snapshot) -> Snapshot:
    return Snapshot(snap.transaction_id, snap.event_ts, snap.user_id, snap.card_hash,
                    snap.seller_id, dict(snap.features), dict(snap.scores), snap.label,
                    duplicate=True)


# -- the set of known transactions ---------------------------------------------------------

class TransactionSet:
    """Hashes of transaction ids with the hour of their event, in an open-addressing table.

    ``add`` says for each id whether it may have been seen (its hash is there:
    confirm) or certainly not (then it is added). Entries older than the label
    horizon are dropped by ``keep_from``.

    >>> s = TransactionSet()
    >>> s.add(np.array([hash("a"), hash("b"), hash("a")]), np.array([5, 5, 6])).tolist()
    [False, False, True]
    >>> s.keep_from(6); s.add(np.array([hash("b")]), np.array([7])).tolist()
    [False]
    """

    def __init__(self):
        self.keys = np.zeros(1 << 12, np.int64)
        self.hours = np.zeros(1 << 12, np.int32)
        self.used = 0
        self.oldest = _NO_HOUR  # no entry is of an earlier hour

    def add(self, keys: np.ndarray, hours: np.ndarray) -> np.ndarray:
        if (self.used + len(keys)) * 10 > len(self.keys) * 7:
            self._rebuild(np.iinfo(np.int32).min, len(keys))
        found = np.empty(len(keys), np.bool_)
        hours = hours.astype(np.int32)
        self.used += _set_add(self.keys, self.hours, keys, hours, found)
        if len(hours):
            self.oldest = min(self.oldest, int(hours.min()))
        return found

    def keep_from(self, hour: int) -> None:
        """Forget the entries of events before ``hour`` (a rebuild, only when there are some)."""
        if hour > self.oldest:
            self._rebuild(hour, 0)

    def _rebuild(self, min_hour: int, room: int) -> None:
        live = (self.keys != 0) & (self.hours >= min_hour)
        keys, hours = self.keys[live], self.hours[live]
        self.oldest = int(hours.min()) if len(hours) else _NO_HOUR
        size = 1 << 12
        while size * 2 < (len(keys) + room) * 3:  # at most two thirds full
            size *= 2
        self.keys = zeros(size, np.int64)
        self.hours = zeros(size, np.int32)
        self.used = _set_add(self.keys, self.hours, keys, hours, np.empty(len(keys), np.bool_))


_NO_HOUR = np.iinfo(np.int32).max


@njit(cache=True)
def _set_add(table, table_hours, keys, hours, found):
    mask = table.shape[0] - 1
    added = 0
    for i in range(keys.shape[0]):
        k = keys[i]
        if k == 0:
            k = 1
        j = k & mask
        while table[j] != 0 and table[j] != k:
            j = (j + 1) & mask
        if table[j] == k:
            found[i] = True
            if hours[i] > table_hours[j]:
                table_hours[j] = hours[i]
        else:
            found[i] = False
            table[j] = k
            table_hours[j] = hours[i]
            added += 1
    return added
