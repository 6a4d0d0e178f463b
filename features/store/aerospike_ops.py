"""The pure half of the Aerospike feature store: settings, record layout, operations.

Nothing here talks to a server, so all of it is tested without one. The
store in :mod:`features.store.aerospike` sends what these functions build.

Record layout: one record per entity; bin names are short because they travel
with every operation.

* ``n`` purchases; ``fst`` / ``lst`` first and last seen, each an ordered list
  trimmed to its one lowest / highest time (the server has no min/max update);
* ``reg`` registration time (user, seller);
* ``bk`` hourly buckets, a key-ordered map: ``2*hour`` -> count and
  ``2*hour+1`` -> amount (user, card) or frauds (seller), so that one
  key-range removal trims both halves of an hour;
* user: ``nf`` frauds, ``nl`` legitimate outcomes, ``lpn`` / ``lps`` / ``lpq``
  log-price count, sum and sum of squares;
* card: ``nr`` fraud reports, ``rct`` recent purchase times, an ordered list
  of ``RECENT_TIMES + 1`` (one spare, see :func:`features.state.unapply_purchase`);
* seller: ``ih`` items-class histogram;
* ``txs`` / ``lbs`` purchase / label ids applied -> their event time, the
  dedup memory the write filters look at.

Every map or list a removal touches is created by an earlier operation of the
same list (the server answers a removal on a missing bin with a bin type
error), and every read comes after the last write of its bin: the client
returns one value per bin name, the last one.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence
from urllib.parse import parse_qsl, urlsplit

import aerospike
from aerospike_helpers import expressions as exp
from aerospike_helpers.operations import list_operations as lop
from aerospike_helpers.operations import map_operations as mop
from aerospike_helpers.operations import operations as op

from features.schemas import Label, Purchase
from features.state import (DAY, RECENT_TIMES, STATE_TYPES, EntityState, hour_of,
                            items_class)
from features.store.base import Snapshot

PASSWORD_ENV = "FRAUDSTREAM_AEROSPIKE_PASSWORD"
DEFAULT_PORT = 3000

KINDS = ("user", "card", "seller")
N, FIRST, LAST, REG, BUCKETS = "n", "fst", "lst", "reg", "bk"
FRAUDS, LEGIT, LP_N, LP_SUM, LP_SQ = "nf", "nl", "lpn", "lps", "lpq"
REPORTS, RECENT, ITEMS = "nr", "rct", "ih"
TXS, LABELS = "txs", "lbs"
STATE_BINS = {
    "user": (N, FIRST, LAST, REG, BUCKETS, FRAUDS, LEGIT, LP_N, LP_SUM, LP_SQ),
    "card": (N, FIRST, LAST, BUCKETS, REPORTS, RECENT),
    "seller": (N, FIRST, LAST, REG, BUCKETS, ITEMS),
}
SNAP_TS, SNAP_BODY, SNAP_LABEL = "ts", "body", "label"
SNAPSHOT_BINS = (SNAP_TS, SNAP_BODY, SNAP_LABEL)

# Result codes a batch record can carry that are not failures.
OK, NOT_FOUND, ELEMENT_EXISTS, FILTERED_OUT = 0, 2, 24, 27

_KEY_ORDERED = {"map_order": aerospike.MAP_KEY_ORDERED}
_CREATE_ONLY = {"map_write_flags": aerospike.MAP_WRITE_FLAGS_CREATE_ONLY}
_ORDERED_LIST = {"list_order": aerospike.LIST_ORDERED,
                 "write_flags": aerospike.LIST_WRITE_DEFAULT}
# Explicit lower ends of removal ranges, of the type stored, so that nothing
# depends on how a client converts None.
_LOWEST_KEY = -(1 << 62)
_LOWEST_TIME = -math.inf


# -- settings -------------------------------------------------------------

@dataclass(frozen=True)
class AerospikeSettings:
    """Where and how to reach the cluster; the password never shows in repr or str.

    Times are milliseconds except ``dedup_window`` (seconds of event time a
    record remembers the ids it applied).
    """

    hosts: tuple[tuple[str, int], ...]
    namespace: str
    set_prefix: str = ""
    user: str | None = None
    password: str | None = field(default=None, repr=False, compare=False)
    tls_name: str | None = None
    tls_cafile: str | None = None
    timeout_ms: int = 200
    socket_timeout_ms: int = 100
    max_retries: int = 1
    connect_timeout_ms: int = 1000
    dedup_window: float = DAY

    def describe(self) -> str:
        """A one-line description for logs and errors (no secret in it)."""
        hosts = ",".join(f"{h}:{p}" for h, p in self.hosts)
        who = f" as {self.user}" if self.user else ""
        tls = " with TLS" if self.tls else ""
        return f"aerospike://{hosts}/{self.namespace} (sets {self.set_prefix!r}+kind){who}{tls}"

    @property
    def tls(self) -> bool:
        return bool(self.tls_name or self.tls_cafile)

    def set_name(self, kind: str) -> str:
        return f"{self.set_prefix}{kind}"


_INT_PARAMS = ("timeout_ms", "socket_timeout_ms", "max_retries", "connect_timeout_ms")
_TEXT_PARAMS = ("set_prefix", "user", "tls_name", "tls_cafile")
_PARAMS = _INT_PARAMS + _TEXT_PARAMS + ("dedup_window",)


def parse_url(url: str, environ: Mapping[str, str] | None = None) -> AerospikeSettings:
    """Settings from ``aerospike://HOST:PORT[,HOST:PORT]/NAMESPACE?option=value&...``.

    Options: ``set_prefix``, ``user``, ``tls_name``, ``tls_cafile``,
    ``timeout_ms``, ``socket_timeout_ms``, ``max_retries``,
    ``connect_timeout_ms``, ``dedup_window`` (seconds). The password is read
    from ``FRAUDSTREAM_AEROSPIKE_PASSWORD`` only: a URL ends up in shell
    histories and process lists.

    Parameters
    ----------
    url : str
        The store URL.
    environ : mapping, optional
        Where the password comes from (default ``os.environ``).

    Returns
    -------
    AerospikeSettings

    Raises
    ------
    ValueError
        For a malformed URL, an unknown option, or a password in the URL.

    >>> s = parse_url("aerospike://a:3000,[::1]:3100/fraud?set_prefix=t1&timeout_ms=80", {})
    >>> s.hosts, s.namespace, s.set_name("user"), s.timeout_ms
    ((('a', 3000), ('::1', 3100)), 'fraud', 't1user', 80)
    >>> parse_url("aerospike://a/ns?password=x", {})  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: do not put the Aerospike password in the store URL; set FRAUDSTREAM_...
    """
    environ = os.environ if environ is None else environ
    parts = urlsplit(url)
    if parts.scheme != "aerospike":
        raise ValueError(f"not an aerospike:// URL: {parts.scheme}://...")
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    if ":" in userinfo or "password" in params:
        raise ValueError("do not put the Aerospike password in the store URL; "
                         f"set {PASSWORD_ENV}")
    unknown = sorted(set(params) - set(_PARAMS))
    if unknown:
        raise ValueError(f"unknown aerospike store option(s) {unknown}; known: {list(_PARAMS)}")
    namespace = parts.path.strip("/")
    if not namespace or "/" in namespace:
        raise ValueError("the store URL needs one namespace: aerospike://HOST:PORT/NAMESPACE")
    options: dict[str, Any] = {k: params[k] or None for k in _TEXT_PARAMS if k in params}
    options["set_prefix"] = options.get("set_prefix") or ""
    if userinfo:
        options["user"] = options.get("user") or userinfo
    for name in _INT_PARAMS:
        if name in params:
            options[name] = _number(name, params[name], int)
    if "dedup_window" in params:
        options["dedup_window"] = _number("dedup_window", params["dedup_window"], float)
    password = environ.get(PASSWORD_ENV) or None
    if options.get("user") and not password:
        raise ValueError(f"user {options['user']!r} given but {PASSWORD_ENV} is not set")
    if password and not options.get("user"):
        raise ValueError(f"{PASSWORD_ENV} is set but the store URL names no user (?user=...)")
    if len(options["set_prefix"]) > 55 or any(c in options["set_prefix"] for c in ":;"):
        raise ValueError("set_prefix must be at most 55 characters without ':' or ';'")
    return AerospikeSettings(hosts=_hosts(hostlist), namespace=namespace, password=password,
                             **options)


def _number(name: str, text: str, kind: type) -> Any:
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"store option {name} must be a number, not {text!r}") from None
    if value < 0 or (name != "max_retries" and value == 0):
        raise ValueError(f"store option {name} must be positive")
    return value


def _hosts(hostlist: str) -> tuple[tuple[str, int], ...]:
    hosts = []
    for item in filter(None, hostlist.split(",")):
        if item.startswith("["):  # [IPv6]:port
            host, _, rest = item[1:].partition("]")
            port = rest.removeprefix(":") or str(DEFAULT_PORT)
        else:
            host, _, port = item.partition(":")
            port = port or str(DEFAULT_PORT)
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bad Aerospike host {item!r}: use HOST:PORT")
        hosts.append((host, int(port)))
    if not hosts:
        raise ValueError("the store URL names no Aerospike host")
    return tuple(hosts)


def client_config(s: AerospikeSettings) -> dict[str, Any]:
    """The ``aerospike.client`` configuration (holds the password: never log it).

    ``validate_keys`` makes the client reject a misspelt policy key instead of
    ignoring it. Retries are safe here: a repeated entity write is turned
    down by its id mark (see the store).

    Parameters
    ----------
    s : AerospikeSettings

    Returns
    -------
    dict
        The configuration dictionary of ``aerospike.client``.

    >>> c = client_config(AerospikeSettings((("a", 3000),), "ns", tls_name="n1", tls_cafile="/ca"))
    >>> c["hosts"], c["tls"], c["policies"]["batch_write"]["key"] == aerospike.POLICY_KEY_SEND
    ([('a', 3000, 'n1')], {'enable': True, 'cafile': '/ca'}, True)
    """
    timing = {"total_timeout": s.timeout_ms, "socket_timeout": s.socket_timeout_ms,
              "max_retries": s.max_retries}
    send_key = {"key": aerospike.POLICY_KEY_SEND}
    config: dict[str, Any] = {
        "hosts": [(h, p, s.tls_name) if s.tls_name else (h, p) for h, p in s.hosts],
        "policies": {
            "read": dict(timing), "batch": dict(timing), "batch_parent_write": dict(timing),
            "write": {**timing, **send_key}, "operate": {**timing, **send_key},
            "batch_write": dict(send_key),
        },
        "connect_timeout": s.connect_timeout_ms,
        "validate_keys": True,
    }
    if s.tls:
        config["tls"] = {"enable": True, **({"cafile": s.tls_cafile} if s.tls_cafile else {})}
    if s.user:
        config["user"], config["password"] = s.user, s.password
    return config


def ttl_seconds(seconds: float) -> int:
    """A record time-to-live: whole seconds, never 0 (0 means the namespace default).

    >>> ttl_seconds(90.2), ttl_seconds(0.1), ttl_seconds(math.inf) == aerospike.TTL_NEVER_EXPIRE
    (91, 1, True)
    """
    if not math.isfinite(seconds):
        return aerospike.TTL_NEVER_EXPIRE
    return max(1, math.ceil(seconds))


# -- entity operations ----------------------------------------------------

def read_ops(kind: str) -> list[dict]:
    """Reads of every state bin; they go last so that they win over earlier results."""
    return [op.read(name) for name in STATE_BINS[kind]]


def _keep_one(name: str, ts: float, lowest: bool) -> list[dict]:
    """Append ``ts`` to an ordered list and keep only its lowest (or highest) value.

    The server has no min/max update; an ordered list of one does it.
    """
    index = 0 if lowest else -1
    return [lop.list_append(name, ts, _ORDERED_LIST),
            lop.list_remove_by_index_range(name, index, aerospike.LIST_RETURN_NONE, 1,
                                           inverted=True)]


def _remember(bin_name: str, txid: str, ts: float, window: float) -> list[dict]:
    """Mark an id as applied and forget marks older than the dedup window.

    The mark is create-only: a second write of the same id fails as a whole
    (``ELEMENT_EXISTS``) even where the filter expression that should have
    stopped it first is not applied.
    """
    return [mop.map_put(bin_name, txid, ts, _CREATE_ONLY),
            mop.map_remove_by_value_range(bin_name, _LOWEST_TIME, ts - window,
                                          aerospike.MAP_RETURN_NONE)]


def purchase_ops(kind: str, p: Purchase, keep_hours: int, dedup_window: float) -> list[dict]:
    """Apply one purchase to one entity record and read the record back.

    Parameters
    ----------
    kind : {"user", "card", "seller"}
    p : Purchase
    keep_hours : int
        Hourly buckets kept behind the purchase's hour.
    dedup_window : float
        Seconds of event time the record remembers applied ids.

    Returns
    -------
    list of dict
        Operations for ``operate`` or a batch ``Write``, the reads last.

    >>> p = Purchase("t1", 7200.0, "u1", "s1", "i1", "c1", 20.0, 1)
    >>> ops = purchase_ops("card", p, 721, DAY)
    >>> [o["bin"] for o in ops if o["op"] != aerospike.OPERATOR_READ]
    ['txs', 'txs', 'n', 'fst', 'fst', 'lst', 'lst', 'bk', 'bk', 'rct', 'rct', 'bk']
    >>> [o["bin"] for o in ops if o["op"] == aerospike.OPERATOR_READ] == list(STATE_BINS["card"])
    True
    """
    ts, price = float(p.event_ts), float(p.price)
    hour = hour_of(ts)
    ops = [*_remember(TXS, p.transaction_id, ts, dedup_window),
           op.increment(N, 1), *_keep_one(FIRST, ts, True), *_keep_one(LAST, ts, False),
           mop.map_increment(BUCKETS, 2 * hour, 1, _KEY_ORDERED)]
    if kind in ("user", "card"):
        ops.append(mop.map_increment(BUCKETS, 2 * hour + 1, price, _KEY_ORDERED))
    registered = p.user_registered_ts if kind == "user" else p.seller_registered_ts
    if kind != "card" and registered is not None:
        ops.append(op.write(REG, float(registered)))
    if kind == "user":
        log_price = math.log(p.price)  # the very expression apply_purchase uses
        ops += [op.increment(LP_N, 1), op.increment(LP_SUM, log_price),
                op.increment(LP_SQ, log_price * log_price)]
    elif kind == "card":
        ops += [lop.list_append(RECENT, ts, _ORDERED_LIST),
                lop.list_remove_by_index_range(RECENT, -(RECENT_TIMES + 1),
                                               aerospike.LIST_RETURN_NONE, RECENT_TIMES + 1,
                                               inverted=True)]
    else:
        ops.append(mop.map_increment(ITEMS, items_class(p.n_items), 1, _KEY_ORDERED))
    # Trim by this purchase's hour; trimming by the newest hour, as the
    # embedded store does, happens when the record is read (state_from_bins).
    ops.append(mop.map_remove_by_key_range(BUCKETS, _LOWEST_KEY, 2 * (hour - keep_hours),
                                           aerospike.MAP_RETURN_NONE))
    return ops + read_ops(kind)


def reset_ops(kind: str) -> list[dict]:
    """Delete every bin of an entity that is idle past its time-to-live on the stream clock.

    Sent in front of :func:`purchase_ops`, so the purchase starts the entity afresh.
    """
    null = aerospike.null()
    return [op.write(name, null) for name in (*STATE_BINS[kind], TXS, LABELS)]


def label_ops(kind: str, label: Label, event_ts: float, dedup_window: float) -> list[dict]:
    """Apply a transaction's outcome to one entity (see ``features.state.apply_label``).

    Parameters
    ----------
    kind : {"user", "card", "seller"}
    label : Label
    event_ts : float
        Event time of the labelled transaction: a fraud counts in its hour.
    dedup_window : float
        Seconds of event time the record remembers applied label ids.

    Returns
    -------
    list of dict
    """
    ops = _remember(LABELS, label.transaction_id, float(label.label_ts), dedup_window)
    if kind == "user":
        ops.append(op.increment(FRAUDS if label.is_fraud else LEGIT, 1))
    elif kind == "card":
        ops.append(op.increment(REPORTS, 1))
    else:  # the fraud counts in the bucket of the transaction's own hour
        ops.append(mop.map_increment(BUCKETS, 2 * hour_of(event_ts) + 1, 1, _KEY_ORDERED))
    return ops


def label_kinds(label: Label) -> tuple[str, ...]:
    """The entities an outcome changes: a legitimate one only counts for the user."""
    return KINDS if label.is_fraud else ("user",)


def probe_ops(kind: str, txid: str) -> list[dict]:
    """Read why a write was filtered out: was the id applied (``txs`` = 1), and the state."""
    return [mop.map_get_by_key(TXS, txid, aerospike.MAP_RETURN_COUNT), *read_ops(kind)]


# -- filters --------------------------------------------------------------

def _absent(bin_name: str, key: str) -> exp._BaseExpr:
    return exp.Or(exp.Not(exp.BinExists(bin_name)),
                  exp.Eq(exp.MapGetByKey(None, aerospike.MAP_RETURN_COUNT, exp.ResultType.INTEGER,
                                         key, exp.MapBin(bin_name)), 0))


def _last_seen() -> exp._BaseExpr:
    return exp.ListGetByIndex(None, aerospike.LIST_RETURN_VALUE, exp.ResultType.FLOAT, -1,
                              exp.ListBin(LAST))


def purchase_filter(txid: str, cutoff: float) -> list:
    """Write only if the id is new to the record and the entity is live on the stream clock.

    Parameters
    ----------
    txid : str
        The purchase id.
    cutoff : float
        The stream clock minus the entity time-to-live: an entity last seen
        before it is forgotten (:func:`reset_filter` handles that); ``-inf``
        when the clock is unknown.

    Returns
    -------
    list
        A compiled expression for the ``expressions`` policy key.
    """
    new = _absent(TXS, txid)
    if not math.isfinite(cutoff):
        return new.compile()
    live = exp.Or(exp.Not(exp.BinExists(LAST)), exp.GE(_last_seen(), float(cutoff)))
    return exp.And(new, live).compile()


def reset_filter(txid: str, cutoff: float) -> list:
    """Reset only a record that still is idle past ``cutoff`` and has not seen the id."""
    return exp.And(_absent(TXS, txid), exp.BinExists(LAST),
                   exp.LT(_last_seen(), float(cutoff))).compile()


def label_filter(txid: str) -> list:
    return _absent(LABELS, txid).compile()


def unlabelled_filter() -> list:
    """A snapshot write must not undo a label some other delivery stored."""
    return exp.Not(exp.BinExists(SNAP_LABEL)).compile()


def classify_filtered(probe: Mapping[str, Any] | None, cutoff: float) -> str:
    """Why an entity write was filtered out, from the :func:`probe_ops` read.

    Parameters
    ----------
    probe : mapping or None
        The bins the probe read, None when the record is gone.
    cutoff : float
        The stream clock minus the entity time-to-live.

    Returns
    -------
    str
        ``applied``: the id is in the record already (a redelivery);
        ``stale``: the entity is idle past ``cutoff`` and must start afresh;
        ``retry``: the record changed in between (or vanished): write again.

    >>> classify_filtered({TXS: 1}, 0.0), classify_filtered({TXS: 0, LAST: [5.0]}, 9.0)
    ('applied', 'stale')
    >>> classify_filtered(None, 9.0), classify_filtered({TXS: 0, LAST: [10.0]}, 9.0)
    ('retry', 'retry')
    """
    if probe is None:
        return "retry"
    if probe.get(TXS):
        return "applied"
    last = probe.get(LAST)
    if last and last[-1] < cutoff:
        return "stale"
    return "retry"


# -- records <-> states ---------------------------------------------------

def state_from_bins(kind: str, bins: Mapping[str, Any], keep_hours: int,
                    recent: int = RECENT_TIMES) -> EntityState:
    """The entity state a record holds, as the embedded store would hold it.

    Buckets older than the keep window of the newest event are left out (the
    server trims by each purchase's own hour, which keeps more after a late
    purchase) unless they count frauds, and the newest ``recent`` card times
    are kept (pass ``RECENT_TIMES + 1`` to keep the spare).

    Parameters
    ----------
    kind : {"user", "card", "seller"}
    bins : mapping
        Bins read from the record (missing bins mean zero or nothing).
    keep_hours : int
        Hourly buckets kept behind the newest event.
    recent : int
        Card times kept.

    Returns
    -------
    UserState, CardState or SellerState
    """
    state = STATE_TYPES[kind]()
    state.n_purchases = _get(bins, N, 0)
    first, last = bins.get(FIRST), bins.get(LAST)
    state.first_seen_ts = first[0] if first else math.inf
    state.last_ts = last[-1] if last else -math.inf
    state.buckets = _buckets(bins.get(BUCKETS) or {}, kind, state.last_ts, keep_hours)
    if kind == "user":
        state.registered_ts = bins.get(REG)
        state.n_frauds, state.n_legit = _get(bins, FRAUDS, 0), _get(bins, LEGIT, 0)
        state.log_price_n = _get(bins, LP_N, 0)
        state.log_price_sum, state.log_price_sq = _get(bins, LP_SUM, 0.0), _get(bins, LP_SQ, 0.0)
    elif kind == "card":
        state.n_reports = _get(bins, REPORTS, 0)
        state.recent_ts = sorted(bins.get(RECENT) or [])[-recent:]
    else:
        state.registered_ts = bins.get(REG)
        state.items_hist = {int(k): v for k, v in (bins.get(ITEMS) or {}).items()}
    return state


def _get(bins: Mapping[str, Any], name: str, default: Any) -> Any:
    value = bins.get(name)
    return default if value is None else value


def _buckets(raw: Mapping[int, Any], kind: str, last_ts: float,
             keep_hours: int) -> dict[int, list[float]]:
    zero = 0 if kind == "seller" else 0.0
    buckets: dict[int, list[float]] = {}
    for key in sorted(raw):
        hour, half = divmod(int(key), 2)
        buckets.setdefault(hour, [0, zero])[half] = raw[key]
    if not math.isfinite(last_ts):
        return buckets
    # The embedded store trims old buckets when a purchase opens a new hour,
    # relative to the newest event then; the server trims at every purchase,
    # relative to that purchase's own hour, which keeps more after a late
    # purchase. Both agree on what is older than the keep window of the
    # newest event, except a seller bucket counting frauds: a label for an old
    # transaction makes one, and the embedded store keeps it until the next
    # new hour (no feature of an in-order purchase reaches that far back).
    oldest = hour_of(last_ts) - keep_hours
    return {hour: slot for hour, slot in buckets.items()
            if hour >= oldest or (kind == "seller" and slot[1])}


def entity_key(settings: AerospikeSettings, kind: str, entity_id: str) -> tuple:
    return (settings.namespace, settings.set_name(kind), entity_id)


def purchase_entities(p: Purchase) -> tuple[tuple[str, str], ...]:
    return (("user", p.user_id), ("card", p.card_hash), ("seller", p.seller_id))


def plan_rounds(entities: Sequence[Sequence[Any]]) -> list[list[int]]:
    """Split events into rounds in which no entity appears twice, keeping each entity's order.

    An event goes one round after the last round that touched any of its
    entities, so a batch takes as many rounds as its busiest entity has events.

    Parameters
    ----------
    entities : sequence of sequences
        The entity keys of each event, in stream order.

    Returns
    -------
    list of list of int
        Event indices per round, each in stream order.

    >>> plan_rounds([("u1", "c1"), ("u2", "c2"), ("u1", "c3"), ("u3", "c3")])
    [[0, 1], [2], [3]]
    """
    last_round: dict[Any, int] = {}
    rounds: list[list[int]] = []
    for index, keys in enumerate(entities):
        r = 1 + max((last_round.get(k, -1) for k in keys), default=-1)
        if r == len(rounds):
            rounds.append([])
        rounds[r].append(index)
        for k in keys:
            last_round[k] = r
    return rounds


# -- snapshots ------------------------------------------------------------

def snapshot_bins(snap: Snapshot) -> dict[str, Any]:
    """The bins of a snapshot record; the label has a bin of its own for filters."""
    body = Snapshot(snap.transaction_id, snap.event_ts, snap.user_id, snap.card_hash,
                    snap.seller_id, snap.features, snap.scores).to_bytes().decode()
    bins: dict[str, Any] = {SNAP_TS: float(snap.event_ts), SNAP_BODY: body}
    if snap.label is not None:
        bins[SNAP_LABEL] = int(snap.label)
    return bins


def snapshot_from_bins(bins: Mapping[str, Any]) -> Snapshot:
    """The inverse of :func:`snapshot_bins`.

    >>> s = Snapshot("t1", 5.0, "u", "c", "s", {"amount": 2.5}, {"m": 0.1}, label=True)
    >>> snapshot_from_bins(snapshot_bins(s)) == s
    True
    """
    snap = Snapshot.from_bytes(bins[SNAP_BODY])
    label = bins.get(SNAP_LABEL)
    snap.label = None if label is None else bool(label)
    return snap
