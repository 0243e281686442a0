"""Kafka helpers independent of the product: a plain producer, a reader, committed offsets."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    KafkaError,
    Message,
    Producer,
    TopicPartition,
)


@dataclass(frozen=True)
class Read:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def produce(
    bootstrap: str,
    topic: str,
    records: list[tuple[bytes | None, bytes]],
    max_bytes: int = 1_000_000,
) -> list[tuple[int, int]]:
    """Send records in order; return each one's (partition, offset) from its delivery report."""
    config = {"bootstrap.servers": bootstrap, "linger.ms": 0, "message.max.bytes": max_bytes}
    producer = Producer(config)
    placed: list[tuple[int, int] | None] = [None] * len(records)

    def report(index: int):  # type: ignore[no-untyped-def]
        def on_delivery(err: KafkaError | None, msg: Message) -> None:
            assert err is None, err
            placed[index] = (msg.partition(), msg.offset())

        return on_delivery

    for index, (key, value) in enumerate(records):
        producer.produce(topic, value, key, on_delivery=report(index))
        producer.poll(0)
    assert producer.flush(30) == 0
    producer.close()
    assert all(p is not None for p in placed)
    return [p for p in placed if p is not None]


def end_offsets(placed: list[tuple[int, int]]) -> dict[int, int]:
    """End of each partition from the records we produced (Tansu's high watermark undercounts)."""
    ends: dict[int, int] = {}
    for partition, offset in placed:
        ends[partition] = max(ends.get(partition, 0), offset + 1)
    return ends


def read_topic(
    bootstrap: str, topic: str, expected: int, partitions: int, timeout_s: float = 30.0
) -> list[Read]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "test-reader", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    found: list[Read] = []
    deadline = time.monotonic() + timeout_s
    while len(found) < expected and time.monotonic() < deadline:
        for msg in consumer.consume(1000, 0.2):
            if msg.error() is None:
                found.append(
                    Read(msg.partition(), msg.offset(), msg.key(), msg.value(), msg.headers() or [])
                )
    consumer.close()
    return found


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    offsets = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    consumer.close()
    return {tp.partition: tp.offset for tp in offsets if tp.offset >= 0}


def wait_committed(
    bootstrap: str,
    group: str,
    topic: str,
    partitions: int,
    *,
    beyond: int = 0,
    alive: subprocess.Popen[bytes] | None = None,
    timeout_s: float = 60.0,
) -> int:
    """Wait until the group has committed more than `beyond` records in all (a consumer is
    part-way through), failing at once if `alive` exited; return the records committed."""
    deadline = time.monotonic() + timeout_s
    while (done := sum(committed(bootstrap, group, topic, partitions).values())) <= beyond:
        assert alive is None or alive.poll() is None, "the service exited while waited on"
        assert time.monotonic() < deadline, f"no commit beyond {beyond} within {timeout_s:.0f}s"
        time.sleep(0.1)
    return done


def drain(bootstrap: str, topic: str, partitions: int, quiet_s: float = 3.0) -> list[Any]:
    """Every record of the topic: read from the beginning until nothing new for `quiet_s`."""
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": "test-drain", "enable.auto.commit": False}
    )
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(partitions)])
    found: list[Any] = []
    last = time.monotonic()
    deadline = last + 60
    while time.monotonic() - last < quiet_s and time.monotonic() < deadline:
        for msg in consumer.consume(1000, 0.2):
            if msg.error() is None:
                found.append(msg)
                last = time.monotonic()
    consumer.close()
    return found


def changes_of(records: list[Any]) -> list[dict[str, Any]]:
    """Segment change payloads (tombstones left out), in topic order."""
    return [orjson.loads(r.value()) for r in records if r.value() is not None]


def without_epoch(change_id: str) -> str:
    """`<user>:<seq>` of a change id `<user>:<epoch>:<seq>` (the epoch is a start time)."""
    user, _, seq = change_id.rsplit(":", 2)
    return f"{user}:{seq}"
