"""The published JSON Schemas (`schemas/`) say what the service accepts and emits.

The events schema is held against the validator (`features/events.py`): every event the
generator writes passes both, an invalid event fails both wherever a schema can tell, and random
events get the same verdict from both but for the rules only the schema's descriptions state.
The other two schemas are held against what `dead_letter` writes and the README's examples here,
and against the running service in `tests/stream/service/test_schemas_e2e.py`.
"""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from features.events import EVENT_TYPES, Event, InvalidEvent, decode_event, parse_timestamp
from stream.kafka.dead_letters import dead_letter
from stream.tools.generate import generate
from tests.stream.kafka.test_dead_letters import FakeMessage, HugeMessage

pytestmark = pytest.mark.unit

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
NOW_MS = 1_771_060_364_000  # 2026-02-14T09:12:44Z
MISSING = object()


@cache
def validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def errors(name: str, instance: object) -> list[str]:
    """Each error where it arose (inside the `oneOf` branch or `anyOf` choice that fits best)."""
    found = (best_match([e]) for e in validator(name).iter_errors(instance))
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in found]


@pytest.mark.parametrize("path", sorted(SCHEMAS.glob("*.schema.json")), ids=lambda p: p.name)
def test_every_schema_is_a_draft_2020_12_schema(path: Path) -> None:
    schema = json.loads(path.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)


# -- events ------------------------------------------------------------------------------------


def test_every_generated_event_is_valid_for_the_schema_and_the_service(tmp_path: Path) -> None:
    """The demo's input: what `segstream generate` writes, every event type and field."""
    out = tmp_path / "events.jsonl"
    generate(60, 14, 7, out, tmp_path / "personas.csv")
    lines = out.read_bytes().splitlines()
    seen: set[str] = set()
    for line in lines:
        value = json.loads(line)
        assert not errors("user-events", value), (value, errors("user-events", value))
        assert isinstance(decode_event(line, now_ms=NOW_MS + 10**12), Event), value
        seen |= {value["type"], *value}
    assert seen >= EVENT_TYPES, "the generator wrote every type"
    assert {"price", "quantity", "order_id", "rating", "query", "schema_version"} <= seen


def event(**fields: object) -> dict[str, Any]:
    value: dict[str, Any] = {"event_id": "e1", "user_id": "u1", "type": "view", "ts": NOW_MS}
    value.update(fields)
    return {k: v for k, v in value.items() if v is not MISSING}


def decoded(value: object) -> Event | InvalidEvent:
    return decode_event(json.dumps(value).encode(), now_ms=NOW_MS)


REFUSED = {
    "no event_id": (event(event_id=MISSING), "missing_field"),
    "no user_id": (event(user_id=MISSING), "missing_field"),
    "no type": (event(type=MISSING), "missing_field"),
    "no ts": (event(ts=MISSING), "missing_field"),
    "empty event_id": (event(event_id=""), "empty_id"),
    "empty user_id": (event(user_id=""), "empty_id"),
    "event_id of 257": (event(event_id="é" * 257), "out_of_range"),
    "user_id a list": (event(user_id=["u1"]), "wrong_type"),
    "type a number": (event(type=5), "wrong_type"),
    "type unknown": (event(type="click"), "unknown_event_type"),
    "ts true": (event(ts=True), "wrong_type"),
    "ts a fraction": (event(ts=NOW_MS + 0.5), "wrong_type"),
    "ts null": (event(ts=None), "wrong_type"),
    "ts negative": (event(ts=-1), "bad_timestamp"),
    "ts words": (event(ts="yesterday"), "bad_timestamp"),
    "ts with a space first": (event(ts=" 2026-02-14"), "bad_timestamp"),
    "session_id a number": (event(session_id=5), "wrong_type"),
    "query an object": (event(query={"q": "x"}), "wrong_type"),
    "price a string": (event(price="5"), "wrong_type"),
    "price true": (event(price=True), "wrong_type"),
    "price negative": (event(price=-0.01), "out_of_range"),
    "price over 1e9": (event(price=1e9 + 1), "out_of_range"),
    "quantity a fraction": (event(quantity=1.5), "wrong_type"),
    "quantity negative": (event(quantity=-1), "out_of_range"),
    "quantity over 1e6": (event(quantity=1_000_001), "out_of_range"),
    "rating over 5": (event(rating=5.01), "out_of_range"),
    "rating negative": (event(rating=-1), "out_of_range"),
    "schema_version 2": (event(schema_version=2), "unknown_schema_version"),
    "schema_version null": (event(schema_version=None), "wrong_type"),
    "schema_version true": (event(schema_version=True), "wrong_type"),
    "ts_ms a string": (event(ts_ms="now"), "wrong_type"),
    "an array": ([event()], "not_object"),
    "a string": ("view", "not_object"),
    "null": (None, "not_object"),
}


