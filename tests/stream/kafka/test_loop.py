from __future__ import annotations

import hashlib

import orjson
import pytest

from stream.kafka.dead_letters import origin_of
from stream.kafka.handler import NullHandler
from stream.kafka.loop import Loop
from stream.kafka.topics import ensure_topics
from stream.settings import Settings
from tests.kafka_tools import committed, end_offsets, produce, read_topic

pytestmark = pytest.mark.integration

NOW_MS = 1_764_201_600_000

INVALID = {
    "not_utf8": b"\xff\xfe\xfd",
    "not_json": b'{"event_id": "a", ',
    "not_object": b'["event_id", "a"]',
    "missing_field": b'{"user_id": "u1", "type": "view", "ts": 1764201600000}',
    "empty_id": b'{"event_id": "e", "user_id": "", "type": "view", "ts": 1764201600000}',
    "wrong_type": b'{"event_id": "e", "user_id": ["u"], "type": "view", "ts": 1764201600000}',
    "bad_timestamp": b'{"event_id": "e", "user_id": "u", "type": "view", "ts": "soon"}',
    "future_timestamp": b'{"event_id": "e", "user_id": "u", "type": "view", "ts": 4102444800000}',
    "out_of_range": b'{"event_id": "e", "user_id": "u", "type": "purchase", "ts": 1, "price": -1}',
    "unknown_schema_version": (
        b'{"event_id": "e", "user_id": "u", "type": "view", "ts": 1, "schema_version": 7}'
    ),
    "oversize": orjson.dumps(
        {"event_id": "e", "user_id": "u", "type": "search", "ts": 1, "query": "x" * 20_000}
    ),
    # 505 bytes nested 1,500 deep: the parser's recursion used to stop the partition.
    "too_nested": b'{"event_id": "e", "user_id": "u", "type": "view", "ts": 1, "x": '
    + b"[" * 1500
    + b"]" * 1500
    + b"}",
    # Valid, but keyed by something other than its user: a user's events must share a partition.
    "key_mismatch": b'{"event_id": "e", "user_id": "u", "type": "view", "ts": 1764201600000}',
}


def valid_event(i: int) -> bytes:
    return orjson.dumps(
        {"event_id": f"e{i}", "user_id": f"u{i % 7}", "type": "view", "ts": NOW_MS + i}
    )


def test_invalid_records_reach_the_dlq_with_origin_and_offsets_reach_the_end(
    settings: Settings,
) -> None:
    ensure_topics(settings)
    topic = settings.topics.events
    records: list[tuple[bytes | None, bytes]] = [
        (f"u{i % 7}".encode(), valid_event(i)) for i in range(40)
    ]
    records += [(reason.encode(), raw) for reason, raw in INVALID.items()]
    records += [(f"u{i % 7}".encode(), valid_event(i)) for i in range(40, 50)]
    records += [(None, valid_event(i)) for i in range(50, 60)]  # unkeyed: accepted
    placed = produce(settings.kafka.bootstrap_servers, topic, records)

    summary = Loop(settings, NullHandler()).run(until_idle=3.0)

    assert summary.consumed == len(records)
    assert summary.processed == 60
    assert dict(summary.dead_lettered) == dict.fromkeys(INVALID, 1)
    dead = read_topic(settings.kafka.bootstrap_servers, settings.topics.dlq, len(INVALID), 3)
    assert len(dead) == len(INVALID)
    where = dict(zip([r[1] for r in records], placed, strict=True))
    for letter in dead:
        origin = origin_of(letter.headers)
        reason = origin["error.reason"]
        assert letter.value == INVALID[reason], reason
        assert letter.key == reason.encode()
        assert origin["origin.topic"] == topic
        partition, offset = where[INVALID[reason]]
        assert (int(origin["origin.partition"]), int(origin["origin.offset"])) == (
            partition,
            offset,
        )
        assert origin["stage"] == "validate"
        assert origin["error.class"]
        assert origin["error.message"]
        assert int(origin["origin.timestamp"]) > 0
    group = settings.kafka.group_id
    assert committed(settings.kafka.bootstrap_servers, group, topic, 3) == end_offsets(placed)


def test_max_events_bounds_the_run_and_a_restart_continues_without_rereading(
    settings: Settings,
) -> None:
    ensure_topics(settings)
    records: list[tuple[bytes | None, bytes]] = [
        (f"u{i % 7}".encode(), valid_event(i)) for i in range(50)
    ]
    placed = produce(settings.kafka.bootstrap_servers, settings.topics.events, records)

    first = Loop(settings, NullHandler()).run(max_events=20)
    second = Loop(settings, NullHandler()).run(until_idle=2.0)

    assert first.consumed == 20
    assert second.consumed == 30
    assert committed(
        settings.kafka.bootstrap_servers, settings.kafka.group_id, settings.topics.events, 3
    ) == end_offsets(placed)


def test_a_record_too_large_for_any_dlq_is_dead_lettered_as_a_reference(
    settings: Settings,
) -> None:
    ensure_topics(settings)
    topic = settings.topics.events
    huge = b'{"event_id": "e", "user_id": "u", "type": "search", "ts": 1, "query": "'
    huge += b"x" * 10_000_000 + b'"}'
    records: list[tuple[bytes | None, bytes]] = [(b"u1", valid_event(1)), (b"u", huge)]
    records.append((b"u2", valid_event(2)))
    placed = produce(settings.kafka.bootstrap_servers, topic, records, max_bytes=12_000_000)

    summary = Loop(settings, NullHandler()).run(until_idle=3.0)

    assert summary.clean_exit
    assert (summary.consumed, summary.processed) == (3, 2)
    [letter] = read_topic(settings.kafka.bootstrap_servers, settings.topics.dlq, 1, 3)
    origin = origin_of(letter.headers)
    assert (letter.key, letter.value) == (b"u", b"")
    assert (int(origin["origin.partition"]), int(origin["origin.offset"])) == placed[1]
    assert origin["error.reason"] == "oversize"
    assert int(origin["value.bytes"]) == len(huge)
    assert origin["value.sha256"] == hashlib.sha256(huge).hexdigest()
    group = settings.kafka.group_id
    assert committed(settings.kafka.bootstrap_servers, group, topic, 3) == end_offsets(placed)
