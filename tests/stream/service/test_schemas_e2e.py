"""What the running service writes matches the published schemas (`schemas/`): every value on
the segments topic, a tombstone among them, and the headers of every dead letter; and every
keyed record sits on the partition a Java producer would have chosen."""

from __future__ import annotations

import json
from collections import Counter
from functools import cache
from pathlib import Path

import orjson
import pytest
from confluent_kafka import KafkaError, Message, Producer
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from stream.admin.profiles import forget_users
from stream.kafka.loop import Loop
from stream.kafka.partitioning import partition_of
from stream.kafka.topics import ensure_topics
from stream.service.wiring import build_handler
from stream.settings import Settings
from tests.kafka_tools import drain, produce
from tests.stream.service.test_segments_e2e import DAY, generated, keyed, with_segments

pytestmark = pytest.mark.integration

SCHEMAS = Path(__file__).resolve().parents[3] / "schemas"
PARTITIONS = 3
# The default rule, and one that users enter with their third event within an hour and leave at
# a later scoring with fewer (two, with the margin): memberships both ways.
RULES = "vip: spend_30d > 500 and orders_30d >= 3; busy: events_1h >= 3"
TRACE = ("trace", b"abc")


@cache
def validator(name: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{name}.schema.json").read_text())
    return Draft202012Validator(schema, format_checker=Draft202012Validator.FORMAT_CHECKER)


def problems(name: str, instance: object) -> list[str]:
    """Each error where it arose (inside the `oneOf` branch or `anyOf` choice that fits best)."""
    found = (best_match([e]) for e in validator(name).iter_errors(instance))
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in found]


def send_with_headers(settings: Settings, records: list[tuple[bytes | None, bytes]]) -> None:
    """Records with an original header of their own, which a dead letter must keep."""
    failures: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            failures.append(err)

    producer = Producer(
        {"bootstrap.servers": settings.kafka.bootstrap_servers, "message.max.bytes": 3_000_000}
    )
    for key, value in records:
        producer.produce(
            settings.topics.events, value, key, headers=[TRACE], on_delivery=on_delivery
        )
    assert producer.flush(30) == 0
    assert not failures, failures


def test_every_record_the_service_writes_matches_its_schema(
    settings: Settings, tmp_path: Path
) -> None:
    settings = with_segments(settings, rules=RULES, horizon_days=1.0)
    loop = settings.loop.model_copy(update={"batch_size": 200})
    settings = settings.model_copy(update={"loop": loop})
    assert settings.topics.partitions == PARTITIONS
    ensure_topics(settings)
    lines = generated(tmp_path, users=60, days=6, seed=23)
    first = orjson.loads(lines[0])
    user, start = first["user_id"], first["ts"]
    # After all of its partition's events, so batches later than the watermark's: late.
    late = {"event_id": "late-1", "user_id": user, "type": "view", "ts": start - 2 * DAY}
    produce(
        settings.kafka.bootstrap_servers,
        settings.topics.events,
        [*keyed(lines), (user.encode(), orjson.dumps(late))],
    )
    valid = {"event_id": "e", "user_id": "x", "type": "search", "ts": start, "query": "q"}
    send_with_headers(
        settings,
        [
            (b"x", b'{"event_id": "e", '),  # not_json
            (b"x", orjson.dumps({k: v for k, v in valid.items() if k != "ts"})),  # missing_field
            (b"x", orjson.dumps({**valid, "query": "q" * 20_000})),  # oversize
            (b"x", orjson.dumps({**valid, "query": "q" * 2_000_000})),  # oversize, a reference
            (b"y", orjson.dumps(valid)),  # key_mismatch
        ],
    )

    handler = build_handler(settings)
    try:
        summary = Loop(settings, handler).run(until_idle=2.0)
    finally:
        handler.close()
    assert summary.processed == len(lines)
    gone = orjson.loads(lines[-1])["user_id"]
    assert [r["tombstone"] for r in forget_users(settings, [gone])] == [True]

    changes = drain(settings.kafka.bootstrap_servers, settings.topics.segments, PARTITIONS)
    kinds: Counter[str] = Counter()
    for record in changes:
        key = record.key()
        assert record.partition() == partition_of(key, PARTITIONS), key
        if record.value() is None:
            kinds["tombstone"] += 1
            assert key == gone.encode()
            assert not record.headers(), "a tombstone carries no content-type"
            continue
        value = orjson.loads(record.value())
        assert not problems("user-segments", value), (value, problems("user-segments", value))
        assert key == value["user_id"].encode()
        assert record.headers() == [("content-type", b"application/json")]
        kinds[value["type"]] += 1
        if value["type"] == "membership":
            kinds[f"{value['segment']} {'entered' if value['entered'] else 'left'}"] += 1
        elif value["type"] == "segment":
            current = value["current"]
            kinds.update(f"{name} {current[name] is None}" for name in ("cluster", "propensity"))
    assert kinds["segment"] > 60, kinds  # every user's first segment, and later moves
    # The schema saw both a value and null where either may come (the first clusters, and the
    # first propensity model: labels resolve a day after their scoring).
    assert all(kinds[f"{n} {b}"] for n in ("cluster", "propensity") for b in (True, False)), kinds
    assert kinds["busy entered"] and kinds["busy left"], kinds
    assert kinds["tombstone"] == 1, kinds

    letters = drain(settings.kafka.bootstrap_servers, settings.topics.dlq, PARTITIONS)
    reasons: Counter[str] = Counter()
    for letter in letters:
        headers = {name: value.decode() for name, value in letter.headers()}
        assert not problems("dead-letter-headers", headers), (
            headers,
            problems("dead-letter-headers", headers),
        )
        reason = headers["segstream.error.reason"]
        reasons[reason] += 1
        if "segstream.omitted" in headers:
            assert TRACE[0] not in headers, "a reference keeps no original header"
        elif reason != "late":  # the late event was sent without one
            assert headers[TRACE[0]] == TRACE[1].decode(), headers
        if letter.key() is not None:
            assert letter.partition() == partition_of(letter.key(), PARTITIONS)
    assert reasons == {
        "not_json": 1, "missing_field": 1, "oversize": 2, "key_mismatch": 1, "late": 1
    }  # fmt: skip
