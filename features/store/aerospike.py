"""The Aerospike feature store: one record per entity, one batch call per round of updates.

Layout
    Sets ``{prefix}user``, ``{prefix}card`` and ``{prefix}seller`` hold one
    record per entity (bins: :mod:`features.store.aerospike_ops`),
    ``{prefix}snapshot`` one record per transaction (``ts``, ``body``,
    ``label``). Records are written with their key (``POLICY_KEY_SEND``);
    entities live ``entity_ttl`` seconds after their last write, snapshots
    ``label_horizon`` seconds.

One operate per entity update
    A purchase is one operate on each of its three records: counter
    increments, the bucket of its own hour (``map_increment``), removal of
    buckets past the keep window (``map_remove_by_key_range``), first and
    last seen and the card's recent times (ordered-list append and trim), its
    id in the record's dedup map and, last, a read of every state bin. The
    reads come last because the client returns one value per bin name: the
    last operation's.

Prior state: read back, then take the purchase out again
    Features need the state *before* the purchase. A batch cannot read before
    writing in the same operate (``batch_write`` returns one value per bin,
    and ``operate_ordered`` has no batch form), so the store reads the state
    *after* the purchase and removes the purchase with
    :func:`features.state.unapply_purchase`: counters exactly, float sums to a
    rounding step (relative 1e-16), the card's recent times exactly because
    the record keeps one spare time. What a purchase overwrites (registration
    time, last seen) its own features do not need.

Idempotence
    A purchase whose snapshot exists is a redelivery: it returns the stored
    snapshot with ``duplicate=True``. Each entity record maps the purchase ids
    it applied in the last ``dedup_window`` seconds of event time (default a
    day, at most ``label_horizon``) to their times, and every write carries a
    filter expression that rejects it when its id is there. A rejected write
    (``FILTERED_OUT``) is probed: an id already applied (a crash between the
    entity writes and the commit, or a retried write) is read instead, and
    the purchase is featurized on that record minus itself, which matches the
    first delivery unless later purchases of the same entity landed before
    the crash; an entity idle past its time-to-live on the stream clock is
    rewritten from scratch by a second filtered write. Outcomes work the same
    way with a second map, so each entity counts an outcome once; the
    snapshot's ``label`` bin is written at :meth:`~AerospikeStore.commit`
    under a filter that keeps the first label.

Batching
    A micro-batch is split into rounds in which no entity appears twice
    (:func:`~features.store.aerospike_ops.plan_rounds`); a round is one
    ``batch_write`` with one ``Write`` per entity record, each with its own
    operations and policy. A batch costs one ``batch_read`` of snapshots, one
    ``batch_write`` per round (as many as its busiest entity has purchases),
    rarely a probe and a reset, and one ``batch_write`` of snapshots at
    commit: 0.01 to 0.02 calls per purchase for batches of 500 of the
    simulator's traffic. An entity with a large share of a batch costs a
    round per purchase. ``round_trips`` counts client calls.

Clocks
    The embedded store expires entities and snapshots on the stream clock,
    the newest event time seen; Aerospike expires records on the server's
    wall clock. This store does both: the server TTLs bound storage, and the
    stream clock decides what a read sees (an entity last seen more than
    ``entity_ttl`` before the stream clock counts as new, and its next
    purchase resets the record). The two agree on a live stream. In a replay
    of history the stream clock expires entities, the wall clock does not,
    and records live for their TTL after the replay wrote them. The stream
    clock lives in the store object: a restarted worker expires nothing by it
    until its first purchase.

Synchronous client
    The client blocks. The worker calls the store from its micro-batch loop,
    once per batch, with tight timeouts (``timeout_ms`` 200,
    ``socket_timeout_ms`` 100, ``max_retries`` 1), so a slow cluster delays a
    batch by a fraction of a second; a Faust agent could also run it in a
    thread executor. Timeouts, connection and cluster errors (any client
    error) raise :class:`~features.store.base.StoreUnavailable`: the batch is
    not committed, Kafka redelivers it, and the filters make the retry safe.

Settings
    ``aerospike://HOST:PORT[,HOST:PORT]/NAMESPACE?set_prefix=&user=&tls_name=
    &tls_cafile=&timeout_ms=&socket_timeout_ms=&max_retries=&connect_timeout_ms=
    &dedup_window=``; the password only from ``FRAUDSTREAM_AEROSPIKE_PASSWORD``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
from typing import Any, Sequence

import aerospike
from aerospike import exception as aerospike_errors
from aerospike_helpers import expressions as exp
from aerospike_helpers.batch.records import BatchRecords, Read, Write
from aerospike_helpers.operations import operations as op

from features.definitions import compute_features
from features.schemas import Label, Purchase
from features.state import RECENT_TIMES, EntityState, unapply_purchase
from features.store.aerospike_ops import (ELEMENT_EXISTS, FILTERED_OUT, NOT_FOUND, OK, SNAP_BODY,
                                          SNAP_LABEL, SNAPSHOT_BINS,
                                          STATE_BINS, AerospikeSettings, classify_filtered,
                                          client_config, entity_key, label_filter, label_kinds,
                                          label_ops, parse_url, plan_rounds, probe_ops,
                                          purchase_entities, purchase_filter, purchase_ops,
                                          reset_filter, reset_ops, snapshot_bins,
                                          snapshot_from_bins, state_from_bins, ttl_seconds,
                                          unlabelled_filter)
from features.store.base import (FeatureStore, LabelResult, Snapshot, StoreConfig,
                                 StoreUnavailable)

log = logging.getLogger(__name__)

MAX_BATCH = 5000  # records per batch call, the server's default batch-max-requests
MAX_ATTEMPTS = 4  # writes of one entity update before giving up (records that keep changing)
BATCH_FAILED = -16  # a batch in which some records failed; their own results say why
FILTER_CHECK_KEY = "fraudstream:filter-check"  # a scratch record in the snapshot set
# An entity write the record turned down: its id was applied already, or it
# is idle past its time-to-live (see _resolve_filtered).
_TURNED_DOWN = frozenset({FILTERED_OUT, ELEMENT_EXISTS})

_HINTS = {
    9: "timed out: the cluster is slow or unreachable (timeout_ms)",
    13: "record too big: an entity remembers too many ids (lower dedup_window)",
    14: "hot key: too many concurrent writes to one record",
    20: "namespace not found on the cluster",
    22: "forbidden: a namespace without nsup rejects records with a TTL "
        "(set nsup-period or allow-ttl-without-nsup)",
    65: "invalid credentials", 80: "not authenticated",
}


@dataclasses.dataclass(slots=True)
class _Pending:
    """A snapshot to write at the next commit; ``stored`` ones only get their label."""

    snapshot: Snapshot
    stored: bool = False


class AerospikeStore(FeatureStore):
    """A feature store on an Aerospike cluster (see the module docstring).

    Parameters
    ----------
    settings : AerospikeSettings
        Cluster, namespace, set prefix, credentials and timeouts.
    config : StoreConfig, optional
        Time-to-live, label horizon and feature settings.
    client : aerospike.Client, optional
        A connected client; by default the store connects with ``settings``.

    Raises
    ------
    StoreUnavailable
        When the cluster cannot be reached or rejects the start-up check.
    """

    def __init__(self, settings: AerospikeSettings, config: StoreConfig | None = None,
                 client: Any = None):
        self.settings = settings
        self.config = config or StoreConfig()
        self.clock = -math.inf
        self.round_trips = 0
        self._pending: dict[str, _Pending] = {}
        self._mutex = threading.RLock()
        self._entity_ttl = ttl_seconds(self.config.entity_ttl)
        self._snapshot_ttl = ttl_seconds(self.config.label_horizon)
        # Ids older than the label horizon never come back as new, so a
        # longer window would only make records bigger.
        self._dedup_window = min(settings.dedup_window, self.config.label_horizon)
        self._batch_policy = {"total_timeout": settings.timeout_ms,
                              "socket_timeout": settings.socket_timeout_ms,
                              "max_retries": settings.max_retries}
        self._client = client if client is not None else self._connect()
        self._closed = False
        self.record_filters = self._check_record_filters()
        self.round_trips = 0  # the check is not part of any batch


    @classmethod
    def from_url(cls, url: str, config: StoreConfig | None = None) -> "AerospikeStore":
        """Connect to the cluster an ``aerospike://`` URL names.

        Parameters
        ----------
        url : str
            ``aerospike://HOST:PORT[,HOST:PORT]/NAMESPACE[?options]`` (see
            :func:`~features.store.aerospike_ops.parse_url`).
        config : StoreConfig, optional

        Returns
        -------
        AerospikeStore
        """
        return cls(parse_url(url), config)

    def __repr__(self) -> str:
        return f"AerospikeStore({self.settings.describe()})"

    def _connect(self) -> Any:
        try:
            client = aerospike.client(client_config(self.settings)).connect()
        except aerospike_errors.AerospikeError as exc:
            raise StoreUnavailable(f"cannot connect to {self.settings.describe()}: "
                                   f"{_explain(exc)}") from exc
        log.info("feature store on %s", self.settings.describe())
        return client

    def _check_record_filters(self) -> bool:
        """Whether the client sends the filter expression of a batch record's policy.

        Some client releases drop it (CLIENT-4120). Duplicates are still
        caught (the create-only id mark), but an entity idle past its TTL on
        the stream clock is then only forgotten when the server expires it.
        Two calls at start: write a scratch record, then a batch write whose
        filter cannot pass.

        Returns
        -------
        bool
            True when the server turned the batch write down, as it should.
        """
        key = self._key("snapshot", FILTER_CHECK_KEY)
        policy = {"key": aerospike.POLICY_KEY_SEND, "ttl": 60}
        self._call("filter check", "operate", key, [op.write("check", 1)], policy=policy)
        probe = Write(key, [op.write("check", 2)],
                      policy={**policy, "expressions": exp.Eq(exp.IntBin("check"), 0).compile()})
        self._batch("filter check", [probe], frozenset({OK, FILTERED_OUT}))
        if probe.result == OK:
            log.warning("the aerospike client ignores filter expressions of batch records "
                        "(CLIENT-4120; upgrade the aerospike package): entities idle past "
                        "entity_ttl on the stream clock are forgotten only by the server's TTL")
            return False
        return True

    # -- client calls -----------------------------------------------------
    def _call(self, what: str, method: str, *args: Any, **kwargs: Any) -> Any:
        self.round_trips += 1
        try:
            return getattr(self._client, method)(*args, **kwargs)
        except aerospike_errors.AerospikeError as exc:
            raise StoreUnavailable(f"Aerospike {what} on {self.settings.describe()} failed: "
                                   f"{_explain(exc)}") from exc

    def _batch(self, what: str, records: list, ok: frozenset[int]) -> None:
        """Send batch records in as few calls as the server takes; fail on any record error."""
        for start in range(0, len(records), MAX_BATCH):
            batch = BatchRecords(records[start:start + MAX_BATCH])
            self._call(what, "batch_write", batch, self._batch_policy)
            self._check(what, batch.result, batch.batch_records, ok)

    def _check(self, what: str, result: int, records: Sequence, ok: frozenset[int]) -> None:
        failed = [r for r in records if r.result not in ok or r.in_doubt
                  or (r.result == OK and r.record is None)]
        if result not in (OK, BATCH_FAILED) or failed:
            code = failed[0].result if failed else result
            raise StoreUnavailable(
                f"Aerospike {what} on {self.settings.describe()} failed for "
                f"{len(failed) or 'all'} of {len(records)} records: code {code}"
                f"{' (' + _HINTS[code] + ')' if code in _HINTS else ''}")

    def _select(self, key: tuple, bins: Sequence[str]) -> dict[str, Any] | None:
        self.round_trips += 1
        try:
            return self._client.select(key, list(bins), self._batch_policy)[2]
        except aerospike_errors.RecordNotFound:
            return None
        except aerospike_errors.AerospikeError as exc:
            raise StoreUnavailable(f"Aerospike read of {key[1]}/{key[2]} on "
                                   f"{self.settings.describe()} failed: {_explain(exc)}") from exc

    def _key(self, kind: str, entity_id: str) -> tuple:
        return entity_key(self.settings, kind, entity_id)

    # -- snapshots --------------------------------------------------------
    def _read_snapshots(self, ids: Sequence[str]) -> dict[str, Snapshot]:
        """The stored snapshots of these ids: one call per ``MAX_BATCH``."""
        found: dict[str, Snapshot] = {}
        ids = list(dict.fromkeys(ids))
        for start in range(0, len(ids), MAX_BATCH):
            chunk = ids[start:start + MAX_BATCH]
            batch = self._call("snapshot read", "batch_read",
                               [self._key("snapshot", t) for t in chunk], list(SNAPSHOT_BINS),
                               self._batch_policy)
            self._check("snapshot read", batch.result, batch.batch_records,
                        frozenset({OK, NOT_FOUND}))
            for txid, record in zip(chunk, batch.batch_records):
                if record.result == OK and SNAP_BODY in record.record[2]:
                    found[txid] = snapshot_from_bins(record.record[2])
        return found

    def _live(self, snap: Snapshot | None, clock: float) -> Snapshot | None:
        """A snapshot unless it is past the label horizon on the stream clock."""
        if snap is None or snap.event_ts < clock - self.config.label_horizon:
            return None
        return snap

    def snapshot(self, transaction_id: str) -> Snapshot | None:
        with self._mutex:
            pending = self._pending.get(transaction_id)
            if pending is not None:
                return self._live(pending.snapshot, self.clock)
            bins = self._select(self._key("snapshot", transaction_id), SNAPSHOT_BINS)
            snap = snapshot_from_bins(bins) if bins and SNAP_BODY in bins else None
            return self._live(snap, self.clock)

    # -- entities ---------------------------------------------------------
    def _keep_hours(self, kind: str) -> int:
        cfg = self.config.features
        return cfg.seller_keep_hours if kind == "seller" else cfg.keep_hours

    def entity(self, kind: str, entity_id: str) -> EntityState | None:
        with self._mutex:
            bins = self._select(self._key(kind, entity_id), STATE_BINS[kind])
            if not bins:
                return None
            state = state_from_bins(kind, bins, self._keep_hours(kind))
            if state.last_ts < self.clock - self.config.entity_ttl:
                return None  # idle past its time-to-live on the stream clock
            return state

    # -- purchases --------------------------------------------------------
    def process_purchases(self, purchases: Sequence[Purchase]) -> list[Snapshot]:
        with self._mutex:
            stored = self._read_snapshots([p.transaction_id for p in purchases
                                           if p.transaction_id not in self._pending])
            out: list[Snapshot | None] = [None] * len(purchases)
            fresh: list[tuple[int, float]] = []  # index, entity cutoff on the stream clock
            first_of: dict[str, int] = {}
            clock = self.clock
            for i, p in enumerate(purchases):
                pending = self._pending.get(p.transaction_id)
                known = pending.snapshot if pending else self._live(stored.get(p.transaction_id),
                                                                    clock)
                if known is not None:
                    out[i] = _duplicate(known)
                elif p.transaction_id not in first_of:
                    clock = max(clock, p.event_ts)
                    first_of[p.transaction_id] = i
                    fresh.append((i, clock - self.config.entity_ttl))
            for round_ in plan_rounds([purchase_entities(purchases[i]) for i, _ in fresh]):
                items = [(purchases[fresh[j][0]], fresh[j][1]) for j in round_]
                for j, snap in zip(round_, self._purchase_round(items)):
                    out[fresh[j][0]] = snap
            # Only now, with every write acknowledged, does the batch count as processed.
            self.clock = clock
            for i, _ in fresh:
                self._pending[purchases[i].transaction_id] = _Pending(out[i])
            for i, p in enumerate(purchases):
                if out[i] is None:  # a second delivery within the batch
                    out[i] = _duplicate(out[first_of[p.transaction_id]])
            return out

    def _purchase_round(self, items: list[tuple[Purchase, float]]) -> list[Snapshot]:
        """Apply purchases that share no entity; their snapshots, featurized on the prior state."""
        slots = [(j, kind, eid) for j, (p, _) in enumerate(items)
                 for kind, eid in purchase_entities(p)]
        reset: set[tuple] = set()
        after: dict[tuple, dict] = {}
        for _ in range(MAX_ATTEMPTS):
            todo = [s for s in slots if s not in after]
            if not todo:
                break
            records = [self._purchase_write(items[j], kind, eid, (j, kind, eid) in reset)
                       for j, kind, eid in todo]
            self._batch("entity update", records, _TURNED_DOWN | {OK})
            filtered = []
            for slot, record in zip(todo, records):
                if record.result == OK:
                    after[slot] = record.record[2]
                else:
                    filtered.append(slot)
            if filtered:
                self._resolve_filtered(items, filtered, after, reset)
        missing = [s for s in slots if s not in after]
        if missing:
            raise StoreUnavailable(f"Aerospike entity update on {self.settings.describe()}: "
                                   f"{len(missing)} records kept changing under the writes")
        return [self._featurize(p, {kind: after[(j, kind, eid)]
                                    for kind, eid in purchase_entities(p)})
                for j, (p, _) in enumerate(items)]

    def _purchase_write(self, item: tuple[Purchase, float], kind: str, eid: str,
                        reset: bool) -> Write:
        p, cutoff = item
        ops = purchase_ops(kind, p, self._keep_hours(kind), self._dedup_window)
        policy = {"key": aerospike.POLICY_KEY_SEND, "ttl": self._entity_ttl}
        if reset:
            policy["expressions"] = reset_filter(p.transaction_id, cutoff)
            ops = reset_ops(kind) + ops
        else:
            policy["expressions"] = purchase_filter(p.transaction_id, cutoff)
        return Write(self._key(kind, eid), ops, policy=policy)

    def _resolve_filtered(self, items: list[tuple[Purchase, float]], filtered: list[tuple],
                          after: dict[tuple, dict], reset: set[tuple]) -> None:
        """Read why writes were rejected: applied already, idle past the TTL, or changed."""
        probes = [Read(self._key(kind, eid), probe_ops(kind, items[j][0].transaction_id))
                  for j, kind, eid in filtered]
        self._batch("entity probe", probes, frozenset({OK, NOT_FOUND}))
        for slot, probe in zip(filtered, probes):
            bins = probe.record[2] if probe.result == OK else None
            status = classify_filtered(bins, items[slot[0]][1])
            if status == "applied":  # a redelivery: the record holds the purchase already
                after[slot] = bins
            elif status == "stale":
                reset.add(slot)
            else:
                reset.discard(slot)

    def _featurize(self, p: Purchase, bins: dict[str, dict]) -> Snapshot:
        user = state_from_bins("user", bins["user"], self._keep_hours("user"))
        card = state_from_bins("card", bins["card"], self._keep_hours("card"),
                               recent=RECENT_TIMES + 1)
        seller = state_from_bins("seller", bins["seller"], self._keep_hours("seller"))
        unapply_purchase(p, user, card, seller)
        features = compute_features(p, user, card, seller, self.config.features)
        return Snapshot(p.transaction_id, p.event_ts, p.user_id, p.card_hash, p.seller_id,
                        features)

    # -- labels -----------------------------------------------------------
    def process_labels(self, labels: Sequence[Label]) -> list[LabelResult]:
        with self._mutex:
            stored = self._read_snapshots([x.transaction_id for x in labels
                                           if x.transaction_id not in self._pending])
            decided: list[tuple[Label, str, Snapshot | None]] = []
            applying: dict[str, tuple[Label, Snapshot]] = {}
            for label in labels:
                txid = label.transaction_id
                pending = self._pending.get(txid)
                snap = self._live(pending.snapshot if pending else stored.get(txid), self.clock)
                if snap is None:
                    decided.append((label, "unknown", None))
                elif snap.label is not None or txid in applying:
                    decided.append((label, "duplicate", snap))
                else:
                    applying[txid] = (label, snap)
                    decided.append((label, "applied", snap))
            self._apply_labels(list(applying.values()))
            # Acknowledged: the labels now count, and their snapshots are written at commit.
            for txid, (label, snap) in applying.items():
                snap.label = label.is_fraud
                if txid not in self._pending:
                    self._pending[txid] = _Pending(snap, stored=True)
            return [LabelResult(label, status,
                                _duplicate(snap) if status == "duplicate" else snap)
                    for label, status, snap in decided]

    def _apply_labels(self, items: list[tuple[Label, Snapshot]]) -> None:
        """Count each outcome once in its user, card and seller: a round per shared entity."""
        entities = [[(kind, _entity_id(snap, kind)) for kind in label_kinds(label)]
                    for label, snap in items]
        policy = {"key": aerospike.POLICY_KEY_SEND, "ttl": self._entity_ttl,
                  "exists": aerospike.POLICY_EXISTS_UPDATE}  # a forgotten entity stays forgotten
        for round_ in plan_rounds(entities):
            records = [Write(self._key(kind, eid),
                             label_ops(kind, items[j][0], items[j][1].event_ts,
                                       self._dedup_window),
                             policy={**policy,
                                     "expressions": label_filter(items[j][0].transaction_id)})
                       for j in round_ for kind, eid in entities[j]]
            # Turned down: counted already; not found: an entity forgotten since.
            self._batch("label update", records, _TURNED_DOWN | {OK, NOT_FOUND})

    # -- durability -------------------------------------------------------
    def commit(self) -> None:
        """Write the snapshots of this batch (entity writes are durable when acknowledged)."""
        with self._mutex:
            if not self._pending:
                return
            records = [self._snapshot_write(txid, entry) for txid, entry in self._pending.items()]
            self._batch("snapshot commit", records, frozenset({OK, FILTERED_OUT, NOT_FOUND}))
            self._pending.clear()

    def _snapshot_write(self, txid: str, entry: _Pending) -> Write:
        policy = {"key": aerospike.POLICY_KEY_SEND, "expressions": unlabelled_filter()}
        if entry.stored:  # a label for a snapshot on the server: the label only
            ops = [op.write(SNAP_LABEL, int(entry.snapshot.label))]
            policy.update(ttl=aerospike.TTL_DONT_UPDATE, exists=aerospike.POLICY_EXISTS_UPDATE)
        else:
            ops = [op.write(name, value) for name, value in snapshot_bins(entry.snapshot).items()]
            policy["ttl"] = self._snapshot_ttl
        return Write(self._key("snapshot", txid), ops, policy=policy)

    def close(self) -> None:
        with self._mutex:
            if self._closed:
                return
            try:
                self.commit()
            finally:
                self._closed = True
                try:
                    self._client.close()
                except aerospike_errors.AerospikeError as exc:
                    log.warning("closing the Aerospike client failed: %s", _explain(exc))


def _entity_id(snap: Snapshot, kind: str) -> str:
    return {"user": snap.user_id, "card": snap.card_hash, "seller": snap.seller_id}[kind]


def _duplicate(snap: Snapshot) -> Snapshot:
    return dataclasses.replace(snap, features=dict(snap.features), scores=dict(snap.scores),
                               duplicate=True)


def _explain(exc: aerospike_errors.AerospikeError) -> str:
    """Class, code and message of a client error, with a hint for the usual causes."""
    code = getattr(exc, "code", None)
    hint = f" ({_HINTS[code]})" if code in _HINTS else ""
    return f"{type(exc).__name__} [{code}] {getattr(exc, 'msg', exc)}{hint}"
