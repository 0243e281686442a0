"""Segment changes kept in Redis until the offsets of the batch that decided them are committed.

A batch's changes are added to their partition's outbox (one entry per partition: the changes'
JSON, one per line) before the users' states (which already say the new segments) are written,
so a crash between the Redis write and the publish cannot lose them: the next owner of the
partition publishes again whatever the outbox holds at or after the committed offset, with the
same `change_id`s. Entries below a committed offset are dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import redis

from features import keys, resp
from features.cluster import Command
from stream.errors import TransientError
from stream.service.redis_calls import redis_call

logger = logging.getLogger(__name__)


class Outbox:
    def __init__(self, client: resp.Client, prefix: str) -> None:
        self._redis = client
        self._pipe = resp.pipe_for(client)
        self._prefix = prefix

    def add_commands(
        self, entries: Mapping[int, tuple[int, list[bytes]]]
    ) -> tuple[list[Command], list[tuple[int, bytes]]]:
        """Packed commands that add the entries, to send ahead of the state writes in their
        round trip, and the entries they write."""
        written = [(p, b"\n".join(values)) for p, (_, values) in entries.items() if values]
        commands = [self._command(b"ZADD", p, b"%d" % entries[p][0], blob) for p, blob in written]
        return commands, written

    def remove_commands(self, written: Iterable[tuple[int, bytes]]) -> list[Command]:
        return [self._command(b"ZREM", p, blob) for p, blob in written]

    def execute(self, commands: list[Command]) -> None:
        """Run packed outbox commands now, in order (one round trip per node)."""
        with redis_call("outbox"):
            resp.checked(self._pipe.execute(commands))

    def remove(self, written: Iterable[tuple[int, bytes]]) -> None:
        """Drop entries whose changes were delivered; a failure only delays the cleanup (they
        are published again, with the same ids, after a crash)."""
        pipe = self._redis.pipeline(transaction=False)
        for partition, blob in written:
            pipe.zrem(keys.outbox(self._prefix, partition), blob)
        try:
            self._execute(pipe)
        except TransientError as exc:
            logger.warning("outbox cleanup postponed: %s", exc)

    def _command(self, name: bytes, partition: int, *args: bytes) -> Command:
        key = keys.outbox(self._prefix, partition).encode()
        return key, resp.command(name, key, *args)

    def unpublished(
        self, first_offsets: Mapping[int, int], *, trim: bool
    ) -> list[tuple[int, bytes]]:
        """Entries (partition, changes one per line) decided at or after each partition's
        offset; with `trim`, older entries are dropped (the offset is the committed one, read
        first after an assignment)."""
        if not first_offsets:
            return []
        pipe = self._redis.pipeline(transaction=False)
        for partition, offset in first_offsets.items():
            key = keys.outbox(self._prefix, partition)
            if trim:
                pipe.zremrangebyscore(key, "-inf", f"({offset}")
            pipe.zrangebyscore(key, offset, "+inf")
        replies = self._execute(pipe)
        found = replies[1::2] if trim else replies
        return [(p, blob) for p, blobs in zip(first_offsets, found, strict=True) for blob in blobs]

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
        with redis_call("outbox"):
            return pipe.execute()
