"""Event schemas: decoding and validating purchases and labels.

Every input is bytes from Kafka or a line from a file. Decoding either returns a
typed event or raises :class:`InvalidEvent` with a machine-readable ``reason``
before anything else happens, so bad input can never reach the feature store.

>>> p = decode_purchase(b'{"transaction_id": "t1", "event_time": "2018-04-01T12:00:00Z",'
...     b' "user_id": "u1", "seller_id": "s1", "item_id": "i1", "card_hash": "c1",'
...     b' "price": 12.5, "n_items": 2}')
>>> p.transaction_id, p.event_ts, p.price, p.n_items
('t1', 1522584000.0, 12.5, 2)
>>> decode_purchase(b'{"transaction_id": "t1"}')
Traceback (most recent call last):
...
features.schemas.InvalidEvent: missing_field: event_time
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import orjson

SCHEMA_VERSION = 1
MAX_EVENT_BYTES = 64 * 1024
MAX_PRICE = 1_000_000.0
MAX_ITEMS = 10_000
MAX_FUTURE_SECONDS = 24 * 3600.0
# Registration and event times before this are not plausible and usually mean
# seconds were sent where milliseconds were expected.
MIN_TIMESTAMP = 315_532_800.0  # 1980-01-01

# The feature vector every model sees, in this order (definitions in
# features/definitions.py).
WINDOW_DAYS = (1, 7, 30)
SEED_FEATURES = ("user_tenure", "seller_tenure", "user_fraud_ratio", "user_price_typicality",
                 "card_report_rate", "card_recent_velocity", "seller_items_typicality")
WINDOW_FEATURES = tuple(
    f"{entity}_{stat}_{d}d"
    for entity, stats in (("card", ("count", "mean_amount")), ("user", ("count", "mean_amount")),
                          ("seller", ("count", "risk")))
    for stat in stats for d in WINDOW_DAYS)
FEATURE_NAMES = SEED_FEATURES + ("amount", "is_night", "is_weekend") + WINDOW_FEATURES

PURCHASE_FIELDS = ("transaction_id", "event_time", "user_id", "seller_id", "item_id",
                   "card_hash", "price", "n_items")
LABEL_FIELDS = ("transaction_id", "is_fraud", "label_time", "source")


class InvalidEvent(ValueError):
    """An input that is not a valid event.

    ``reason`` is a short code fit for a metric label and a dead-letter header
    (``not_json``, ``missing_field``, ``bad_type``, ``out_of_range``,
    ``oversize``, ``unknown_schema_version``, ``future_time``, ``not_object``,
    ``not_utf8``, ``duplicate_key``); ``detail`` says which field and why.
    """

    REASONS = ("not_utf8", "not_json", "not_object", "oversize", "unknown_schema_version",
               "duplicate_key", "missing_field", "bad_type", "out_of_range", "future_time")

    def __init__(self, reason: str, detail: str = ""):
        assert reason in self.REASONS, reason
        self.reason = reason
        self.detail = detail
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass(frozen=True, slots=True)
class Purchase:
    """One purchase: a card pays a seller for ``n_items`` of an item."""

    transaction_id: str
    event_ts: float  # event time, seconds since the epoch (UTC)
    user_id: str
    seller_id: str
    item_id: str
    card_hash: str
    price: float
    n_items: int
    user_registered_ts: float | None = None
    seller_registered_ts: float | None = None
    currency: str | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True, slots=True)
class Label:
    """The outcome of a transaction, known some time after it happened."""

    transaction_id: str
    is_fraud: bool
    label_ts: float
    source: str


def positional_constructor(cls):
    """A constructor of a frozen slots dataclass taking every field in order, without
    defaults: the same object as ``cls(...)`` in half the time (the generated ``__init__``
    of a frozen class sets each field through ``object.__setattr__``)."""
    setters = [getattr(cls, f).__set__ for f in cls.__slots__]
    names = ", ".join(f"v{i}" for i in range(len(setters)))
    body = "\n".join(f"    s{i}(o, v{i})" for i in range(len(setters)))
    namespace = {f"s{i}": s for i, s in enumerate(setters)}
    namespace.update(cls=cls, new=object.__new__)
    exec(f"def make({names}):\n    o = new(cls)\n{body}\n    return o\n", namespace)
    return namespace["make"]


_new_purchase = positional_constructor(Purchase)
_new_label = positional_constructor(Label)


def parse_time(value: Any, name: str) -> float:
    """Seconds since the epoch from ISO-8601 text or epoch milliseconds.

    >>> parse_time("2018-04-01T00:00:00Z", "t"), parse_time(1522540800000, "t")
    (1522540800.0, 1522540800.0)
    >>> parse_time("2018-04-01T02:00:00+02:00", "t")
    1522540800.0
    >>> parse_time("2018-04-01T00:00:00.250Z", "t")
    1522540800.25
    """
    if isinstance(value, str):
        ts = _TEXT_TIMES.get(value)
        if ts is None:
            ts = _parse_text_time(value, name)
            if len(_TEXT_TIMES) >= _TEXT_TIMES_KEPT:
                _TEXT_TIMES.clear()
            _TEXT_TIMES[value] = ts
    elif isinstance(value, bool):
        raise InvalidEvent("bad_type", f"{name} must be ISO-8601 text or epoch milliseconds")
    elif isinstance(value, (int, float)):
        if not math.isfinite(value):
            raise InvalidEvent("out_of_range", f"{name} is not finite")
        ts = float(value) / 1000.0
    else:
        raise InvalidEvent("bad_type", f"{name} must be ISO-8601 text or epoch milliseconds")
    if ts < MIN_TIMESTAMP:
        raise InvalidEvent("out_of_range", f"{name} is before 1980 (epoch seconds instead of ms?)")
    return ts


# Registration times repeat with every purchase of a user or seller: their
# parsed value is remembered (the table is emptied when it is full).
_TEXT_TIMES: dict[str, float] = {}
_TEXT_TIMES_KEPT = 200_000


@contextlib.contextmanager
def text_times_kept(n: int):
    """Remember up to ``n`` parsed text times (at least as many as usual) while inside.

    A replay parses the time of every event to put them in order, then again
    when the pipeline decodes it: with room for all of them, the second parse
    is a look-up. Afterwards the table is emptied if it holds more than usual.

    >>> with text_times_kept(10):
    ...     parse_time("2018-04-01T00:00:00Z", "t")
    1522540800.0
    """
    global _TEXT_TIMES_KEPT
    usual = _TEXT_TIMES_KEPT
    _TEXT_TIMES_KEPT = max(usual, n)
    try:
        yield
    finally:
        _TEXT_TIMES_KEPT = usual
        if len(_TEXT_TIMES) > usual:
            _TEXT_TIMES.clear()


def _parse_text_time(value: str, name: str) -> float:
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidEvent("bad_type", f"{name} is not ISO-8601: {value[:40]!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    try:
        return dt.timestamp()
    except (OverflowError, ValueError, OSError):
        raise InvalidEvent("out_of_range", f"{name} is out of range") from None


def format_time(ts: float) -> str:
    """ISO-8601 UTC text with milliseconds, the form every output uses.

    Each alert writes two, so the text of the whole second is kept for the
    next call of the same second; the fraction is rounded to microseconds
    as :meth:`datetime.fromtimestamp` does, and the milliseconds cut from it.

    >>> format_time(1522540800.25)
    '2018-04-01T00:00:00.250Z'
    """
    frac, whole = math.modf(ts)
    us = round(frac * 1e6)  # half to even, as datetime rounds
    if 0 <= us < 1_000_000:
        second = _SECOND_TEXT.get(whole)
        if second is None:
            if len(_SECOND_TEXT) >= 64:
                _SECOND_TEXT.clear()
            second = _SECOND_TEXT[whole] = datetime.fromtimestamp(
                whole, timezone.utc).isoformat(timespec="seconds")[:-6]
        return f"{second}.{us // 1000:03d}Z"
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds")[:-6] + "Z"


_SECOND_TEXT: dict[float, str] = {}


def _load_object(raw: bytes | str | None, max_bytes: int) -> dict[str, Any]:
    if raw is None:
        raise InvalidEvent("not_json", "null value (tombstone)")
    if len(raw) > max_bytes:
        raise InvalidEvent("oversize", f"{len(raw)} bytes > {max_bytes}")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if isinstance(raw, (bytes, bytearray, memoryview)):
            try:
                bytes(raw).decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidEvent("not_utf8") from None
        raise InvalidEvent("not_json", str(exc)[:80]) from None
    if not isinstance(obj, dict):
        raise InvalidEvent("not_object", f"got a JSON {type(obj).__name__}")
    _reject_duplicate_keys(raw, obj)
    if not _current_version(obj):
        raise InvalidEvent("unknown_schema_version", repr(obj["schema_version"])[:20])
    return obj


def _current_version(obj: dict[str, Any]) -> bool:
    """Whether an event object is of this schema version (no version given counts as this).

    >>> _current_version({"transaction_id": "t1"}), _current_version({"schema_version": 9})
    (True, False)
    """
    version = obj.get("schema_version", SCHEMA_VERSION)
    return version == SCHEMA_VERSION and not isinstance(version, bool)


def _as_text(obj: dict[str, Any]) -> bytes:
    """An event object as JSON text, to be decoded as if it came from Kafka.

    Replay reads its events from files, already parsed. The usual event (this
    schema version, every field of its plain JSON type, see
    :func:`_plain_purchase`) is checked on that object: its text would give
    back the same object. Anything else is written as text with this and
    decoded from it, so that it gets the same answer as from Kafka. What a
    parsed event skips is the size limit, which is the transport's
    (``max_event_bytes``).
    """
    try:
        return orjson.dumps(obj)
    except TypeError:  # e.g. an integer beyond 64 bits, which the standard library writes
        pass
    try:
        return json.dumps(obj).encode()
    except (TypeError, ValueError) as exc:  # a type JSON has not
        raise InvalidEvent("not_json", str(exc)[:80]) from None


def _reject_duplicate_keys(raw: bytes | str, obj: dict[str, Any]) -> None:
    """Refuse an object with a repeated key: which value is meant is anybody's guess.

    The fast parser keeps the last value silently. Every key of a flat object
    is followed by ``":``, so when the text has no more of those than the
    object has keys there can be no duplicate; only otherwise (nested objects,
    or ``":`` inside a string) the slower exact check runs.

    >>> _reject_duplicate_keys(b'{"a": 1, "b": 2}', {"a": 1, "b": 2})
    >>> _reject_duplicate_keys(b'{"a": 1, "a": 2}', {"a": 2})
    Traceback (most recent call last):
    ...
    features.schemas.InvalidEvent: duplicate_key: a
    """
    marks = raw.count('":') if isinstance(raw, str) else bytes(raw).count(b'":')
    if marks <= len(obj):
        return
    text = raw if isinstance(raw, str) else bytes(raw).decode("utf-8")

    def check(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise InvalidEvent("duplicate_key", key[:40])
            seen.add(key)
        return dict(pairs)

    try:
        json.loads(text, object_pairs_hook=check)
    except InvalidEvent:
        raise
    except ValueError as exc:  # the two parsers disagree on some exotic input: refuse it
        raise InvalidEvent("not_json", str(exc)[:80]) from None


def _text(obj: dict[str, Any], name: str) -> str:
    value = obj.get(name)
    if value is None:
        raise InvalidEvent("missing_field", name)
    if not isinstance(value, str):
        raise InvalidEvent("bad_type", f"{name} must be a string")
    if not value or len(value) > 256:
        raise InvalidEvent("out_of_range", f"{name} must be 1 to 256 characters")
    return value


def _number(obj: dict[str, Any], name: str) -> float:
    value = obj.get(name)
    if value is None:
        raise InvalidEvent("missing_field", name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidEvent("bad_type", f"{name} must be a number")
    if not math.isfinite(value):
        raise InvalidEvent("out_of_range", f"{name} is not finite")
    return float(value)


def _optional_time(obj: dict[str, Any], name: str) -> float | None:
    value = obj.get(name)
    return None if value is None else parse_time(value, name)


def _required_time(obj: dict[str, Any], name: str) -> float:
    if obj.get(name) is None:
        raise InvalidEvent("missing_field", name)
    return parse_time(obj[name], name)


def decode_purchase(raw: bytes | str | dict, *, now: float | None = None,
                    max_bytes: int = MAX_EVENT_BYTES) -> Purchase:
    """Decode and validate one purchase event, or raise :class:`InvalidEvent`.

    ``now`` (seconds) bounds how far in the future an event time may be; it
    defaults to the wall clock. Replay of history passes the replay clock.

    ``raw`` is the event's JSON text, or the object a file reader parsed (see
    :func:`_as_text`).
    """
    return _decode(raw, max_bytes, lambda obj: _plain_purchase(obj, now),
                   lambda obj: _checked_purchase(obj, now))


def _decode(raw, max_bytes: int, plain, checked):
    """The event of ``raw`` (text or parsed object): ``plain`` of its object for the usual
    event (None otherwise), else ``checked`` of it, which finds what is wrong or accepts it."""
    if type(raw) is dict:
        if _current_version(raw):
            event = plain(raw)
            if event is not None:
                return event
        raw = _as_text(raw)
    obj = _load_object(raw, max_bytes)
    event = plain(obj)
    return event if event is not None else checked(obj)


def _checked_purchase(obj: dict[str, Any], now: float | None) -> Purchase:
    """Every check of a purchase one by one: the first that fails raises."""
    transaction_id = _text(obj, "transaction_id")
    event_ts = _required_time(obj, "event_time")
    limit = (time.time() if now is None else now) + MAX_FUTURE_SECONDS
    if event_ts > limit:
        raise InvalidEvent("future_time", "event_time is more than a day in the future")
    price = _number(obj, "price")
    if not 0.0 < price <= MAX_PRICE:
        raise InvalidEvent("out_of_range", f"price must be in (0, {MAX_PRICE:g}]")
    n_items = obj.get("n_items")
    if n_items is None:
        raise InvalidEvent("missing_field", "n_items")
    if isinstance(n_items, float) and n_items.is_integer():
        n_items = int(n_items)
    if isinstance(n_items, bool) or not isinstance(n_items, int):
        raise InvalidEvent("bad_type", "n_items must be an integer")
    if not 1 <= n_items <= MAX_ITEMS:
        raise InvalidEvent("out_of_range", f"n_items must be in [1, {MAX_ITEMS}]")
    currency = obj.get("currency")
    if currency is not None and not isinstance(currency, str):
        raise InvalidEvent("bad_type", "currency must be a string")
    extra = {k: v for k, v in obj.items() if k not in _PURCHASE_KNOWN}
    return Purchase(
        transaction_id=transaction_id,
        event_ts=event_ts,
        user_id=_text(obj, "user_id"),
        seller_id=_text(obj, "seller_id"),
        item_id=_text(obj, "item_id"),
        card_hash=_text(obj, "card_hash"),
        price=price,
        n_items=n_items,
        user_registered_ts=_optional_time(obj, "user_registered_at"),
        seller_registered_ts=_optional_time(obj, "seller_registered_at"),
        currency=currency,
        extra=extra,
    )


_PURCHASE_KNOWN = frozenset(PURCHASE_FIELDS) | {
    "user_registered_at", "seller_registered_at", "currency", "schema_version"}


def _plain_purchase(obj: dict[str, Any], now: float | None) -> Purchase | None:
    """The purchase of the usual case in fewer steps: every field present with its plain
    JSON type and in range, no unknown field. None for anything else, which then goes
    through the checks of :func:`decode_purchase` one by one (they find what is wrong, or
    accept it). What this returns, they would return too."""
    if len(obj) > len(_PURCHASE_KNOWN) or not obj.keys() <= _PURCHASE_KNOWN:
        return None
    get = obj.get
    transaction_id, user_id, seller_id = get("transaction_id"), get("user_id"), get("seller_id")
    item_id, card_hash, price, n_items = get("item_id"), get("card_hash"), get("price"), \
        get("n_items")
    currency = get("currency")
    if not (type(transaction_id) is str and 0 < len(transaction_id) <= 256
            and type(user_id) is str and 0 < len(user_id) <= 256
            and type(seller_id) is str and 0 < len(seller_id) <= 256
            and type(item_id) is str and 0 < len(item_id) <= 256
            and type(card_hash) is str and 0 < len(card_hash) <= 256
            and type(price) is float and 0.0 < price <= MAX_PRICE
            and type(n_items) is int and 1 <= n_items <= MAX_ITEMS
            and (currency is None or type(currency) is str)):
        return None
    # Times already parsed are looked up here (what parse_time would do first).
    times = _TEXT_TIMES
    text = get("event_time")
    event_ts = times.get(text) if type(text) is str else None
    text = get("user_registered_at")
    user_registered_ts = times.get(text) if type(text) is str else None
    text = get("seller_registered_at")
    seller_registered_ts = times.get(text) if type(text) is str else None
    if (event_ts is None or user_registered_ts is None or seller_registered_ts is None
            or event_ts < MIN_TIMESTAMP or user_registered_ts < MIN_TIMESTAMP
            or seller_registered_ts < MIN_TIMESTAMP):
        try:
            event_ts = _required_time(obj, "event_time")
            user_registered_ts = _optional_time(obj, "user_registered_at")
            seller_registered_ts = _optional_time(obj, "seller_registered_at")
        except InvalidEvent:
            return None
    if event_ts > (time.time() if now is None else now) + MAX_FUTURE_SECONDS:
        return None
    return _new_purchase(transaction_id, event_ts, user_id, seller_id, item_id, card_hash,
                         price, n_items, user_registered_ts, seller_registered_ts, currency, {})


def decode_label(raw: bytes | str | dict, *, max_bytes: int = MAX_EVENT_BYTES) -> Label:
    """Decode and validate one label event, or raise :class:`InvalidEvent`.

    ``raw`` is the event's JSON text, or the object a file reader parsed (see
    :func:`_as_text`).

    >>> decode_label(b'{"transaction_id": "t1", "is_fraud": true, '
    ...              b'"label_time": 1522540800000, "source": "chargeback"}').is_fraud
    True
    """
    return _decode(raw, max_bytes, _plain_label, _checked_label)


def _plain_label(obj: dict[str, Any]) -> Label | None:
    """The usual label in fewer steps, or None (then :func:`_checked_label` decides)."""
    transaction_id, is_fraud, label_time, source = (
        obj.get("transaction_id"), obj.get("is_fraud"), obj.get("label_time"), obj.get("source"))
    if (type(transaction_id) is str and 0 < len(transaction_id) <= 256 and type(is_fraud) is bool
            and type(label_time) is str and type(source) is str and 0 < len(source) <= 256):
        # The usual label; its time is checked as always (a time already parsed is looked up).
        label_ts = _TEXT_TIMES.get(label_time)
        if label_ts is None or label_ts < MIN_TIMESTAMP:
            label_ts = parse_time(label_time, "label_time")
        return _new_label(transaction_id, is_fraud, label_ts, source)
    return None


def _checked_label(obj: dict[str, Any]) -> Label:
    """Every check of a label one by one: the first that fails raises."""
    transaction_id = _text(obj, "transaction_id")
    is_fraud = obj.get("is_fraud")
    if is_fraud is None:
        raise InvalidEvent("missing_field", "is_fraud")
    if not isinstance(is_fraud, bool):
        raise InvalidEvent("bad_type", "is_fraud must be true or false")
    return _new_label(transaction_id, is_fraud, _required_time(obj, "label_time"),
                      _text(obj, "source"))


def purchase_to_dict(p: Purchase) -> dict[str, Any]:
    """The JSON form of a purchase, the inverse of :func:`decode_purchase`."""
    out: dict[str, Any] = dict(p.extra)
    out.update(transaction_id=p.transaction_id, event_time=format_time(p.event_ts),
               user_id=p.user_id, seller_id=p.seller_id, item_id=p.item_id,
               card_hash=p.card_hash, price=p.price, n_items=p.n_items)
    if p.user_registered_ts is not None:
        out["user_registered_at"] = format_time(p.user_registered_ts)
    if p.seller_registered_ts is not None:
        out["seller_registered_at"] = format_time(p.seller_registered_ts)
    if p.currency is not None:
        out["currency"] = p.currency
    return out
