"""`segstream recover`: the way forward after the service stopped because its state was lost.

Two choices, both under a new epoch (so change ids never repeat):
- `--from-earliest` drops the derived state (users, watermarks, population counts, timers,
  outbox) and moves the group's offsets to the start of every partition: the service re-folds
  everything the topic still holds. Erasure markers and the model are kept.
- `--from-committed` keeps whatever Redis holds and the group's offsets: what Redis lost stays
  lost, nothing is counted twice.
Every instance of the group must be stopped first; the group must be empty.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from confluent_kafka import Consumer, ConsumerGroupState, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from redis.cluster import RedisCluster

from features import keys, resp
from stream.errors import BrokerUnavailableError, SegstreamError
from stream.kafka.handler import Origin
from stream.kafka.topics import describe_origin
from stream.service.origin_guard import Stored, new_epoch, origin_fields
from stream.service.slot_marks import SlotMarks
from stream.service.wiring import redis_client
from stream.settings import Settings, admin_config, consumer_config

logger = logging.getLogger(__name__)

TIMEOUT_S: Final = 30.0
_IDLE_GROUP: Final = {ConsumerGroupState.EMPTY, ConsumerGroupState.DEAD}


class GroupActiveError(SegstreamError):
    """Instances of the group are still running."""


@dataclass(frozen=True)
class Recovered:
    mode: str
    epoch: int
    previous_epoch: int
    offsets: dict[int, int]
    users_dropped: int
    keys_dropped: int
    erasures_kept: int

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "offsets": {str(p): o for p, o in self.offsets.items()}}


def recover(settings: Settings, *, from_earliest: bool) -> Recovered:
    admin = AdminClient(admin_config(settings))
    _require_idle_group(admin, settings.kafka.group_id)
    client = redis_client(settings)
    prefix = settings.key_prefix
    consumer = Consumer({**consumer_config(settings), "enable.auto.commit": False})
    try:
        partitions = _partition_count(admin, settings.topics.events)
        origin = describe_origin(
            admin, consumer, settings.topics.events, range(partitions), TIMEOUT_S
        )
        starts = _starts(consumer, origin)
        previous = Stored.parse(client.hgetall(keys.origin(prefix)))
        if from_earliest:
            users, dropped = _drop_derived(client, prefix)
            offsets = starts
            _commit(consumer, origin.topic, offsets)
        else:
            users, dropped = 0, 0
            offsets = {p: origin.committed.get(p, starts[p]) for p in starts}
        epoch = new_epoch(previous.epoch if previous else 0)
        pipe = client.pipeline(transaction=True)
        pipe.delete(keys.origin(prefix))
        pipe.hset(keys.origin(prefix), items=origin_fields(origin, epoch, offsets))
        pipe.execute()
        if isinstance(client, RedisCluster):
            SlotMarks(client, prefix).write(epoch)
    finally:
        consumer.close()
    result = Recovered(
        mode="from-earliest" if from_earliest else "from-committed",
        epoch=epoch,
        previous_epoch=previous.epoch if previous else 0,
        offsets=offsets,
        users_dropped=users,
        keys_dropped=dropped,
        erasures_kept=sum(1 for _ in _erasure_keys(client, prefix)),
    )
    logger.info("recovered: %s", result.as_dict())
    return result


def _require_idle_group(admin: AdminClient, group: str) -> None:
    try:
        description = admin.describe_consumer_groups([group])[group].result(timeout=TIMEOUT_S)
    except KafkaException as exc:
        msg = f"the broker did not describe group {group}: {exc.args[0].str()}"
        raise BrokerUnavailableError(msg) from exc
    if description.state not in _IDLE_GROUP:
        msg = (
            f"group {group} is {description.state.name.lower()}: stop every instance of it"
            " (a stopped service leaves the group within its session timeout), then run"
            " recover again"
        )
        raise GroupActiveError(msg)


def _partition_count(admin: AdminClient, topic: str) -> int:
    metadata = admin.list_topics(topic, timeout=TIMEOUT_S).topics.get(topic)
    if metadata is None or metadata.error is not None or not metadata.partitions:
        msg = f"topic {topic} does not exist (SEGSTREAM_TOPICS__EVENTS)"
        raise SegstreamError(msg)
    return len(metadata.partitions)


def _starts(consumer: Consumer, origin: Origin) -> dict[int, int]:
    """The first offset each partition still holds (older records are gone by retention)."""
    return {
        p: consumer.get_watermark_offsets(TopicPartition(origin.topic, p), TIMEOUT_S)[0]
        for p in origin.assigned
    }


def _commit(consumer: Consumer, topic: str, offsets: dict[int, int]) -> None:
    """Move the group's offsets; the broker refuses it while the group has members."""
    positions = [TopicPartition(topic, p, o) for p, o in sorted(offsets.items())]
    try:
        consumer.commit(offsets=positions, asynchronous=False)
    except KafkaException as exc:
        msg = f"could not move the group's offsets to the start: {exc.args[0].str()}"
        raise GroupActiveError(msg) from exc


def _drop_derived(client: resp.Client, prefix: str) -> tuple[int, int]:
    """Delete users' states and every derived key of the prefix; return (users, keys)."""
    users = dropped = 0
    batch: list[bytes] = []
    for key in _derived_keys(client, prefix):
        users += keys.user_of(prefix, key.decode()) is not None
        batch.append(key)
        if len(batch) >= 500:
            dropped += client.unlink(*batch)
            batch.clear()
    if batch:
        dropped += client.unlink(*batch)
    return users, dropped


def _derived_keys(client: resp.Client, prefix: str) -> Iterator[bytes]:
    for key in client.scan_iter(match=keys.state_pattern(prefix), count=1000):
        if keys.user_of(prefix, key.decode()) is not None:
            yield key
    for kind in ("timers", "outbox"):
        for key in client.scan_iter(match=f"{prefix}:{kind}:*", count=1000):
            if key.decode().rpartition(":")[2].isdigit():
                yield key
    if client.exists(keys.watermarks(prefix)):
        yield keys.watermarks(prefix).encode()
    # One hash on a plain Redis, one per hash slot on a cluster (features.tallies).
    yield from client.scan_iter(match=keys.tallies(prefix) + "*", count=1000)


def _erasure_keys(client: resp.Client, prefix: str) -> Iterator[bytes]:
    for key in client.scan_iter(match=keys.state_pattern(prefix), count=1000):
        if key.endswith(b":erased"):
            yield key