@pytest.mark.parametrize(("value", "reason"), REFUSED.values(), ids=REFUSED.keys())
def test_an_event_the_service_refuses_fails_the_schema(value: object, reason: str) -> None:
    result = decoded(value)
    assert isinstance(result, InvalidEvent), value
    assert result.reason == reason
    assert errors("user-events", value), f"the schema accepts {value!r}"


ACCEPTED = {
    "every optional field": event(
        type="purchase",
        session_id="s",
        product_id="p",
        category="c",
        price=19.99,
        quantity=2,
        order_id="o",
        rating=4.5,
        query="q",
        schema_version=1,
    ),
    "optional fields null": event(
        session_id=None,
        product_id=None,
        category=None,
        price=None,
        quantity=None,
        order_id=None,
        rating=None,
        query=None,
    ),
    "bounds": event(price=1e9, quantity=0, rating=5, event_id="😀" * 256),
    "zero bounds": event(price=0, quantity=1_000_000, rating=0, ts=0),
    "price an integer": event(price=20),
    "line value 1e10": event(price=1e4, quantity=1_000_000),
    "ts ISO with Z": event(ts="2026-02-14T09:12:44Z"),
    "ts ISO with offset": event(ts="2026-02-14 10:12:44.5+01:00"),
    "ts ISO naive": event(ts="2026-02-14T09:12:44"),
    "ts ISO basic": event(ts="20260214T091244"),
    "ts a date": event(ts="2026-02-14"),
    "unknown fields": event(referrer={"utm": ["a", "b"]}, price_eur=3),
    "ts_ms sent": event(ts_ms=-5),
}


@pytest.mark.parametrize("value", ACCEPTED.values(), ids=ACCEPTED.keys())
def test_an_event_the_service_accepts_passes_the_schema(value: dict[str, Any]) -> None:
    assert isinstance(decoded(value), Event), decoded(value)
    assert not errors("user-events", value), errors("user-events", value)


def described(schema: dict[str, Any]) -> str:
    """Every description in the schema, as one text."""
    texts = [schema.get("description", "")]
    texts += [described(v) for v in schema.get("properties", {}).values()]
    return " ".join(texts)


# Rules a schema cannot express: the schema lets these through, the service refuses them, and
# the schema's descriptions say so (in the words given).
DESCRIBED_ONLY = {
    "line value over 1e10": (event(price=1e4 + 1, quantity=1_000_000), "price * quantity"),
    "ts not a time": (event(ts="2026-13-45"), "datetime.fromisoformat"),
    "ts before 1970": (event(ts="1969-12-31T23:59:59Z"), "Not before 1970"),
    "ts too far ahead": (event(ts=NOW_MS + 3_600_001), "ahead of the service's clock"),
    "ts 1.0": (b'{"event_id":"e","user_id":"u","type":"view","ts":1.0}', "1.0 and 1e3"),
    "quantity 1e3": (b'{"event_id":"e","user_id":"u","type":"view","ts":1,"quantity":1e3}',
                     "without fraction or exponent"),
    "oversize": (event(query="x" * 16_400), "16,384 bytes"),
    "too nested": (event(tags=[[[]]] * 40), "at most 64"),
    "lone surrogate": (b'{"event_id":"e","user_id":"u","type":"view","ts":1,"q":"\\ud800"}',
                       "lone surrogate"),
}  # fmt: skip


