"""Hostile and awkward input: poison pills, one user with half the traffic, duplicates shuffled."""

from __future__ import annotations

import hashlib
import random
from typing import Any

import orjson
import pytest

from tests.faults.harness import Record, Rig, keyed, shuffled_within

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

TS = 1_767_300_000_000  # inside the generated stream's four days


def event(**fields: Any) -> bytes:
    """A valid view unless `fields` spoil it."""
    base: dict[str, Any] = {"event_id": "pill", "user_id": "pill-user", "type": "view", "ts": TS}
    return orjson.dumps({**base, **fields})


def raw_event(tail: bytes) -> bytes:
    """A view whose last field is written by hand (what orjson cannot or will not write)."""
    return b'{"event_id":"pill","user_id":"pill-user","type":"view",' + tail + b"}"


def poison_pills() -> list[tuple[str, bytes | None]]:
    """Every kind of record the contract rejects, with the reason it must be dead-lettered."""
    deep = b'{"event_id":"p","user_id":"u","type":"view","ts":1,"x":'
    return [
        ("not_json", b"{not json"),
        ("not_json", b""),
        ("empty", None),
        ("not_object", b"[1, 2, 3]"),
        ("not_object", b'"a string"'),
        ("not_object", b"42"),
        ("missing_field", orjson.dumps({"event_id": "x", "type": "view", "ts": TS})),
        ("wrong_type", event(user_id=5)),
        ("wrong_type", event(ts=[TS])),
        ("empty_id", event(event_id="")),
        ("out_of_range", event(type="purchase", price=1e308, quantity=10)),
        ("out_of_range", event(type="purchase", price=1e6, quantity=100_000)),
        ("out_of_range", raw_event(b'"ts":1767300000000,"quantity":1' + b"0" * 400)),
        ("out_of_range", event(type="review", rating=7)),
        ("out_of_range", event(event_id="e" * 300)),
        ("out_of_range", event(user_id="u" * 10_000)),
        # 1,500 levels deep, closed; and 505 bytes of brackets, never closed.
        ("too_nested", deep + b"[" * 1500 + b"]" * 1500 + b"}"),
        ("too_nested", b"[" * 505),
        ("oversize", event(query="q" * 20_000)),
        ("oversize", event(query="q" * 10_000_000)),
        ("not_json", raw_event(b'"ts":NaN')),
        ("not_json", raw_event(b'"ts":1767300000000,"price":Infinity')),
        ("not_json", raw_event(b'"ts":1767300000000,"price":-Infinity')),
        ("bad_timestamp", event(ts=-5)),
        ("bad_timestamp", event(ts="yesterday")),
        ("future_timestamp", event(ts=10**15)),
        ("future_timestamp", raw_event(b'"ts":' + b"9" * 30)),
        ("unknown_event_type", event(type="teleport")),
        ("unknown_schema_version", event(schema_version=2)),
        ("not_utf8", raw_event(b'"ts":1767300000000,"category":"\xc3\x28"')),
        ("not_utf8", b'{"event_id":"p","user_id":"\xff\xfe","type":"view","ts":1767300000000}'),
        # Valid, but keyed by another user (`mixed_in` keys it so): on the wrong partition.
        ("key_mismatch", event(event_id="mismatch", user_id="someone-else")),
    ]


def mixed_in(valid: list[Record], pills: list[tuple[str, bytes | None]], seed: int) -> list[Record]:
    """The pills at random places among the valid records, each keyed like a random valid
    one, so that they share its partition with valid records before and after them."""
    rng = random.Random(seed)
    out = list(valid)
    for reason, value in pills:
        key = rng.choice(valid).key
        out.insert(rng.randrange(len(out) // 10, len(out) * 9 // 10), Record(key, value, reason))
    return out


def test_every_poison_pill_is_dead_lettered_and_the_partition_goes_on(
    rig: Rig, events: list[bytes]
) -> None:
    records = mixed_in(keyed(events), poison_pills(), seed=8)
    rig.feed.max_bytes = 11_000_000  # the 10 MB pill must reach the topic
    feeder = rig.feed.send_over(records, seconds=10)
    service = rig.service().start()
    feeder.finish()
    rig.wait_drained([service])
    summary = rig.stop(service)
    verdict = rig.verify()

    # Valid records follow the last pill of every partition that has one: none stopped there.
    last_pill: dict[int, int] = {}
    for sent in rig.feed.sent:
        if sent.record.reason:
            last_pill[sent.partition] = max(sent.offset, last_pill.get(sent.partition, -1))
    for partition, offset in last_pill.items():
        assert offset < rig.feed.ends()[partition] - 1, f"partition {partition} ends on a pill"
    assert sum(summary["dead_lettered_by_reason"].values()) == len(poison_pills())
    # The 10 MB pill is dead-lettered as a reference to the original.
    huge = next(s for s in rig.feed.sent if s.record.value and len(s.record.value) > 9_000_000)
    headers = verdict.dead_letter_headers[(huge.partition, huge.offset)]
    assert headers["omitted"] == "value,headers"
    assert huge.record.value is not None
    assert headers["value.sha256"] == hashlib.sha256(huge.record.value).hexdigest()
    assert headers["stage"] == "validate"


def with_hot_user(lines: list[bytes], user: str = "hot") -> list[bytes]:
    """The stream plus one user doing as much as everyone else together (a copy of every
    event under the hot user's ids), in event-time order."""
    copies = []
    for line in lines:
        value = orjson.loads(line)
        value["user_id"] = user
        for name in ("event_id", "session_id", "order_id"):
            if name in value:
                value[name] = f"{user}-{value[name]}"
        copies.append(orjson.dumps(value))
    both = lines + copies
    return sorted(both, key=lambda line: orjson.loads(line)["ts"])


def test_one_user_with_half_the_events(rig: Rig, events: list[bytes]) -> None:
    stream = with_hot_user(events)
    feeder = rig.feed.send_over(keyed(stream), seconds=15)
    service = rig.service().start()
    feeder.finish()
    verdict = rig.finish(service)
    assert verdict.applied == len(stream)


def test_every_event_twice_and_out_of_order(rig: Rig, events: list[bytes]) -> None:
    # Up to 20 minutes out of order: well inside the hour of lateness allowed, so none is late.
    stream = shuffled_within(events + events, spread_ms=20 * 60_000, seed=11)
    feeder = rig.feed.send_over(keyed(stream), seconds=15)
    service = rig.service().start()
    feeder.finish()
    rig.wait_drained([service])
    applied = service.metric("segstream_events_applied_total")
    duplicates = service.metric("segstream_events_skipped_total", reason="duplicate")
    rig.stop(service)
    verdict = rig.verify()
    assert verdict.applied == len(events)
    assert (applied, duplicates) == (len(events), len(events))
