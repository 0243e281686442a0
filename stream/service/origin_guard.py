"""Where the stored state comes from, checked so that a lost Redis or a new topic stops the service.

Redis keeps an origin record next to the users' states (`features.keys.origin`): an epoch, the
events topic with its id and partition count, and per partition the offset the group was about
to commit, raised before every commit. Kafka keeps the committed offsets. The two must agree:
- Redis holds no origin but the group has committed offsets: Redis restarted empty, was flushed,
  or failed over to an empty replica. Going on would lose the users' history and reuse change ids.
- Redis' offsets are behind Kafka's: Redis came back from an older backup.
- The topic id or the partition count changed, or a partition ends before an offset we applied:
  the topic was recreated. Its offsets start again at 0, and the stored fences would drop new
  events as duplicates.
Each of these raises `StateLostError`. The loop stops consuming, and readiness fails;
`segstream recover` is the way forward. The epoch is part of every change id, so ids stay unique
after a recovery that starts the users' sequences again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

import redis
from redis.cluster import RedisCluster

from features import keys, resp
from features.store import redis_address
from stream.errors import StateLostError
from stream.kafka.handler import Origin
from stream.service.redis_calls import redis_call
from stream.service.slot_marks import SlotMarks

logger = logging.getLogger(__name__)

# KEYS: origin. ARGV: fields and values. Creates the record unless one exists; returns the epoch.
_CREATE: Final = """
if redis.call('HEXISTS', KEYS[1], 'epoch') == 0 then redis.call('HSET', KEYS[1], unpack(ARGV)) end
return redis.call('HGET', KEYS[1], 'epoch')
"""
# KEYS: origin. ARGV: epoch, then partition, next offset, ... Raises each `next:<p>` to at least
# the offset, only under the same epoch (a record that is gone is not created again); returns
# 1, or 0 when the epoch differs.
_RAISE: Final = """
if redis.call('HGET', KEYS[1], 'epoch') ~= ARGV[1] then return 0 end
for i = 2, #ARGV, 2 do
  local field = 'next:' .. ARGV[i]
  if tonumber(ARGV[i + 1]) > (tonumber(redis.call('HGET', KEYS[1], field)) or -1) then
    redis.call('HSET', KEYS[1], field, ARGV[i + 1])
  end
