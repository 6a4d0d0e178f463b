"""Traffic with a known fraud pattern, and what the worker must have made of it.

The expected state of every user, card and seller is rebuilt from the events
that were produced with the product's own arithmetic (``features.state``),
each purchase and each label applied exactly once, and compared field by
field with the worker's embedded store. The store can also be watched while
a worker runs: SQLite in WAL mode lets a read-only connection see every
committed micro-batch.
"""

from __future__ import annotations

import dataclasses
import math
import random
import sqlite3
import threading
import time
from pathlib import Path

import orjson

from features.schemas import decode_label, decode_purchase
from features.state import STATE_TYPES, apply_label, apply_purchase
from features.store import StoreConfig
from features.store.embedded import EmbeddedStore, snapshot_from_bytes
from models.registry import ModelRegistry

T0_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z
STEP_MS = 20_000  # event time between two consecutive purchases
STOLEN_CARDS = 15
NEW_SELLERS = 5
KINDS = ("user", "card", "seller")


# -- traffic ------------------------------------------------------------------------------

def legit_purchase(i: int, rng: random.Random) -> dict:
    """A regular user buying a few cheap items at one of their usual sellers."""
    user = rng.randrange(300)
    return {"transaction_id": f"tx-{i}", "event_time": T0_MS + i * STEP_MS,
            "user_id": f"user-{user}", "seller_id": f"seller-{user % 60}",
            "item_id": f"item-{rng.randrange(100)}", "card_hash": f"card-{user}",
            "price": round(rng.uniform(5, 80), 2), "n_items": rng.choice((1, 1, 1, 2)),
            "user_registered_at": "2022-06-01T00:00:00Z",
            "seller_registered_at": "2021-01-01T00:00:00Z"}


def fraud_purchase(i: int, rng: random.Random) -> dict:
    """The fraud pattern: a stolen card buys dozens of gift cards for thousands at a
    seller registered an hour before the traffic starts."""
    card = rng.randrange(STOLEN_CARDS)
    return {"transaction_id": f"tx-{i}", "event_time": T0_MS + i * STEP_MS,
            "user_id": f"user-stolen-{card}",
            "seller_id": f"seller-new-{rng.randrange(NEW_SELLERS)}",
            "item_id": "gift-card", "card_hash": f"card-stolen-{card}",
            "price": round(rng.uniform(1500, 4000), 2), "n_items": rng.randint(20, 40),
            "seller_registered_at": T0_MS - 3_600_000}


def traffic(start: int, n: int, fraud_share: float, rng: random.Random) -> list[dict]:
    """Purchases ``tx-{start}`` .. ``tx-{start + n - 1}``, in event-time order."""
    return [fraud_purchase(i, rng) if rng.random() < fraud_share else legit_purchase(i, rng)
            for i in range(start, start + n)]


def is_fraud(purchase: dict) -> bool:
    return purchase["item_id"] == "gift-card"


def label_of(purchase: dict) -> dict:
    """The outcome of a purchase, known an hour after it."""
    return {"transaction_id": purchase["transaction_id"], "is_fraud": is_fraud(purchase),
            "label_time": purchase["event_time"] + 3_600_000, "source": "review"}


def keyed(events: list[dict], key: str) -> list[tuple[str, bytes]]:
    """``(key, JSON)`` pairs ready to produce."""
    return [(e[key], orjson.dumps(e)) for e in events]


# -- the store while a worker runs --------------------------------------------------------

def stored_labels(store_dir: Path) -> dict[str, bool | None] | None:
    """Transaction id -> label (None: not labelled yet) of every committed snapshot.

    Read through a read-only SQLite connection, so it works while a worker owns
    the store; None when the database cannot be read right now.
    """
    path = Path(store_dir) / "state.db"
    if not path.exists():
        return None
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=2)
        try:
            return {tx: snapshot_from_bytes(body).label
                    for tx, body in db.execute("SELECT transaction_id, body FROM snapshots")}
        finally:
            db.close()
    except sqlite3.Error:
        return None


class LabelFeeder(threading.Thread):
    """Sends the label of each purchase once its snapshot is durable in the store.

    A label whose purchase has no snapshot yet is ``unknown`` to the worker and
    dropped by design; waiting for the snapshot makes every label count.
    """

    def __init__(self, sender, topic: str, store_dir: Path, purchases: list[dict]):
        super().__init__(daemon=True)
        self.sender, self.topic, self.store_dir = sender, topic, store_dir
        self.waiting = {p["transaction_id"]: label_of(p) for p in purchases}
        self.sent: list[dict] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while self.waiting and not self.stop.wait(0.5):
            stored = stored_labels(self.store_dir) or {}
            for tx in [tx for tx in self.waiting if tx in stored]:
                label = self.waiting.pop(tx)
                self.sender.send(self.topic, tx, orjson.dumps(label))
                self.sent.append(label)


