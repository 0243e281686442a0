"""Create the service's topics when they are missing."""

from __future__ import annotations

import logging
from typing import Final

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from stream.errors import BrokerUnavailableError
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
