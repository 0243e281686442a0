"""Event-time timers, one sorted set per input partition, owned with the partition.

A user is due when their partition's event-time watermark passes the time the segment policy
asked for (a recency threshold, a label horizon, a pending confirmation), so a replay of history
at full speed fires the same timers as live traffic did. Only the owner of a partition writes its
timers, so it knows the earliest one and asks Redis only when the watermark has reached it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import redis

from features import keys, resp
from features.cluster import Command
from stream.service.redis_calls import redis_call

MAX_DUE_PER_BATCH = 5_000


class Timers:
    def __init__(self, client: resp.Client, prefix: str) -> None:
        self._redis = client
        self._pipe = resp.pipe_for(client)
        self._prefix = prefix
        # Earliest timer per owned partition (unknown until first asked).
        self._earliest: dict[int, float] = {}

    def due(self, watermarks: Mapping[int, int]) -> dict[str, int]:
        """Users due at these watermarks (user -> partition), at most MAX_DUE_PER_BATCH per
        partition per batch so a burst of timers cannot stall the loop."""
        asked = [p for p, mark in watermarks.items() if self._earliest.get(p, -math.inf) <= mark]
        if not asked:
            return {}
        pipe = self._redis.pipeline(transaction=False)
        for partition in asked:
            key = keys.timers(self._prefix, partition)
            mark = watermarks[partition]
            pipe.zrangebyscore(key, "-inf", mark, start=0, num=MAX_DUE_PER_BATCH)
            pipe.zrangebyscore(key, f"({mark}", "+inf", start=0, num=1, withscores=True)
        replies = self._execute(pipe)
        found: dict[str, int] = {}
        for partition, users, after in zip(asked, replies[::2], replies[1::2], strict=True):
            found.update((user.decode(), partition) for user in users)
            # Those due now are rescheduled once scored; until then the next one bounds it.
            truncated = len(users) == MAX_DUE_PER_BATCH
            self._earliest[partition] = -math.inf if truncated else _first_score(after)
        return found

    def schedule_commands(self, due: Iterable[tuple[int, str, int]]) -> list[Command]:
        """Packed commands setting (partition, user, event time) timers; 0 removes one."""
        adds: dict[int, list[bytes]] = {}
        removals: dict[int, list[bytes]] = {}
        for partition, user, when in due:
            if when:
                adds.setdefault(partition, []).extend((b"%d" % when, user.encode()))
                if when < self._earliest.get(partition, math.inf):
                    self._earliest[partition] = when
            else:
                removals.setdefault(partition, []).append(user.encode())
        commands = [self._command(b"ZADD", p, args) for p, args in adds.items()]
        commands += [self._command(b"ZREM", p, users) for p, users in removals.items()]
        return commands

    def schedule(self, due: Iterable[tuple[int, str, int]]) -> None:
        commands = self.schedule_commands(due)
        if commands:
            with redis_call("timers"):
                self._pipe.execute(commands)

    def forget(self, partitions: Sequence[int]) -> None:
        """A partition changed owner: what we knew of its timers may be stale."""
        for partition in partitions:
            self._earliest.pop(partition, None)

    def _command(self, name: bytes, partition: int, args: list[bytes]) -> Command:
        key = keys.timers(self._prefix, partition).encode()
        return key, resp.command(name, key, *args)

    def _execute(self, pipe: redis.client.Pipeline) -> list[Any]:
        with redis_call("timers"):
            return pipe.execute()


def _first_score(found: list[tuple[bytes, float]]) -> float:
    return found[0][1] if found else math.inf