end
return 1
"""
RECOVER_HINT: Final = (
    "stop every instance of the group, then run `segstream recover --from-earliest` to rebuild"
    " the state from the topic under a new epoch (or `segstream recover --from-committed` to go"
    " on from the committed offsets, accepting what was lost); see README, Failure behaviour"
)


@dataclass
class Stored:
    """The origin record as Redis holds it."""

    epoch: int
    topic: str
    topic_id: str
    partitions: int
    next: dict[int, int]

    @classmethod
    def parse(cls, raw: dict[Any, Any]) -> Stored | None:
        fields = {resp.text(k): resp.text(v) for k, v in raw.items()}
        if "epoch" not in fields:
            return None
        offsets = {
            int(name[5:]): int(value) for name, value in fields.items() if name.startswith("next:")
        }
        return cls(
            int(fields["epoch"]),
            fields.get("topic", ""),
            fields.get("topic_id", ""),
            int(fields.get("partitions", 0)),
            offsets,
        )


def new_epoch(previous: int = 0) -> int:
    """Seconds since 1970 at the start of an epoch: unique even when the previous one was lost
    with Redis (a recovery happens after it)."""
    return max(int(time.time()), previous + 1)


def origin_fields(origin: Origin, epoch: int, offsets: dict[int, int]) -> list[Any]:
    fields: list[Any] = ["epoch", epoch, "topic", origin.topic, "topic_id", origin.topic_id]
    fields += ["partitions", origin.partitions]
    for partition, offset in sorted(offsets.items()):
        fields += [f"next:{partition}", offset]
    return fields


class OriginGuard:
    """Checks the origin at assignment, after every batch, and records offsets before commits."""

    def __init__(self, client: resp.Client, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix
        self._key = keys.origin(prefix)
        self._create = client.register_script(_CREATE)
        self._raise = client.register_script(_RAISE)
        self._marks = SlotMarks(client, prefix) if isinstance(client, RedisCluster) else None
        self.epoch = 0  # 0 until the first check
        self._known: dict[int, int] = {}  # next offset per partition as we last saw or set it

    def check(self, origin: Origin) -> int:
        """Compare the origin with Redis' record; create it on a fresh start. Returns the epoch."""
        stored = Stored.parse(self._call(self._redis.hgetall, self._key))
        if stored is None:
            stored = self._start(origin)
        else:
            self._check_marks(stored.epoch, every_slot=True)
        _compare(stored, origin)
        self.epoch = stored.epoch
        for partition in origin.assigned:
            self._known[partition] = stored.next.get(partition, -1)
        return stored.epoch

    def verify(self, partitions: Iterable[int]) -> None:
        """After a batch's writes: Redis must still hold our epoch and offsets no older than we
        know, else it lost state while we ran (the batch's changes must not go out)."""
        if not self.epoch:
            return
        stored = Stored.parse(self._call(self._redis.hgetall, self._key))
        if stored is None or stored.epoch != self.epoch:
            msg = (
                f"Redis at {redis_address(self._redis)} lost segstream's state while the"
                " service ran"
                f" (origin record {self._key} {'gone' if stored is None else 'replaced'});"
                f" {RECOVER_HINT}"
            )
            raise StateLostError(msg, "lost")
        self._check_marks(self.epoch, every_slot=False)
        for partition in set(partitions):
            known = self._known.get(partition, -1)
            if stored.next.get(partition, -1) < known:
                msg = (
                    f"Redis at {redis_address(self._redis)} went back in time while the"
                    " service ran:"
                    f" partition {partition} was recorded at offset {known}, Redis now says"
                    f" {stored.next.get(partition)} (restored from an older snapshot?);"
                    f" {RECOVER_HINT}"
                )
                raise StateLostError(msg, "lost")

    def record(self, next_offsets: dict[int, int]) -> None:
        """Raise the recorded offsets before they are committed to Kafka."""
        if not self.epoch or not next_offsets:
            return
        args: list[Any] = [self.epoch]
        for partition, offset in sorted(next_offsets.items()):
            args += [partition, offset]
        if not self._call(self._raise, keys=[self._key], args=args):
            msg = (
                f"Redis at {redis_address(self._redis)} no longer holds epoch {self.epoch} in"
                f" {self._key}: it lost segstream's state; offsets are not committed;"
                f" {RECOVER_HINT}"
            )
            raise StateLostError(msg, "lost")
        for partition, offset in next_offsets.items():
            self._known[partition] = max(offset, self._known.get(partition, -1))

    def forget(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            self._known.pop(partition, None)

    def _start(self, origin: Origin) -> Stored:
        """No record: a fresh start when the group has committed nothing, else the state is
        lost (state kept from before origin records existed is taken over with `recover
        --from-committed`: nothing tells it apart from a flush followed by a few writes)."""
        if origin.committed:
            raise StateLostError(_lost_message(self._redis, origin), "lost")
        fresh = new_epoch()
        fields = origin_fields(origin, fresh, {})
        # The slots are marked before the record exists: a crash in between leaves no record,
        # and the next start begins again. An instance that lost the race marks the winner's.
        self._mark(fresh)
        epoch = int(self._call(self._create, keys=[self._key], args=fields))
        if epoch != fresh:
            self._mark(epoch)
        logger.info("new state for %s under epoch %d", origin.topic, epoch)
        stored = Stored.parse(self._call(self._redis.hgetall, self._key))
        return stored or Stored(epoch, origin.topic, origin.topic_id, origin.partitions, {})

    def _mark(self, epoch: int) -> None:
        if self._marks is not None:
            self._call(self._marks.write, epoch)

    def _check_marks(self, epoch: int, *, every_slot: bool) -> None:
        """On a Redis Cluster: a primary that restarted empty lost its slots' epoch marks."""
        if self._marks is None:
            return
        unmarked = self._call(self._marks.unmarked, epoch, every_slot=every_slot)
        if unmarked:
            msg = (
                f"a primary of the Redis Cluster at {redis_address(self._redis)} lost its data:"
                f" {len(unmarked)} {'slots' if every_slot else 'nodes'} hold no mark of epoch"
                f" {epoch} (first: {', '.join(unmarked[:3])}); {RECOVER_HINT}"
            )
            raise StateLostError(msg, "lost")

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        with redis_call("origin"):
            return fn(*args, **kwargs)


def _compare(stored: Stored, origin: Origin) -> None:
    """Raise when the stored state was built from another topic or is behind the group."""
    if stored.topic != origin.topic:
        msg = (
            f"the key prefix holds the state of topic {stored.topic!r}, not {origin.topic!r}:"
            " give each events topic its own SEGSTREAM_KEY_PREFIX"
        )
        raise StateLostError(msg, "topic")
    changed = _topic_change(stored, origin)
    if changed:
        msg = (
            f"the events topic {origin.topic} is not the one the state was built from:"
            f" {changed}; {RECOVER_HINT}"
        )
        raise StateLostError(msg, "topic")
    for partition in origin.assigned:
        committed = origin.committed.get(partition)
        recorded = stored.next.get(partition, -1)
        if committed is not None and recorded < committed:
            msg = (
                f"Redis is behind Kafka on {origin.topic}[{partition}]: the group committed"
                f" offset {committed}, Redis recorded {recorded if recorded >= 0 else 'none'}"
                f" (Redis restored from an older backup, or offsets moved by hand); {RECOVER_HINT}"
            )
            raise StateLostError(msg, "lost")


def _topic_change(stored: Stored, origin: Origin) -> str:
    if stored.topic_id and origin.topic_id and stored.topic_id != origin.topic_id:
        return f"its id changed from {stored.topic_id} to {origin.topic_id} (deleted and recreated)"
    if stored.partitions and stored.partitions != origin.partitions:
        return f"it has {origin.partitions} partitions, the state was built on {stored.partitions}"
    for partition in origin.assigned:
        end = origin.ends.get(partition)
        recorded = stored.next.get(partition, -1)
        if end is not None and end < recorded:
            return (
                f"partition {partition} ends at offset {end}, before offset {recorded} that was"
                " already applied (recreated or truncated)"
            )
    return ""


def _lost_message(client: resp.Client, origin: Origin) -> str:
    behind = ", ".join(f"[{p}] at {o}" for p, o in sorted(origin.committed.items()))
    return (
        f"Redis at {redis_address(client)} holds no segstream state, but the group has"
        f" committed offsets on {origin.topic} ({behind}): Redis restarted without"
        " persistence, was flushed, or failed over to an empty replica; going on would lose"
        f" every user's history; {RECOVER_HINT}"
    )


def persistence_warning(client: resp.Client) -> str:
    """A warning when Redis keeps nothing on disk (a restart then loses every user's state),
    or "" when it persists or does not let us ask (managed Redis often hides CONFIG)."""
    try:
        config = client.config_get("appendonly") | client.config_get("save")
    except redis.RedisError:
        return ""
    appendonly = str(config.get("appendonly", "no"))
    save = str(config.get("save", ""))
    if appendonly == "yes" or save.strip():
        return ""
    return (
        f'Redis at {redis_address(client)} keeps nothing on disk (appendonly no, save ""):'
        " a restart loses every user's state, and the service will stop until `segstream"
        " recover`; turn on AOF (appendonly yes) or RDB snapshots (save)"
    )
