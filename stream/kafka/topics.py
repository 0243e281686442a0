"""The service's topics: created when missing, and described for the origin check."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Final

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicCollection, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from stream.errors import BrokerUnavailableError
from stream.kafka.handler import Origin
from stream.settings import Settings, admin_config

logger = logging.getLogger(__name__)

WEEK_MS: Final = 7 * 24 * 3600 * 1000
# Configs are explicit because some brokers (Tansu) read back empty configs unless set at creation.
_EVENTS: Final = {"cleanup.policy": "delete", "retention.ms": str(WEEK_MS), "retention.bytes": "-1"}
_DLQ: Final = {
    "cleanup.policy": "delete",
    "retention.ms": str(4 * WEEK_MS),
    "retention.bytes": "-1",
}
# Keyed by user id and compacted, so the topic keeps every user's latest segment.
_SEGMENTS: Final = {"cleanup.policy": "compact", "retention.ms": "-1", "retention.bytes": "-1"}


def ensure_topics(settings: Settings, timeout_s: float = 30.0) -> list[str]:
    """Create the events, segments and dead-letter topics if missing; return the ones created."""
    topics = settings.topics
    wanted = {
        topics.events: _EVENTS,
        topics.segments: _SEGMENTS,
        topics.dlq: _DLQ,
    }
    return create_topics(settings, wanted, timeout_s=timeout_s)


def create_topics(
    settings: Settings, wanted: dict[str, dict[str, str]], *, timeout_s: float = 30.0
) -> list[str]:
    admin = AdminClient(admin_config(settings))
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as exc:
        msg = (
            f"Kafka at {settings.kafka.bootstrap_servers} did not answer in {timeout_s:.0f}s "
            f"(SEGSTREAM_KAFKA__BOOTSTRAP_SERVERS): {exc.args[0].str()}"
        )
        raise BrokerUnavailableError(msg) from exc
    new = [
        NewTopic(
            name,
            num_partitions=settings.topics.partitions,
            replication_factor=settings.topics.replication_factor,
            config=config,
        )
        for name, config in wanted.items()
        if name not in existing
    ]
    if not new:
        return []
    created = []
    for name, future in admin.create_topics(new, request_timeout=timeout_s).items():
        try:
            future.result(timeout=timeout_s)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
        else:
            created.append(name)
            logger.info("created topic %s", name)
    return created


def describe_origin(
    admin: AdminClient, consumer: Consumer, topic: str, assigned: Sequence[int], timeout_s: float
) -> Origin:
    """The topic's id and partition count, the group's committed offsets on every partition,
    and, where the broker has no topic ids, the end offsets of the assigned ones (a recreated
    topic is then told by offsets that went backwards). A broker that does not answer is
    transient."""
    try:
        described = admin.describe_topics(TopicCollection([topic]), request_timeout=timeout_s)
        description = described[topic].result(timeout=timeout_s)
        count = len(description.partitions)
        every = [TopicPartition(topic, p) for p in range(count)]
        committed = consumer.committed(every, timeout=timeout_s)
        # Only without ids: some brokers (Tansu 0.6) answer ListOffsets(latest) wrongly.
        ends = {} if description.topic_id else _ends(consumer, topic, assigned, timeout_s)
    except KafkaException as exc:
        msg = f"the broker did not describe {topic} in {timeout_s:.0f}s: {exc.args[0].str()}"
        raise BrokerUnavailableError(msg) from exc
    return Origin(
        topic=topic,
        topic_id=str(description.topic_id or ""),
        partitions=count,
        assigned=tuple(sorted(assigned)),
        committed={tp.partition: tp.offset for tp in committed if tp.offset >= 0},
        ends=ends,
    )


def _ends(
    consumer: Consumer, topic: str, partitions: Sequence[int], timeout_s: float
) -> dict[int, int]:
    return {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout_s, cached=False)[1]
        for p in partitions
    }
