"""Decoding and validation: bad input is rejected with a reason, before any state changes."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import orjson
import pytest
from hypothesis import given, settings, strategies as st

from features.schemas import (InvalidEvent, decode_label, decode_purchase, format_time,
                              purchase_to_dict)

NOW = 1_704_067_200.0  # 2024-01-01
GOOD = {"transaction_id": "t1", "event_time": "2023-12-31T23:00:00Z", "user_id": "u1",
        "seller_id": "s1", "item_id": "i1", "card_hash": "c1", "price": 10.0, "n_items": 1}


def reason(raw: bytes | dict, **kw) -> str:
    with pytest.raises(InvalidEvent) as exc:
        decode_purchase(raw, now=NOW, **kw)
    return exc.value.reason


def with_(**changes) -> bytes:
    event = {**GOOD, **changes}
    return orjson.dumps({k: v for k, v in event.items() if v is not ...})


@pytest.mark.parametrize("raw, expected", [
    (b"\xff\xfe{}", "not_utf8"),
    (b"{", "not_json"),
    (b'{"price": NaN}', "not_json"),
    (b"[1, 2]", "not_object"),
    (with_(price=...), "missing_field"),
    (with_(price="10"), "bad_type"),
    (with_(price=True), "bad_type"),
    (with_(price=-1.0), "out_of_range"),
    (with_(price=0), "out_of_range"),
    (with_(price=1e12), "out_of_range"),
    (with_(n_items=0), "out_of_range"),
    (with_(n_items=-3), "out_of_range"),
    (with_(n_items=1.5), "bad_type"),
    (with_(event_time="yesterday"), "bad_type"),
    (with_(event_time=1_704_067_200), "out_of_range"),  # seconds, not milliseconds
    (with_(event_time="2030-01-01T00:00:00Z"), "future_time"),
    (with_(schema_version=2), "unknown_schema_version"),
    (with_(transaction_id=""), "out_of_range"),
    (with_(user_id=17), "bad_type"),
    (with_(price=...)[:-1] + b',"price":10.0,"price":-1.0}', "duplicate_key"),
    (b'{"transaction_id": "t1", "extra": {"a": 1, "a": 2}}', "duplicate_key"),
])
def test_each_kind_of_bad_purchase_has_its_reason(raw, expected):
    assert reason(raw) == expected


def test_oversize_payloads_are_rejected_before_parsing():
    assert reason(with_(note="x" * 100_000)) == "oversize"
    assert reason(b"{" * 10_000_000) == "oversize"


def test_a_valid_purchase_keeps_unknown_fields_and_round_trips():
    p = decode_purchase(with_(channel="web", n_items=3.0), now=NOW)
    assert p.n_items == 3 and p.extra == {"channel": "web"}
    assert decode_purchase(orjson.dumps(purchase_to_dict(p)), now=NOW) == p


def test_labels_are_validated_too():
    good = {"transaction_id": "t1", "is_fraud": False, "label_time": 1_704_067_200_000,
            "source": "review"}
    assert decode_label(orjson.dumps(good)).is_fraud is False
    for bad, expected in (({**good, "is_fraud": "yes"}, "bad_type"),
                          ({**good, "is_fraud": None}, "missing_field"),
                          ({k: v for k, v in good.items() if k != "source"}, "missing_field")):
        with pytest.raises(InvalidEvent) as exc:
            decode_label(orjson.dumps(bad))
        assert exc.value.reason == expected


def dump(value) -> bytes:
    """JSON as a careless producer writes it: NaN, Infinity and huge integers included."""
    return json.dumps(value).encode()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(), inner, max_size=3),
    max_leaves=8)


@settings(max_examples=6000, deadline=None)
@given(st.one_of(
    st.binary(max_size=200),
    st.dictionaries(st.sampled_from(sorted(GOOD) + ["schema_version", "user_registered_at"]),
                    json_values).map(dump),
    st.tuples(st.sampled_from(sorted(GOOD)), json_values).map(
        lambda kv: dump({**GOOD, kv[0]: kv[1]}))))
def test_the_decoder_never_fails_with_anything_but_invalid_event(raw):
    try:
        decode_purchase(raw, now=NOW)
    except InvalidEvent as exc:
        assert exc.reason in InvalidEvent.REASONS
    try:
        decode_label(raw)
    except InvalidEvent as exc:
        assert exc.reason in InvalidEvent.REASONS


purchase_fields = st.fixed_dictionaries(
    {k: st.just(v) for k, v in GOOD.items()},
    optional={"user_registered_at": st.sampled_from(["2020-01-01T00:00:00.250Z", 1_577_836_800_000,
                                                     "2020-02-30T00:00:00Z", None, True]),
              "seller_registered_at": st.sampled_from(["2019-05-01T10:00:00+02:00", None, 3.5]),
              "currency": st.sampled_from(["EUR", None, 3]),
              "schema_version": st.just(1), "channel": st.just("web")})


@settings(max_examples=3000, deadline=None)
@given(purchase_fields, st.sampled_from(sorted(GOOD)), json_values | st.sampled_from(
    ["", "x" * 257, 1e12, 0.5, 2.0, 10, 10_000, 10_001, "2023-12-31T23:59:59.999Z",
     "2030-01-01T00:00:00Z", 1_704_067_200_000]), st.booleans())
def test_the_plain_purchase_path_accepts_only_what_the_field_by_field_checks_accept(
        event, field, value, change):
    """The quick path of the usual purchase returns what the checks one by one return, or
    leaves the event to them."""
    from features.schemas import _checked_purchase, _plain_purchase

    obj = {**event, field: value} if change else dict(event)
    plain = _plain_purchase(obj, NOW)
    try:
        checked = _checked_purchase(obj, NOW)
    except InvalidEvent:
        assert plain is None
        return
    if plain is not None:
        assert plain == checked and plain.extra == checked.extra
        assert [type(getattr(plain, f)) for f in plain.__slots__] == \
            [type(getattr(checked, f)) for f in checked.__slots__]


def test_the_usual_purchase_takes_the_plain_path():
    from features.schemas import _plain_purchase

    event = {**GOOD, "user_registered_at": "2020-01-01T00:00:00.250Z", "currency": "EUR",
             "seller_registered_at": None}
    assert _plain_purchase(orjson.loads(orjson.dumps(event)), NOW) == decode_purchase(
        orjson.dumps(event), now=NOW)


@settings(max_examples=2000, deadline=None)
@given(st.fixed_dictionaries({
    "transaction_id": st.sampled_from(["t1", "", "x" * 257, 5, None]),
    "is_fraud": st.sampled_from([True, False, 1, "true", None]),
    "label_time": st.sampled_from(["2023-12-31T23:00:00.500Z", "2023-12-31T23:00:00+01:00",
                                   "someday", "1970-01-01T00:00:00Z", 1_704_067_200_000, None]),
    "source": st.sampled_from(["chargeback", "", "y" * 257, 3, None])}))
def test_a_label_decodes_as_its_field_by_field_checks_say(event):
    """The quick path of the usual label gives what the checks one by one give, errors too."""
    from features.schemas import _checked_label

    raw = orjson.dumps(event)
    try:
        expected = _checked_label(orjson.loads(raw))
    except InvalidEvent as exc:
        with pytest.raises(InvalidEvent) as got:
            decode_label(raw)
        assert (got.value.reason, got.value.detail) == (exc.reason, exc.detail)
    else:
        assert decode_label(raw) == expected


def _decoded(decode, raw, **kw):
    try:
        return decode(raw, **kw)
    except InvalidEvent as exc:
        return exc.reason


def _text(obj) -> bytes:
    """What a producer would send: orjson's text, or the standard library's where orjson
    refuses (an integer beyond 64 bits, which the decoder refuses in turn)."""
    try:
        return orjson.dumps(obj)
    except TypeError:
        return dump(obj)


@settings(max_examples=3000, deadline=None)
@given(purchase_fields, st.sampled_from(sorted(GOOD) + ["schema_version", "currency"]),
       json_values | st.sampled_from(["", "x" * 257, 0.5, 10, "2030-01-01T00:00:00Z", 2, True]),
       st.booleans(), st.fixed_dictionaries({
           "transaction_id": st.sampled_from(["t1", "", 5]),
           "is_fraud": st.sampled_from([True, False, 1]),
           "label_time": st.sampled_from(["2023-12-31T23:00:00.500Z", "someday", 1_704_067_200_000,
                                          None]),
           "source": st.sampled_from(["chargeback", "", 3])},
           optional={"schema_version": st.sampled_from([1, 2, True]),
                     "scenario": st.just(2)}))
def test_an_event_parsed_from_a_file_decodes_as_its_text(event, field, value, change, label):
    """A replay hands the pipeline the objects its file reader parsed: each decodes to the
    same purchase or label as its JSON text, or is refused for the same reason."""
    purchase = {**event, field: value} if change else dict(event)
    assert _decoded(decode_purchase, purchase, now=NOW) == \
        _decoded(decode_purchase, _text(purchase), now=NOW)
    assert _decoded(decode_label, label) == _decoded(decode_label, _text(label))


def test_a_parsed_event_of_a_type_json_has_not_is_decoded_from_its_text():
    """What the usual path does not take is written as JSON first: a datetime from a
    Parquet file becomes its ISO text, as before."""
    when = datetime(2023, 12, 31, 23, 0, tzinfo=timezone.utc)
    assert decode_purchase({**GOOD, "event_time": when}, now=NOW).event_ts == when.timestamp()
    assert reason({**GOOD, "price": {10.0}}) == "not_json"  # nor any JSON text at all


def _iso_millis(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="milliseconds")[:-6] + "Z"


@settings(max_examples=3000, deadline=None)
@given(st.floats(min_value=-2e9, max_value=2.5e11, allow_nan=False))
def test_format_time_is_datetimes_text(ts):
    assert format_time(ts) == _iso_millis(ts)


@pytest.mark.parametrize("ts", [0.0, -0.0, 1.9999995, 1.9999994999, 1.0000005, 1522540800.0005,
                                1522540800.9995, 1522540800.9999995, 1522540800.99999949,
                                -1.5, -4e-7, 1e-7, 253402300799.999])
def test_format_time_rounds_as_datetime_at_the_edges(ts):
    assert format_time(ts) == format_time(ts) == _iso_millis(ts)  # cached second, then again
