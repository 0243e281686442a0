from __future__ import annotations

import orjson
import pytest

from features.events import Event, InvalidEvent, decode_event, parse_timestamp

pytestmark = pytest.mark.unit

NOW_MS = 1_764_201_600_000  # 2025-11-27T00:00:00Z
HUGE_QUANTITY = b', "quantity": 1' + b"0" * 400 + b"}"  # 10**400: no int type holds it


def valid(**fields: object) -> bytes:
    event = {"event_id": "e1", "user_id": "u1", "type": "view", "ts": NOW_MS - 1000, **fields}
    return orjson.dumps({k: v for k, v in event.items() if v is not None})


def reason(raw: bytes | None, **kwargs: int) -> str:
    result = decode_event(raw, now_ms=NOW_MS, **kwargs)  # type: ignore[arg-type]
    assert isinstance(result, InvalidEvent), result
    return result.reason


def test_valid_event_keeps_contract_fields_and_drops_unknown_ones() -> None:
    raw = valid(type="purchase", price=19.99, quantity=2, order_id="o1", category="books",
                password="hunter2")  # fmt: skip
    event = decode_event(raw, now_ms=NOW_MS)
    assert isinstance(event, Event)
    assert (event.user_id, event.type, event.price, event.quantity) == ("u1", "purchase", 19.99, 2)
    assert event.ts_ms == NOW_MS - 1000
    assert not hasattr(event, "password")


@pytest.mark.parametrize(
    ("ts", "expected_ms"),
    [
        (1_700_000_000_000, 1_700_000_000_000),
        ("2025-11-26T23:00:00Z", NOW_MS - 3_600_000),
        ("2025-11-26T23:00:00+00:00", NOW_MS - 3_600_000),
        ("2025-11-27T01:00:00+02:00", NOW_MS - 3_600_000),
        ("2025-11-26T23:00:00", NOW_MS - 3_600_000),
    ],
)
def test_timestamps_in_epoch_ms_or_iso_8601(ts: int | str, expected_ms: int) -> None:
    event = decode_event(valid(ts=ts), now_ms=NOW_MS)
    assert isinstance(event, Event)
    assert event.ts_ms == expected_ms


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, "empty"),
        (b"\xff\xfe{}", "not_utf8"),
        (b'{"event_id": "caf\xe9"}', "not_utf8"),
        (b"{not json", "not_json"),
        (b"", "not_json"),
        (b"[1, 2]", "not_object"),
        (b'"a string"', "not_object"),
        (b'{"user_id": "u1", "type": "view", "ts": 1}', "missing_field"),
        (valid(event_id=""), "empty_id"),
        (valid(user_id=""), "empty_id"),
        (valid(user_id=17), "wrong_type"),
        (valid(ts=True), "wrong_type"),
        (valid(ts=1.5), "wrong_type"),
        (valid(price="12"), "wrong_type"),
        (valid(ts="last tuesday"), "bad_timestamp"),
        (valid(ts=-5), "bad_timestamp"),
        (valid(ts=NOW_MS + 2 * 3_600_000), "future_timestamp"),
        (valid(price=-0.01), "out_of_range"),
        (valid(quantity=-1), "out_of_range"),
        (valid(rating=9), "out_of_range"),
        (valid(schema_version=2), "unknown_schema_version"),
        (valid(type="teleport"), "unknown_event_type"),
        (valid(query="x" * 20_000), "oversize"),
        # In-contract types with magnitudes that would overflow a sum or poison a model.
        (valid(type="purchase", price=1e308, quantity=10), "out_of_range"),
        (valid(type="purchase", price=5.0).replace(b"}", HUGE_QUANTITY), "out_of_range"),
        (valid(type="purchase", price=5.0, quantity=2**63 - 1), "out_of_range"),
        (valid(type="purchase", price=1e9, quantity=11), "out_of_range"),
        (valid().replace(b"}", b', "price": 1e400}'), "out_of_range"),
        (valid().replace(b"}", b', "price": NaN}'), "not_json"),
        # 505 bytes nested 1,500 deep made the parser raise RecursionError.
        (valid().replace(b"}", b', "x": ' + b"[" * 1500 + b"]" * 1500 + b"}"), "too_nested"),
    ],
)
def test_invalid_records_get_a_stable_reason(raw: bytes | None, expected: str) -> None:
    assert reason(raw) == expected


def test_the_largest_line_value_in_bounds_is_an_event() -> None:
    event = decode_event(valid(type="purchase", price=1e9, quantity=10), now_ms=NOW_MS)
    assert isinstance(event, Event)


def test_invalid_result_names_error_class_and_field() -> None:
    result = decode_event(valid(user_id=17), now_ms=NOW_MS)
    assert isinstance(result, InvalidEvent)
    assert result.error_class == "ValidationError"
    assert "user_id" in result.message


def test_limits_are_configurable() -> None:
    assert reason(valid(), max_bytes=10) == "oversize"
    assert reason(valid(ts=NOW_MS + 10_000), max_future_ms=5_000) == "future_timestamp"
    assert isinstance(decode_event(valid(ts=NOW_MS + 10_000), now_ms=NOW_MS), Event)


def test_parse_timestamp_rejects_garbage() -> None:
    assert parse_timestamp("2025-13-01") is None
    assert parse_timestamp("") is None
    assert parse_timestamp(0) == 0
