"""No raw card number reaches anything a worker writes, even when an event smuggles one in.

Simulated traffic plus a few valid purchases whose extra fields carry card
numbers (spaced, dashed, bare, as a JSON number, nested) run through a worker.
Then every record of every topic the worker writes, every row of every table
of its store, every file of its data directory (the SQLite files byte by byte,
the model snapshots) and its log are scanned for anything that looks like a
card number: 13 to 19 digits, bare or grouped with spaces or dashes, that pass
the Luhn check. The simulator's own events must contain none either, and every
card identifier the worker keeps or sends is a hash.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from pathlib import Path

import orjson
import pytest

from features.store.embedded import EmbeddedStore
from stream import simulator
from stream.producer import produce_events
from worker_harness import Worker, group_lag, read_topic

pytestmark = pytest.mark.kafka

# A digit run of 13-19 digits, optionally grouped by single spaces or dashes, that is not
# part of a longer word or a decimal number.
CANDIDATE = re.compile(r"(?<![\w.])(?<!\d[.,])\d(?:[ -]?\d){12,18}(?![\w]|[.,]\d)")
HASH = re.compile(r"[0-9a-f]{64}")

SMUGGLED = ["4111 1111 1111 1111", "5500-0000-0000-0004", "4012888888881881",
            "378282246310005", "6011111111111117", "3530111333300000"]


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch) * (2 if i % 2 else 1)
        total += d - 9 if d > 9 else d
    return total % 10 == 0


def card_numbers(data: bytes | str) -> list[str]:
    """Every card-number-like digit run in ``data`` (bytes are read as Latin-1)."""
    text = data.decode("latin-1") if isinstance(data, (bytes, bytearray)) else data
    found = []
    for match in CANDIDATE.finditer(text):
        digits = re.sub(r"[ -]", "", match.group())
        if 13 <= len(digits) <= 19 and luhn_valid(digits):
            found.append(match.group())
    return found


def smuggling_purchases() -> list[dict]:
    """Valid purchases whose unknown extra fields carry card numbers."""
    def purchase(i: int, **extra) -> dict:
        return {"transaction_id": f"smuggle-{i}", "event_time": f"2018-04-02T1{i}:00:00Z",
                "user_id": f"u-smuggler-{i}", "seller_id": "s-1", "item_id": "i-1-0",
                "card_hash": hashlib.sha256(f"smuggler-{i}".encode()).hexdigest(),
                "price": 42.0, "n_items": 1, **extra}

    return [purchase(0, note=SMUGGLED[0]), purchase(1, card_number=SMUGGLED[1]),
            purchase(2, pan=int(SMUGGLED[2])), purchase(3, payment={"pan": SMUGGLED[3]}),
            purchase(4, memo=f"paid with card={SMUGGLED[4]} exp 12/29"),
            purchase(5, cards=[SMUGGLED[5]])]


def scan_topic(bootstrap: str, topic: str, skip_keys: set[bytes] = frozenset()) -> list:
    hits = []
    for m in read_topic(bootstrap, topic):
        if m.key() in skip_keys:
            continue
        parts = [m.key() or b"", m.value() or b""]
        parts += [k.encode() + b"=" + (v or b"") for k, v in (m.headers() or [])]
        hits += [(topic, m.partition(), m.offset(), n) for part in parts
                 for n in card_numbers(part)]
    return hits


def scan_tables(db_path: Path) -> list:
    """Every column of every row of every table of a SQLite database."""
    hits = []
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        for table in tables:
            for row in db.execute(f'SELECT * FROM "{table}"'):
                for value in row:
                    if isinstance(value, (str, bytes)):
                        hits += [(table, n) for n in card_numbers(value)]
    finally:
        db.close()
    return hits


def scan_files(root: Path) -> list:
    return [(str(p.relative_to(root)), n) for p in sorted(root.rglob("*")) if p.is_file()
            for n in card_numbers(p.read_bytes())]


def test_the_scanner_finds_what_it_must():
    """The detector itself: grouped and bare Luhn-valid numbers yes, look-alikes no."""
    assert all(card_numbers(f'{{"x": "{n}"}}') for n in SMUGGLED)
    assert card_numbers(b'{"pan": 4012888888881881}')
    assert not card_numbers("4111 1111 1111 1112")  # Luhn fails
    assert not card_numbers('{"f": 0.4111111111111111, "g": 12.4012888888881881}')  # decimals
    assert not card_numbers("f537b71a35259f5e91e70f3f6db2ed3e4111111111111111ab")  # in a hash
    assert not card_numbers("tx-000000000")


@pytest.fixture
def worker(kafka_bootstrap, tmp_path, unique):
    """Alerting on every purchase, so every purchase's alert record is scanned too."""
    w = Worker(kafka_bootstrap, tmp_path, unique, alert_threshold=0.0, warmup_frauds=0,
               warmup_legit=0).start()
    yield w
    w.stop()


def test_no_card_number_is_kept_sent_or_logged(worker, tmp_path):
    s = worker.settings
    sim = simulator.simulate(simulator.preset("demo", n_customers=150, n_terminals=300,
                                              n_days=4), seed=1)
    smugglers = smuggling_purchases()
    produce_events(s, simulator.interleave(sim))
    produce_events(s, [("purchase", p) for p in smugglers])
    worker.wait_scored(len(sim.purchases) + len(smugglers), 90)
    worker.wait_for(lambda: group_lag(s.kafka_bootstrap, s.app_id, s.topic_labels) == 0, 60,
                    "every label to be processed")
    alerts = read_topic(s.kafka_bootstrap, s.topic_alerts)
    worker.stop()

    simulated = [orjson.dumps(e) for e in sim.purchases + sim.labels]
    assert not [n for raw in simulated for n in card_numbers(raw)], "the simulator's own events"

    smuggler_keys = {p["card_hash"].encode() for p in smugglers}
    input_hits = (scan_topic(s.kafka_bootstrap, s.topic_purchases, skip_keys=smuggler_keys)
                  + scan_topic(s.kafka_bootstrap, s.topic_labels))
    assert not input_hits, f"card numbers on the input topics besides the smuggled: {input_hits}"
    assert len(scan_topic(s.kafka_bootstrap, s.topic_purchases)) == len(SMUGGLED)  # it sees them

    written = [s.topic_alerts, s.topic_purchases_dlq, s.topic_labels_dlq]
    written += [t for t in worker_topics(s.kafka_bootstrap) if t.startswith(s.app_id)]
    hits = [h for topic in written for h in scan_topic(s.kafka_bootstrap, topic)]
    hits += scan_tables(tmp_path / "store" / "state.db")
    hits += scan_files(tmp_path)  # store files byte by byte, model snapshots, Faust's files, log
    assert not hits, f"card numbers kept, sent or logged by the worker: {hits[:20]}"

    alerted = {orjson.loads(m.value())["transaction_id"] for m in alerts}
    assert {p["transaction_id"] for p in smugglers} <= alerted
    assert all(HASH.fullmatch(orjson.loads(m.value())["card_hash"]) for m in alerts)
    with EmbeddedStore(tmp_path / "store", s.store_config()) as store:
        cards = store.ids("card")
    assert cards and all(HASH.fullmatch(c) for c in cards), "card entities are keyed by hash"


def worker_topics(bootstrap: str) -> list[str]:
    from confluent_kafka.admin import AdminClient

    return sorted(AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10).topics)
