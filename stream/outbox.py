"""Segment changes kept in Redis until the offsets of the batch that decided them are committed.

A change is added to its partition's outbox before the user's state (which already says the
new segment) is written, so a crash between the Redis write and the publish cannot lose it:
the next owner of the partition publishes again whatever the outbox holds at or after the
committed offset, with the same `change_id`. Entries below a committed offset are dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import redis

from features import keys
from stream.errors import TransientError

logger = logging.getLogger(__name__)


class Outbox:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix

    def add(self, entries: Iterable[tuple[int, int, bytes]]) -> None:
        """(partition, offset, change JSON) per change, in one round trip."""
        by_partition: dict[int, dict[bytes, int]] = {}
        for partition, offset, value in entries:
            by_partition.setdefault(partition, {})[value] = offset
        if not by_partition:
            return
        pipe = self._redis.pipeline(transaction=False)
        for partition, mapping in by_partition.items():
            pipe.zadd(keys.outbox(self._prefix, partition), mapping)
        self._execute(pipe)

    def remove(self, entries: Iterable[tuple[int, bytes]]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        count = 0
        for partition, value in entries:
            pipe.zrem(keys.outbox(self._prefix, partition), value)
            count += 1
        if count:
            self._execute(pipe)

    def unpublished(self, first_offsets: Mapping[int, int]) -> list[tuple[int, bytes]]:
        """Changes decided at or after each partition's first offset read since it was
        assigned (that offset was the committed one); older entries are dropped."""
        partitions = list(first_offsets)
        pipe = self._redis.pipeline(transaction=False)
        for partition in partitions:
            key = keys.outbox(self._prefix, partition)
            pipe.zremrangebyscore(key, "-inf", f"({first_offsets[partition]}")
            pipe.zrangebyscore(key, first_offsets[partition], "+inf")
        replies = self._execute(pipe)
        return [
            (partition, value)
            for partition, values in zip(partitions, replies[1::2], strict=True)
            for value in values
        ]

    def committed(self, next_offsets: Mapping[int, int]) -> None:
        """Drop what the committed offsets cover; a failure only delays the cleanup."""
        pipe = self._redis.pipeline(transaction=False)
        for partition, offset in next_offsets.items():
            pipe.zremrangebyscore(keys.outbox(self._prefix, partition), "-inf", f"({offset}")
        try:
            self._execute(pipe)
        except TransientError as exc:
            logger.warning("outbox cleanup postponed: %s", exc)

    def _execute(self, pipe: redis.client.Pipeline) -> list[Any]:
        try:
            return pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as exc:
            msg = f"redis unavailable for the outbox: {exc}"
            raise TransientError(msg) from exc
