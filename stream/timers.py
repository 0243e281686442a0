"""Event-time timers, one sorted set per input partition, owned with the partition.

A user is due when their partition's event-time watermark passes the time the segment policy
asked for (a recency threshold, a label horizon, a pending confirmation), so a replay of history
at full speed fires the same timers as live traffic did.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import redis

from features import keys
from stream.errors import TransientError

MAX_DUE_PER_BATCH = 5_000


class Timers:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix

    def due(self, watermarks: Mapping[int, int]) -> dict[str, int]:
        """Users due at these watermarks (user -> partition), at most MAX_DUE_PER_BATCH per
        partition per batch so a burst of timers cannot stall the loop."""
        partitions = list(watermarks)
        pipe = self._redis.pipeline(transaction=False)
        for partition in partitions:
            pipe.zrangebyscore(
                keys.timers(self._prefix, partition),
                "-inf",
                watermarks[partition],
                start=0,
                num=MAX_DUE_PER_BATCH,
            )
        replies = self._execute(pipe)
        return {
            user.decode(): partition
            for partition, users in zip(partitions, replies, strict=True)
            for user in users
        }

    def schedule(self, due: Iterable[tuple[int, str, int]]) -> None:
        """(partition, user, event time) per user; an event time of 0 removes the timer."""
        pipe = self._redis.pipeline(transaction=False)
        adds: dict[int, dict[str, int]] = {}
        removals: dict[int, list[str]] = {}
        for partition, user, when in due:
            if when:
                adds.setdefault(partition, {})[user] = when
            else:
                removals.setdefault(partition, []).append(user)
        for partition, mapping in adds.items():
            pipe.zadd(keys.timers(self._prefix, partition), mapping)
        for partition, users in removals.items():
            pipe.zrem(keys.timers(self._prefix, partition), *users)
        if adds or removals:
            self._execute(pipe)

    def _execute(self, pipe: redis.client.Pipeline) -> list[list[bytes]]:
        try:
            return pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as exc:
            msg = f"redis unavailable for timers: {exc}"
            raise TransientError(msg) from exc
