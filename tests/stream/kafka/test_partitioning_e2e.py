"""The service's producer config places keys on a real broker where `partition_of` says, as a
Java producer would; a partitioner set by the operator still wins."""

from __future__ import annotations

import zlib
from typing import Any

import pytest
from confluent_kafka import KafkaError, Message, Producer

from stream.kafka.partitioning import partition_of
from stream.kafka.topics import create_topics
from stream.settings import Settings, producer_config

pytestmark = pytest.mark.integration

PARTITIONS = 12
KEYS = [
    *(f"u{i:07d}".encode() for i in range(200)),
    # Every tail length (0 to 3 bytes after the 4-byte words), non-ASCII, long.
    b"a", b"ab", b"abc", b"abcd", b"abcde", "usér-ü-😀".encode(),
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8" * 4,
]  # fmt: skip


def placements(config: dict[str, Any], topic: str) -> dict[bytes, int]:
    """The partition the broker acknowledged each key's record on."""
    placed: dict[bytes, int] = {}

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        assert err is None, err
        placed[msg.key()] = msg.partition()

    producer = Producer(config)
    for key in KEYS:
        producer.produce(topic, b"{}", key, on_delivery=on_delivery)
    assert producer.flush(30) == 0
    return placed


def with_partitions(settings: Settings, topic: str, config: dict[str, str]) -> Settings:
    topics = settings.topics.model_copy(update={"partitions": PARTITIONS})
    kafka = settings.kafka.model_copy(update={"config": config})
    created = settings.model_copy(update={"topics": topics, "kafka": kafka})
    create_topics(created, {topic: {}})
    return created


def test_the_service_producer_places_keys_as_java_clients_do(settings: Settings) -> None:
    topic = f"{settings.topics.events}.placed"
    config = producer_config(with_partitions(settings, topic, {}))
    placed = placements(config, topic)
    assert placed == {key: partition_of(key, PARTITIONS) for key in KEYS}
    # The check tells the partitioners apart: librdkafka's default would have put most
    # keys elsewhere.
    assert sum(p != zlib.crc32(k) % PARTITIONS for k, p in placed.items()) > len(KEYS) // 2


def test_a_partitioner_set_by_the_operator_wins(settings: Settings) -> None:
    topic = f"{settings.topics.events}.crc"
    override = {"partitioner": "consistent_random"}  # SEGSTREAM_KAFKA__CONFIG__PARTITIONER
    config = producer_config(with_partitions(settings, topic, override))
    assert placements(config, topic) == {key: zlib.crc32(key) % PARTITIONS for key in KEYS}
