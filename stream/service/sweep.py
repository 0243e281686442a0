"""Every user of the owned partitions brought up to date after the clusters were placed anew.

A user's cluster is decided when they are scored. When a model version places the clusters
anew (`segments.model.PLACEMENT_SHARE`), the users last scored before it keep ids of a past
arrangement until their next event or timer, up to a horizon of event time later. In one demo
run 700 of 3,000 users ended that way, and the stored clusters matched the personas with ARI
0.52 where the final centres gave 0.64. So on a new placement, each instance walks the timer
set of every partition it owns (a user with a state has a timer there) with ZSCAN and hands
about SWEEP_PER_BATCH users to each batch. The batch checks them with one matrix product
(`Engine.moving`) and writes only those whose cluster moves, and only their cluster
(`Engine._reassign`): a full re-scoring published band and segment changes that the users'
own timers would have made later (flapping 6.1% against 5.0%), its samples moved the centres
again (7-9 placements a demo run, against 6), and writing every user cost the step 12%.

The users come from every owned partition, whether the batch has events of it or not: a
re-assignment publishes nothing, so it needs no offset of the partition to put changes in the
outbox at, and a partition whose events have all been read still gets its users re-assigned.
ZSCAN returns every member that stays in the set for the whole walk, while scoring moves the
members' timers. A sweep is not resumed after a rebalance or a restart: the users it missed
are re-scored by their own timers within a horizon.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import redis

from features import keys
from stream.service.redis_calls import redis_call

logger = logging.getLogger(__name__)

# Users a batch re-assigns while a sweep is under way, shared by the partitions swept: bounded,
# so that a sweep over millions of users slows the batches by a share instead of stalling one.
SWEEP_PER_BATCH = 1_000


class Sweep:
    def __init__(self, client: redis.Redis, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix
        self._owned: set[int] = set()
        self._cursors: dict[int, int] = {}  # ZSCAN cursor of each partition being swept
        self._placement: int | None = None  # the newest seen; the first one is not swept

    @property
    def active(self) -> bool:
        return bool(self._cursors)

    def follow(self, placement: int) -> None:
        """Sweep every owned partition when the model's placement is newer than the last one
        seen. The first one seen is where this instance starts: the users were scored with it
        or a later timer will see to them."""
        if self._placement is None:
            self._placement = placement
            return
        if placement <= self._placement:
            return
        self._placement = placement
        self._cursors = dict.fromkeys(self._owned, 0)
        logger.info(
            "clusters placed anew (placement %d): checking the clusters of partitions %s' users",
            placement,
            sorted(self._owned),
        )

    def due(self) -> dict[str, int]:
        """The next users (user -> partition) of the partitions being swept, about
        SWEEP_PER_BATCH in all (ZSCAN's count is a hint)."""
        if not self._cursors:
            return {}
        asked = sorted(self._cursors)
        each = max(1, SWEEP_PER_BATCH // len(asked))
        pipe = self._redis.pipeline(transaction=False)
        for partition in asked:
            pipe.zscan(keys.timers(self._prefix, partition), self._cursors[partition], count=each)
        found: dict[str, int] = {}
        for partition, (cursor, members) in zip(asked, self._execute(pipe), strict=True):
            found.update((user.decode(), partition) for user, _ in members)
            if cursor:
                self._cursors[partition] = int(cursor)
            else:
                del self._cursors[partition]
        return found

    def partitions_assigned(self, partitions: Iterable[int]) -> None:
        self._owned.update(partitions)

    def partitions_revoked(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            self._owned.discard(partition)
            self._cursors.pop(partition, None)

    def _execute(self, pipe: redis.client.Pipeline) -> list[Any]:
        with redis_call("timers"):
            return pipe.execute()
