"""On a Redis Cluster, the origin's epoch in every hash slot: a primary that lost its data shows.

The origin record (`origin_guard`) lives in one slot, on one primary. A primary that restarts
empty (no persistence, no replica to fail over to) keeps its slots and loses their keys: users
would silently start again from nothing while the origin record, elsewhere, looks fine. So every
slot holds the epoch too (`keys.slot_epoch`, 16,384 small strings, written in one round trip per
node when an epoch starts). At assignment every slot is checked; after every batch one slot of
each primary is (a primary that lost its data lost every slot's mark).
"""

from __future__ import annotations

from redis.cluster import RedisCluster

from features import keys, resp
from features.cluster import ClusterPipe, Command, slot_tags


class SlotMarks:
    def __init__(self, client: RedisCluster, prefix: str) -> None:
        self._pipe = ClusterPipe(client)
        self._prefix = prefix

    def write(self, epoch: int) -> None:
        """Mark every slot with the epoch (a new epoch, or `segstream recover`)."""
        value = b"%d" % epoch
        self._run([(key, resp.command(b"SET", key, value)) for key in self._keys(slot_tags())])

    def unmarked(self, epoch: int, *, every_slot: bool) -> list[str]:
        """Primaries with a slot not marked with `epoch`: every slot, or one of each primary."""
        tags = slot_tags()
        if every_slot:
            slots = {f"slot {slot}": slot for slot in range(len(tags))}
        else:
            slots = {f"node {node}": slot for node, slot in self._pipe.node_slots().items()}
        names = self._keys([tags[slot] for slot in slots.values()])
        found = self._run([(key, resp.command(b"GET", key)) for key in names])
        want = b"%d" % epoch
        return [where for where, value in zip(slots, found, strict=True) if value != want]

    def _keys(self, tags: list[str] | tuple[str, ...]) -> list[bytes]:
        return [keys.slot_epoch(self._prefix, tag).encode() for tag in tags]

    def _run(self, commands: list[Command]) -> list[object]:
        return resp.checked(self._pipe.execute(commands))
