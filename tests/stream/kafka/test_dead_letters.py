from __future__ import annotations

import hashlib

import pytest
from confluent_kafka import TIMESTAMP_CREATE_TIME

from features.events import InvalidEvent
from stream.kafka.dead_letters import dead_letter, origin_of

pytestmark = pytest.mark.unit


class FakeMessage:
    """The parts of confluent_kafka.Message a dead letter reads (Message cannot be built)."""

    def topic(self) -> str:
        return "user-events"

    def partition(self) -> int:
        return 3

    def offset(self) -> int:
        return 1042

    def timestamp(self) -> tuple[int, int]:
        return TIMESTAMP_CREATE_TIME, 1_764_201_600_000

    def key(self) -> bytes:
        return b"u1"

    def value(self) -> bytes:
        return b"\xff{not json"

    def headers(self) -> list[tuple[str, bytes]]:
        return [("trace", b"abc")]


def test_dead_letter_keeps_bytes_and_names_its_origin() -> None:
    invalid = InvalidEvent("not_json", "DecodeError", "JSON is malformed")
    record = dead_letter("user-events.dlq", FakeMessage(), "validate", invalid)  # type: ignore[arg-type]
    assert (record.topic, record.key, record.value) == ("user-events.dlq", b"u1", b"\xff{not json")
    assert record.headers is not None
    assert ("trace", b"abc") in record.headers
    assert origin_of(record.headers) == {
        "origin.topic": "user-events",
        "origin.partition": "3",
        "origin.offset": "1042",
        "origin.timestamp": "1764201600000",
        "stage": "validate",
        "error.reason": "not_json",
        "error.class": "DecodeError",
        "error.message": "JSON is malformed",
    }


class HugeMessage(FakeMessage):
    """10 MB: the input topic took it, but no DLQ with default limits would."""

    def value(self) -> bytes:
        return b"{" + b" " * 10_000_000 + b"}"


def test_a_record_too_large_for_the_dlq_is_dead_lettered_as_a_reference() -> None:
    invalid = InvalidEvent("oversize", "Oversize", "10000002 bytes > limit 16384")
    record = dead_letter("user-events.dlq", HugeMessage(), "validate", invalid)  # type: ignore[arg-type]
    assert (record.key, record.value) == (b"u1", b"")
    assert record.headers is not None
    assert sum(len(n) + len(v) for n, v in record.headers) < 2_000
    origin = origin_of(record.headers)
    assert origin["origin.offset"] == "1042"
    assert origin["omitted"] == "value,headers"
    assert origin["value.bytes"] == "10000002"
    assert origin["value.sha256"] == hashlib.sha256(HugeMessage().value()).hexdigest()


def test_an_empty_record_is_dead_lettered_as_it_came() -> None:
    class Empty(FakeMessage):
        def value(self) -> None:  # type: ignore[override]
            return None

    record = dead_letter("dlq", Empty(), "validate", InvalidEvent("empty", "EmptyValue", "-"))  # type: ignore[arg-type]
    assert record.value is None
