"""Pipelined Redis calls packed outside redis-py: the feature store's hot path.

redis-py packs each command in Python (about 30 µs for a script call with a 1 kB argument,
measured here). Commands are packed by hiredis (`command`), except the one sent for every user,
the compare-and-set, whose constant head is packed once and the rest formatted in one go
(`evalsha_prefix`): 1.7 µs against hiredis's 2.9 µs for a 900-byte state, measured here.
Replies are read with the hiredis parser. Each command travels with the key it is routed by, so
the same commands go to a plain Redis over one connection or to a Redis Cluster node by node
(`features.cluster`): `pipe_for(client)` gives the sender.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from itertools import islice
from typing import Any, Protocol, TypeAlias

import hiredis
import redis
from redis.cluster import RedisCluster

from features.cluster import ClusterPipe, Command

# A client of either kind; the service's modules take either.
Client: TypeAlias = redis.Redis | RedisCluster


def bulk(data: bytes) -> bytes:
    return b"$%d\r\n%b\r\n" % (len(data), data)


def command(*parts: bytes) -> bytes:
    # hiredis's stub types the argument as a 1-tuple; any tuple of parts is packed.
    packed: bytes = hiredis.pack_command(parts)  # type: ignore[arg-type]
    return packed


def evalsha_prefix(sha: str, nkeys: int, nargs: int) -> bytes:
    """The constant head of an EVALSHA call; append `nkeys + nargs` bulk strings to it."""
    head = b"*%d\r\n" % (3 + nkeys + nargs)
    return head + bulk(b"EVALSHA") + bulk(sha.encode()) + bulk(b"%d" % nkeys)


def execute(
    client: redis.Redis, chunks: Iterable[bytes], replies: int | Callable[[], int]
) -> list[Any]:
    """Send pipelined commands chunk by chunk and read `replies` replies (a callable is asked
    once everything is sent, for commands generated on the way).

    Each chunk is sent as soon as it is packed, so Redis runs the first calls while the next
    chunk is being built. An error reply is returned in place as its `ResponseError`, so one
    refused call does not hide the others.
    """
    pool = client.connection_pool
    connection = pool.get_connection()
    try:
        for chunk in chunks:
            connection.send_packed_command([chunk], check_health=False)  # type: ignore[no-untyped-call]
        results: list[Any] = []
        for _ in range(replies if isinstance(replies, int) else replies()):
            try:
                results.append(connection.read_response())
            except redis.ResponseError as exc:
                results.append(exc)
        return results
    except BaseException:
        connection.disconnect()  # type: ignore[no-untyped-call]
        raise
    finally:
        pool.release(connection)


class Sender(Protocol):
    redirects: int  # commands sent again where a Redis Cluster pointed, all time
    trips: int  # pipelined round trips to a server (a cluster: to each node), all time

    def execute(self, commands: Iterable[Command]) -> list[Any]:
        """Send the commands pipelined; one reply per command, in order (an error reply in
        place as its `ResponseError`)."""
        ...


class Pipe:
    """Packed commands to a plain Redis: one connection, sent chunk by chunk as they come."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self.redirects = 0  # a plain Redis never redirects
        self.trips = 0

    def execute(self, commands: Iterable[Command]) -> list[Any]:
        count = 0
        self.trips += 1

        def packed() -> Iterator[bytes]:
            nonlocal count
            for _, command in commands:
                count += 1
                yield command

        return execute(self._client, chunked(packed()), lambda: count)


def connect(url: str, *, cluster: bool, timeout_s: float) -> Client:
    """A client of a plain Redis or, with `cluster`, of the Redis Cluster one node of which is
    at `url` (it learns the others from that node)."""
    factory = RedisCluster if cluster else redis.Redis
    return factory.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)


def pipe_for(client: Client) -> Sender:
    """The sender of packed commands for this client: over one connection, or node by node."""
    if isinstance(client, RedisCluster):
        return ClusterPipe(client)
    return Pipe(client)


def text(value: bytes | str) -> str:
    """A reply's bytes as text."""
    return value.decode() if isinstance(value, bytes) else value


def checked(replies: list[Any]) -> list[Any]:
    """The replies, unless one is an error: then that error is raised (the first)."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


def hash_items(reply: dict[Any, Any] | list[Any]) -> Iterable[tuple[Any, Any]]:
    """The field-value pairs of an HGETALL reply (a map, or a flat list from older servers)."""
    if isinstance(reply, dict):
        return reply.items()
    return zip(reply[::2], reply[1::2], strict=True)


def chunked(parts: Iterable[bytes], size: int = 200) -> Iterator[bytes]:
    """Join packed commands into chunks of `size` commands, lazily."""
    iterator = iter(parts)
    while chunk := b"".join(islice(iterator, size)):
        yield chunk