@pytest.mark.parametrize(("value", "words"), DESCRIBED_ONLY.values(), ids=DESCRIBED_ONLY.keys())
def test_what_the_schema_cannot_express_its_description_states(
    value: dict[str, Any] | bytes, words: str
) -> None:
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    assert isinstance(decode_event(raw, now_ms=NOW_MS), InvalidEvent)
    assert not errors("user-events", json.loads(raw))
    assert words in described(validator("user-events").schema)


# Random events: plausible values near every bound, then at most one field set to any JSON value
# (integral floats only where a number is due: the literal `1.0` is a difference the descriptions
# state) or one required field left out.
ANY = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False).filter(lambda x: not x.is_integer()),
    st.text(max_size=3),
    st.lists(st.integers(0, 3), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
)
ID = st.one_of(
    st.text(min_size=1, max_size=4), st.text(max_size=1), st.text(min_size=255, max_size=258)
)
OPTIONAL_TEXT = st.one_of(st.none(), st.text(max_size=4))
ISO = st.datetimes(min_value=datetime(1960, 1, 1), max_value=datetime(2030, 1, 1))
TIMES = st.one_of(
    st.integers(-2, NOW_MS + 7_200_000),
    ISO.map(datetime.isoformat),
    st.builds(lambda t, sep: t.replace(tzinfo=UTC).isoformat(sep), ISO, st.sampled_from("T ")),
    ISO.map(lambda t: t.strftime("%Y%m%dT%H%M%S")),
)
FIELDS = {
    "event_id": ID,
    "user_id": ID,
    "type": st.sampled_from([*sorted(EVENT_TYPES), "click"]),
    "ts": TIMES,
}
OPTIONAL_FIELDS = {
    "session_id": OPTIONAL_TEXT,
    "product_id": OPTIONAL_TEXT,
    "category": OPTIONAL_TEXT,
    "order_id": OPTIONAL_TEXT,
    "query": OPTIONAL_TEXT,
    "price": st.one_of(st.none(), st.integers(-2, 2_000_000_000), st.floats(-1, 2e9), st.just(1e9)),
    "quantity": st.one_of(st.none(), st.integers(-2, 1_100_000)),
    "rating": st.one_of(st.none(), st.floats(-1, 6), st.integers(-1, 6)),
    "schema_version": st.integers(0, 2),
    "ts_ms": st.integers(),
    "extra": ANY,
}
EVENTS = st.builds(
    lambda value, wild, dropped: {k: v for k, v in (value | wild).items() if k not in dropped},
    st.fixed_dictionaries(FIELDS, optional=OPTIONAL_FIELDS),
    st.dictionaries(st.sampled_from([*FIELDS, *OPTIONAL_FIELDS]), ANY, max_size=1),
    st.one_of(st.just(()), st.just(()), st.just(()), st.tuples(st.sampled_from(list(FIELDS)))),
)
# Refusals for rules only the descriptions state, which the schema lets through.
NOT_IN_SCHEMA = frozenset({"BadTimestamp", "FutureTimestamp", "LineValue", "Oversize", "TooNested"})


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value=EVENTS)
def test_random_events_get_the_same_verdict_from_schema_and_service(
    value: dict[str, Any],
) -> None:
    result = decode_event(json.dumps(value).encode(), now_ms=NOW_MS)
    valid = not errors("user-events", value)
    if isinstance(result, InvalidEvent) and result.error_class in NOT_IN_SCHEMA and valid:
        return
    assert valid == isinstance(result, Event), (result, errors("user-events", value))


@settings(max_examples=300, deadline=None)
@given(ts=st.one_of(st.text(max_size=30), TIMES.filter(lambda t: isinstance(t, str))))
def test_every_time_the_service_reads_passes_the_schema(ts: str) -> None:
    """The pattern on `ts` strings refuses nothing the service reads as a time."""
    if parse_timestamp(ts) is not None:
        assert not errors("user-events", event(ts=ts)), ts


# -- dead letters ------------------------------------------------------------------------------


def header_object(headers: list[tuple[str, bytes]]) -> dict[str, str]:
    """Record headers as the schema sees them: name -> value as UTF-8."""
    return {name: value.decode() for name, value in headers}