def wait_stored(store_dir: Path, transaction_ids, timeout: float,
                labelled: bool = False) -> bool:
    """Wait until every transaction has a committed snapshot (and a label, if asked)."""
    wanted = set(transaction_ids)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stored = stored_labels(store_dir) or {}
        if all(tx in stored and (not labelled or stored[tx] is not None) for tx in wanted):
            return True
        time.sleep(0.5)
    return False


# -- expected state -----------------------------------------------------------------------

def expected_entities(purchases: list[dict], labels: list[dict], config: StoreConfig
                      ) -> dict[tuple[str, str], object]:
    """Every entity state after applying each purchase, then each label, exactly once."""
    states: dict[tuple[str, str], object] = {}

    def state(kind: str, entity_id: str):
        return states.setdefault((kind, entity_id), STATE_TYPES[kind]())

    decoded = {}
    for raw in purchases:
        p = decode_purchase(orjson.dumps(raw))
        if p.transaction_id in decoded:
            continue
        decoded[p.transaction_id] = p
        apply_purchase(p, state("user", p.user_id), state("card", p.card_hash),
                       state("seller", p.seller_id), config.features.keep_hours,
                       config.features.seller_keep_hours)
    applied = set()
    for raw in labels:
        label = decode_label(orjson.dumps(raw))
        p = decoded.get(label.transaction_id)
        if p is None or label.transaction_id in applied:
            continue
        applied.add(label.transaction_id)
        apply_label(label, p.event_ts, state("user", p.user_id), state("card", p.card_hash),
                    state("seller", p.seller_id))
    return states


def _same(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return (a == b or (isinstance(a, (int, float)) and isinstance(b, (int, float))
                           and math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def store_mismatches(store_dir: Path, purchases: list[dict], labels: list[dict],
                     config: StoreConfig, limit: int = 20) -> list[str]:
    """Differences between the store (its worker stopped) and processing each event once.

    Every aggregate of every user, card and seller is compared (counters, fraud
    and report counts, hourly bucket counts and sums, histograms, times); no
    entity may be missing or extra; every purchase has a snapshot carrying its
    label.
    """
    expected = expected_entities(purchases, labels, config)
    label_by_tx = {lb["transaction_id"]: lb["is_fraud"] for lb in labels}
    problems: list[str] = []
    with EmbeddedStore(store_dir, config) as store:
        for (kind, entity_id), want in expected.items():
            got = store.entity(kind, entity_id)
            if got is None:
                problems.append(f"{kind} {entity_id}: missing")
                continue
            for f in dataclasses.fields(want):
                a, b = getattr(got, f.name), getattr(want, f.name)
                if not _same(a, b):
                    problems.append(f"{kind} {entity_id}.{f.name}: store {a!r} != expected {b!r}")
        for kind in KINDS:
            n_expected = sum(1 for k, _ in expected if k == kind)
            if store.count(kind) != n_expected:
                problems.append(f"{store.count(kind)} {kind}s stored, {n_expected} expected")
        for p in purchases:
            snap = store.snapshot(p["transaction_id"])
            if snap is None:
                problems.append(f"{p['transaction_id']}: no snapshot")
            elif snap.label != label_by_tx.get(p["transaction_id"]):
                problems.append(f"{p['transaction_id']}: snapshot label {snap.label!r}, "
                                f"expected {label_by_tx.get(p['transaction_id'])!r}")
    return problems[:limit] + ([f"... {len(problems) - limit} more"] if len(problems) > limit
                               else [])


# -- model registry -----------------------------------------------------------------------

def registry_problems(model_dir: Path, name: str = "dynamic") -> list[str]:
    """Why the current or any kept model version would not load (checksums verified)."""
    registry = ModelRegistry(model_dir, name)
    kept = [v.version for v in registry.versions()]
    problems = []
    current = registry.current_version()
    if current is None or current not in kept:
        problems.append(f"current version {current} is not among the kept ones {kept}")
    for version in kept:
        try:
            registry.load(version)
        except Exception as exc:  # noqa: BLE001 - every failure is a finding
            problems.append(f"version {version}: {type(exc).__name__}: {exc}")
    return problems


def current_model(model_dir: Path, name: str = "dynamic"):
    """The current model version, or None (none published, or being replaced)."""
    try:
        loaded = ModelRegistry(model_dir, name).load()
    except (OSError, KeyError, ValueError, EOFError):
        return None
    return loaded[1] if loaded else None
