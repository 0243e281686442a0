"""Packed commands over Redis Cluster: grouped by node, one pipelined round trip per node.

Each command comes with the key it is routed by (every command of ours touches one hash slot).
Commands are sent to their slot's primary as they come, a chunk at a time, so the nodes run the
first calls while later ones are being built; replies are then read node by node and put back in
the order asked. A reply that says the command was not run there (MOVED and ASK while slots
move, TRYAGAIN while a multi-key command's keys are split by a migration) has the command sent
again where the cluster points, after refreshing the slot map. Those replies come before
anything runs, so no command runs twice.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Final

import redis
from redis.cluster import RedisCluster
from redis.connection import Connection
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

# A command to send: the key it is routed by, and the command packed (`features.resp`).
Command = tuple[bytes, bytes]

MAX_REDIRECT_ROUNDS: Final = 16
TRY_AGAIN_PAUSE_S: Final = 0.02  # a migrating slot's keys move a few per MIGRATE call
CHUNK: Final = 200  # commands per send to one node
_ASKING: Final = b"*1\r\n$6\r\nASKING\r\n"
_REDIRECTS: Final = (redis.exceptions.AskError, redis.exceptions.TryAgainError)


@cache
def slot_tags() -> tuple[str, ...]:
    """Per hash slot, a short string whose key slot is that slot: `{<tag>}` in a key puts it
    in the slot, so a counter can live beside the users of one slot (computed once, ~0.1 s)."""
    tags: list[str | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
    missing = REDIS_CLUSTER_HASH_SLOTS
    candidate = 0
    while missing:
        tag = format(candidate, "x")
        slot = key_slot(tag.encode())
        if tags[slot] is None:
            tags[slot] = tag
            missing -= 1
        candidate += 1
    return tuple(t for t in tags if t is not None)


def slot_tag(key: bytes) -> str:
    """The slot tag of the slot `key` lies in."""
    return slot_tags()[key_slot(key)]


@dataclass
class _Node:
    """Commands of one round sent to one node: where their replies go, and what is not sent."""

    connection: Connection
    indexes: list[int] = field(default_factory=list)
    asking: list[bool] = field(default_factory=list)
    buffer: list[bytes] = field(default_factory=list)

    def add(self, index: int, packed: bytes, *, asking: bool) -> None:
        self.indexes.append(index)
        self.asking.append(asking)
        self.buffer.append(_ASKING + packed if asking else packed)
        if len(self.buffer) >= CHUNK:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            self.connection.send_packed_command([b"".join(self.buffer)], check_health=False)  # type: ignore[no-untyped-call]
            self.buffer = []

    def read(self, replies: list[Any]) -> None:
        for index, asking in zip(self.indexes, self.asking, strict=True):
            if asking:
                self.connection.read_response()  # ASKING's OK
            try:
                replies[index] = self.connection.read_response()
            except redis.ResponseError as exc:
                replies[index] = exc


# A command of a round: its place in the replies, the node to send it to, whether it follows
# an ASK redirection (it then goes after ASKING, which opens the migrating slot for one command).
_Routed = tuple[int, bytes, str, bool]


class ClusterPipe:
    """Sends packed commands to a Redis Cluster's primaries; see the module docstring."""

    def __init__(self, client: RedisCluster) -> None:
        self._client = client
        self._owners: list[str] = []
        self.redirects = 0  # commands sent again elsewhere (MOVED, ASK, TRYAGAIN), all time
        self.trips = 0  # pipelined round trips to a node, all time

    def execute(self, commands: Iterable[Command]) -> list[Any]:
        """Send `commands`, return one reply per command, in order (an error reply in place as
        its `ResponseError`)."""
        if not self._owners:
            self._refresh()
        sent: list[Command] = []
        replies: list[Any] = []
        self._round(self._first(commands, sent), replies)
        for _ in range(MAX_REDIRECT_ROUNDS):
            again = [i for i, r in enumerate(replies) if isinstance(r, _REDIRECTS)]
            if not again:
                return replies
            self.redirects += len(again)
            if any(isinstance(replies[i], redis.exceptions.TryAgainError) for i in again):
                time.sleep(TRY_AGAIN_PAUSE_S)
            self._refresh()
            self._round([self._again(i, sent[i], replies[i]) for i in again], replies)
        last = replies[again[0]]
        msg = f"Redis Cluster still redirects after {MAX_REDIRECT_ROUNDS} rounds: {last}"
        raise redis.exceptions.ClusterDownError(msg)

    def _first(self, commands: Iterable[Command], sent: list[Command]) -> Iterator[_Routed]:
        owners = self._owners
        for index, command in enumerate(commands):
            sent.append(command)
            yield index, command[1], owners[key_slot(command[0])], False

    def _again(self, index: int, command: Command, reply: Exception) -> _Routed:
        """Where a redirected command goes now: an ASK names the node for this command only;
        after MOVED or TRYAGAIN the refreshed slot map says."""
        if isinstance(reply, redis.exceptions.AskError) and not isinstance(
            reply, redis.exceptions.MovedError
        ):
            return index, command[1], f"{reply.host}:{reply.port}", True
        return index, command[1], self._owners[key_slot(command[0])], False

    def _round(self, routed: Iterable[_Routed], replies: list[Any]) -> None:
        """Send the commands node by node as they come, then read every node's replies into
        their places (`replies` grows to fit)."""
        nodes: dict[str, _Node] = {}
        try:
            for index, packed, name, asking in routed:
                node = nodes.get(name) or nodes.setdefault(name, _Node(self._connect(name)))
                node.add(index, packed, asking=asking)
            for node in nodes.values():
                node.flush()
            self.trips += len(nodes)
            size = max((max(n.indexes) for n in nodes.values()), default=-1) + 1
            replies.extend([None] * (size - len(replies)))
            for node in nodes.values():
                node.read(replies)
        except BaseException:
            for node in nodes.values():
                node.connection.disconnect()  # type: ignore[no-untyped-call]
            self._owners = []  # a node may be gone: the next call reads the slot map again
            raise
        finally:
            for name, node in nodes.items():
                self._pool(name).release(node.connection)

    def _connect(self, name: str) -> Connection:
        connection: Connection = self._pool(name).get_connection()
        return connection

    def _pool(self, name: str) -> redis.ConnectionPool:
        node = self._client.nodes_manager.get_node(node_name=name) if name else None
        if node is None or node.redis_connection is None:
            msg = f"no Redis Cluster node serves this slot ({name or 'none in the slot map'})"
            raise redis.exceptions.ClusterDownError(msg)
        pool: redis.ConnectionPool = node.redis_connection.connection_pool
        return pool

    def node_slots(self) -> dict[str, int]:
        """One hash slot of each primary (the first it serves), by node name."""
        if not self._owners:
            self._refresh()
        found: dict[str, int] = {}
        for slot, name in enumerate(self._owners):
            found.setdefault(name, slot)
        found.pop("", None)
        return found

    def _refresh(self) -> None:
        """Read the slot map again (after a redirection: slots moved)."""
        manager = self._client.nodes_manager
        manager.initialize()
        # A slot no node serves (the cluster is not whole) is named as such when used.
        cache = manager.slots_cache
        self._owners = [
            cache[slot][0].name if cache.get(slot) else ""
            for slot in range(REDIS_CLUSTER_HASH_SLOTS)
        ]
