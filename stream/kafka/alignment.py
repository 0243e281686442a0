"""Event-time alignment of the owned partitions: none runs far ahead of the others.

Live, every partition carries events of about the same time. Reading a backlog (a replay, a
restart after an outage) a consumer may drain one partition's whole history before the next
one's; the shared model would then learn one part of the users through all of their history
before it meets the rest, and versions, timers and labels would follow that order instead of
event time. So a partition whose event time is more than `max_drift_ms` ahead of the slowest
partition that still delivers is paused until the others are within half of that (Flink calls
this watermark alignment). A partition that delivered nothing for `idle_s` is idle and holds
nobody back. Pure bookkeeping: the loop pauses and resumes what it is told.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field


@dataclass
class Alignment:
    max_drift_ms: int
    idle_s: float
    event_time: dict[int, int] = field(default_factory=dict)  # highest event time read
    last_delivery: dict[int, float] = field(default_factory=dict)  # monotonic seconds
    paused: set[int] = field(default_factory=set)

    def assigned(self, partitions: Iterable[int], now_s: float) -> None:
        """New partitions hold the others back for `idle_s` until they deliver: one may have a
        backlog older than everything read so far."""
        for partition in partitions:
            self.last_delivery[partition] = now_s

    def observe(self, highest: Mapping[int, int], now_s: float) -> None:
        """The highest event time of each partition's records in a batch."""
        for partition, ts in highest.items():
            self.event_time[partition] = max(ts, self.event_time.get(partition, ts))
            self.last_delivery[partition] = now_s

    def decide(self, owned: Iterable[int], now_s: float) -> tuple[set[int], set[int]]:
        """Partitions to pause and to resume now."""
        owned = set(owned)
        held = self.paused & owned
        if not self.max_drift_ms:
            return set(), held
        # Still delivering: records came lately (or it was assigned lately), or it is held
        # back by us, so it has more.
        active = {
            p
            for p in owned
            if p in self.paused or now_s - self.last_delivery.get(p, -float("inf")) < self.idle_s
        }
        known = active & self.event_time.keys()
        if not known:
            return set(), held
        if active - known:  # one has not delivered yet: its backlog may be the oldest
            return known - self.paused, set()
        floor = min(self.event_time[p] for p in known)
        ahead = {p for p in known if self.event_time[p] > floor + self.max_drift_ms}
        # Held back until the others are within half the drift: a partition paused and resumed
        # at every batch would have its prefetched records dropped and fetched again each time.
        caught_up = {p for p in held if self.event_time.get(p, 0) <= floor + self.max_drift_ms // 2}
        return ahead - self.paused, caught_up

    def applied(self, paused: set[int], resumed: set[int]) -> None:
        self.paused = (self.paused | paused) - resumed

    def forget(self, partitions: Iterable[int]) -> None:
        """Partitions revoked or lost: what we knew of them no longer holds."""
        for partition in partitions:
            self.event_time.pop(partition, None)
            self.last_delivery.pop(partition, None)
            self.paused.discard(partition)