def test_a_dead_letter_and_a_reference_have_the_headers_the_schema_describes() -> None:
    invalid = InvalidEvent("not_json", "DecodeError", "JSON is malformed")
    letter = dead_letter("dlq", FakeMessage(), "validate", invalid)  # type: ignore[arg-type]
    assert letter.headers is not None
    headers = header_object(letter.headers)
    assert headers["trace"] == "abc", "the original header is kept"
    assert not errors("dead-letter-headers", headers), errors("dead-letter-headers", headers)

    oversize = InvalidEvent("oversize", "Oversize", "10000002 bytes > limit 16384")
    reference = dead_letter("dlq", HugeMessage(), "validate", oversize)  # type: ignore[arg-type]
    assert reference.headers is not None
    headers = header_object(reference.headers)
    assert "segstream.omitted" in headers
    assert not errors("dead-letter-headers", headers), errors("dead-letter-headers", headers)


DLQ_HEADERS = {
    "segstream.origin.topic": "user-events",
    "segstream.origin.partition": "3",
    "segstream.origin.offset": "1042",
    "segstream.origin.timestamp": "",
    "segstream.stage": "validate",
    "segstream.error.reason": "not_json",
    "segstream.error.class": "DecodeError",
    "segstream.error.message": "JSON is malformed",
    "trace": "abc",
}
REFERENCE = {
    "segstream.omitted": "value,headers",
    "segstream.original.bytes": "10000010",
    "segstream.value.bytes": "10000002",
    "segstream.value.sha256": "ab" * 32,
}
BAD_HEADERS = {
    "no reason": {"segstream.error.reason": MISSING},
    "an unknown reason": {"segstream.error.reason": "bad"},
    "an unknown stage": {"segstream.stage": "score"},
    "late at stage validate": {"segstream.error.reason": "late"},
    "stage late for another reason": {"segstream.stage": "late"},
    "an offset not a number": {"segstream.origin.offset": "-"},
    "a message over 1,000 characters": {"segstream.error.message": "x" * 1001},
    "a reference with an original header": REFERENCE,
    "a reference without its hash": {**REFERENCE, "trace": MISSING,
                                     "segstream.value.sha256": MISSING},
}  # fmt: skip


def test_the_example_headers_pass() -> None:
    assert not errors("dead-letter-headers", DLQ_HEADERS)
    late = {**DLQ_HEADERS, "segstream.stage": "late", "segstream.error.reason": "late"}
    assert not errors("dead-letter-headers", late)
    reference = {k: v for k, v in DLQ_HEADERS.items() if k != "trace"} | REFERENCE
    assert not errors("dead-letter-headers", reference)


@pytest.mark.parametrize("changes", BAD_HEADERS.values(), ids=BAD_HEADERS.keys())
def test_headers_the_service_never_writes_fail(changes: dict[str, object]) -> None:
    headers = {k: v for k, v in {**DLQ_HEADERS, **changes}.items() if v is not MISSING}
    assert errors("dead-letter-headers", headers)


# -- changes -----------------------------------------------------------------------------------

ASSIGNMENT = {
    "segment": "Champions", "cluster": 1,
    "cluster_label": "high purchases_per_session, high price_level", "rfm": "Champions",
    "propensity": 0.71, "propensity_band": "high", "rules": [], "parent": 0, "outlier": False,
    "predicted_spend": 84.5, "recommendations": ["p070180"],
}  # fmt: skip
COMMON = {
    "user_id": "u0000042",
    "reason": "activity",
    "model_version": 12,
    "event_time": "2026-02-14T09:12:44+00:00",
    "event_time_ms": NOW_MS,
    "features": {"sessions": 9.0, "spend_30d": 612.5},
    "schema_version": 1,
}
SEGMENT = {
    "change_id": "u0000042:1796003763:3",
    "type": "segment",
    "previous": ASSIGNMENT,
    "current": {**ASSIGNMENT, "segment": "At Risk", "rfm": "At Risk", "propensity": 0.12,
                "propensity_band": "low"},
    **COMMON,
    "reason": "timer",
    "actions": ["win_back_offer", "personal_email"],
}  # fmt: skip
MEMBERSHIP = {
    "change_id": "u0000042:1796003763:4",
    "type": "membership",
    "segment": "vip",
    "entered": True,
    **COMMON,
    "actions": ["vip_support", "early_access", "premium_cross_sell"],
}
AUDIENCE = {
    "change_id": "u0000042:1796003763:5",
    "type": "audience",
    "audience": "big_spenders",
    "entered": True,
    "audience_version": 3,
    **COMMON,
    "reason": "backfill",
    "features": {},
    "actions": [],
}
GOOD_CHANGES = {
    "segment": SEGMENT,
    "first segment": {**SEGMENT, "previous": None, "reason": "first_seen",
                      "current": {**ASSIGNMENT, "cluster": None, "cluster_label": None,
                                  "propensity": None, "propensity_band": "unknown",
                                  "segment": "vip", "rules": ["vip"], "parent": None,
                                  "predicted_spend": None, "recommendations": [],
                                  "audiences": ["big_spenders"]}},
    "membership": MEMBERSHIP,
    "membership left": {**MEMBERSHIP, "entered": False, "actions": []},
    "audience": AUDIENCE,
    "audience removed": {**AUDIENCE, "entered": False, "reason": "removed"},
    "change in microseconds": {**SEGMENT, "event_time": "2026-02-14T09:12:44.123000+00:00"},
}  # fmt: skip


