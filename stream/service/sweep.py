"""Every user of the owned partitions brought up to date after the clusters were placed anew,
or after the audience catalog changed.

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
members' timers. A placement's sweep is not resumed after a rebalance or a restart: the users
it missed are re-scored by their own timers within a horizon.

A new audience catalog version is swept the same way (the backfill): users whose audiences
change are written, and their enters and leaves are published. Unlike a placement, a catalog
change is an operator's act that must reach every user, so its progress is kept in Redis per
partition (`features.keys.audience_backfill`: version, ZSCAN cursor, users checked, done),
written after the batch that checked those users is stored. A new owner or a restarted
instance goes on from there, and `segstream audience show` reads it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import msgspec
import redis

from features import keys, resp
from stream.ops import metrics
from stream.service.redis_calls import redis_call

logger = logging.getLogger(__name__)

# Users a batch re-assigns while a sweep is under way, shared by the partitions swept: bounded,
# so that a sweep over millions of users slows the batches by a share instead of stalling one.
SWEEP_PER_BATCH = 1_000


class Progress(msgspec.Struct):
    """How far a partition's users are brought up to an audience catalog version."""

    version: int
    cursor: int = 0
    checked: int = 0
    done: bool = False


class Sweep:
    def __init__(self, client: resp.Client, prefix: str) -> None:
        self._redis = client
        self._prefix = prefix
        self._owned: set[int] = set()
        self._cursors: dict[int, int] = {}  # ZSCAN cursor of each partition being swept
        self._placement: int | None = None  # the newest seen; the first one is not swept
        self._audiences = 0  # the catalog version owned partitions are brought up to
        self._backfills: dict[int, Progress] = {}  # partitions swept for that version
        self._unread: set[int] = set()  # owned partitions whose stored progress is not read
        # Per partition, the cursor after the users `due` handed out, and how many it handed.
        self._next: dict[int, tuple[int, int]] = {}

    @property
    def active(self) -> bool:
        return bool(self._cursors)

    def follow(self, placement: int, audiences: int = 0) -> None:
        """Sweep every owned partition when the model's placement is newer than the last one
        seen, and every owned partition not yet brought up to audience catalog version
        `audiences`. The first placement seen is where this instance starts: the users were
        scored with it or a later timer will see to them."""
        if audiences != self._audiences:
            self._audiences = audiences
            self._unread = set(self._owned)
        if self._unread:
            self._resume(sorted(self._unread))
        if self._placement is None:
            self._placement = placement
            return
        if placement <= self._placement:
            return
        self._placement = placement
        self._cursors = dict.fromkeys(self._owned, 0)
        for backfill in self._backfills.values():
            backfill.cursor = 0
        logger.info(
            "clusters placed anew (placement %d): checking the clusters of partitions %s",
            placement,
            sorted(self._owned),
        )

    def due(self) -> dict[str, int]:
        """The next users (user -> partition) of the partitions being swept, about
        SWEEP_PER_BATCH in all (ZSCAN's count is a hint). The walk moves on once `done`
        says they were stored."""
        self._next = {}
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
            self._next[partition] = (int(cursor), len(members))
        return found

    def done(self) -> None:
        """The users of the last `due` are stored: move the walk on, and record how far the
        backfill came."""
        if not self._next:
            return
        recorded: dict[str, bytes] = {}
        for partition, (cursor, handed) in self._next.items():
            if partition not in self._cursors:
                continue  # revoked meanwhile
            if cursor:
                self._cursors[partition] = cursor
            else:
                del self._cursors[partition]
            backfill = self._backfills.get(partition)
            if backfill is not None:
                backfill.cursor, backfill.done = cursor, not cursor
                backfill.checked += handed
                metrics.AUDIENCE_BACKFILL_USERS.inc(handed)
                recorded[str(partition)] = msgspec.json.encode(backfill)
                if backfill.done:
                    del self._backfills[partition]
                    logger.info(
                        "partition %d: audiences up to catalog v%d (%d users checked)",
                        partition,
                        backfill.version,
                        backfill.checked,
                    )
        self._next = {}
        if recorded:
            pipe = self._redis.pipeline(transaction=False)
            for field, value in recorded.items():
                pipe.hset(keys.audience_backfill(self._prefix), field, value)
            with redis_call("audiences"):
                pipe.execute()

    def partitions_assigned(self, partitions: Iterable[int]) -> None:
        self._owned.update(partitions)
        self._unread.update(partitions)

    def partitions_revoked(self, partitions: Iterable[int]) -> None:
        for partition in partitions:
            self._owned.discard(partition)
            self._unread.discard(partition)
            self._cursors.pop(partition, None)
            self._backfills.pop(partition, None)

    def _resume(self, partitions: list[int]) -> None:
        """Start or go on with the backfill of the partitions not up to the catalog version."""
        with redis_call("audiences"):
            stored = self._redis.hmget(
                keys.audience_backfill(self._prefix), [str(p) for p in partitions]
            )
        self._unread.difference_update(partitions)
        for partition, raw in zip(partitions, stored, strict=True):
            progress = msgspec.json.decode(raw, type=Progress) if raw else None
            if progress is not None and progress.version == self._audiences and progress.done:
                self._backfills.pop(partition, None)
                continue
            if progress is None and not self._audiences:
                continue  # no catalog was ever made
            if progress is None or progress.version != self._audiences:
                progress = Progress(self._audiences)
            self._backfills[partition] = progress
            self._cursors[partition] = progress.cursor
            logger.info(
                "partition %d: bringing its users' audiences up to catalog v%d (from %d checked)",
                partition,
                self._audiences,
                progress.checked,
            )

    def _execute(self, pipe: redis.client.Pipeline) -> list[Any]:
        with redis_call("timers"):
            return pipe.execute()