@pytest.mark.parametrize("change", GOOD_CHANGES.values(), ids=GOOD_CHANGES.keys())
def test_the_readme_changes_and_an_audience_pass(change: dict[str, Any]) -> None:
    assert not errors("user-segments", change), errors("user-segments", change)


def changed(base: dict[str, Any], path: str, value: object) -> dict[str, Any]:
    """`base` with the field at `path` (dots between levels) set, or removed if MISSING."""
    change = copy.deepcopy(base)
    *parents, name = path.split(".")
    target = change
    for parent in parents:
        target = target[parent]
    if value is MISSING:
        del target[name]
    else:
        target[name] = value
    return change


BAD_CHANGES = {
    "no schema_version": changed(SEGMENT, "schema_version", MISSING),
    "schema_version 2": changed(SEGMENT, "schema_version", 2),
    "an undescribed field": changed(SEGMENT, "score", 0.5),
    "an unknown type": changed(SEGMENT, "type", "cluster"),
    "a change_id without epoch": changed(SEGMENT, "change_id", "u0000042:3"),
    "a segment change by backfill": changed(SEGMENT, "reason", "backfill"),
    "no current": changed(SEGMENT, "current", None),
    "an unknown band": changed(SEGMENT, "current.propensity_band", "top"),
    "an unknown rfm": changed(SEGMENT, "current.rfm", "Sleepy"),
    "a propensity over 1": changed(SEGMENT, "current.propensity", 1.5),
    "a negative cluster": changed(SEGMENT, "current.cluster", -1),
    "an undescribed assignment field": changed(SEGMENT, "current.score", 1),
    "a negative predicted spend": changed(SEGMENT, "current.predicted_spend", -1.0),
    "no outlier flag": changed(SEGMENT, "current.outlier", MISSING),
    "a negative parent": changed(SEGMENT, "current.parent", -1),
    "a recommendation twice": changed(SEGMENT, "current.recommendations", ["p1", "p1"]),
    "a feature not a number": changed(SEGMENT, "features.top_categories", ["books"]),
    "an event_time not UTC": changed(SEGMENT, "event_time", "2026-02-14T10:12:44+01:00"),
    "a membership without entered": changed(MEMBERSHIP, "entered", MISSING),
    "a membership left with actions": changed(MEMBERSHIP, "entered", False),
    "a rule name with capitals": changed(MEMBERSHIP, "segment", "VIP"),
    "an audience version 0": changed(AUDIENCE, "audience_version", 0),
    "an audience removed but entered": changed(AUDIENCE, "reason", "removed"),
    "an audience without its version": changed(AUDIENCE, "audience_version", MISSING),
    "an audience by an unknown reason": changed(AUDIENCE, "reason", "manual"),
    "a tombstone": None,
}


@pytest.mark.parametrize("change", BAD_CHANGES.values(), ids=BAD_CHANGES.keys())
def test_changes_the_service_never_sends_fail(change: object) -> None:
    assert errors("user-segments", change)
