"""The per-batch seam where the feature store and the segmenter plug into the loop.

A handler receives the valid events of one consumed batch, does its side effects (Redis writes)
before returning, and returns what the checkpoint must publish before offsets are committed.
It must be idempotent per (partition, offset): after a failure the loop calls it again with the
same batch, and after a crash another instance sees the same records again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from features.events import Event, InvalidEvent

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class OutMessage:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers | None = None


@dataclass(frozen=True, slots=True)
class Batch:
    """Valid events in consumption order, with the (partition, offset) each came from."""

    topic: str
    events: Sequence[Event]
    partitions: Sequence[int]
    offsets: Sequence[int]

    def moments(self, span_ms: int) -> list[tuple[list[int], Batch]]:
        """The batch cut into moments of at most `span_ms` of event time, oldest first, each
        with the batch indices of its events. A user's events are all in one partition, so
        only a partition's order must be kept: its events are cut where they reach the next
        moment, and a late event stays behind the events before it."""
        times = [event.ts_ms for event in self.events]
        if not times or max(times) - min(times) <= span_ms:
            return [(list(range(len(times))), self)]
        start = min(times)
        reached: dict[int, int] = {}
        members: dict[int, list[int]] = {}
        for i, (ts, partition) in enumerate(zip(times, self.partitions, strict=True)):
            moment = max(reached.get(partition, 0), (ts - start) // span_ms)
            reached[partition] = moment
            members.setdefault(moment, []).append(i)
        return [(members[m], self._subset(members[m])) for m in sorted(members)]

    def _subset(self, indices: list[int]) -> Batch:
        events, partitions, offsets = self.events, self.partitions, self.offsets
        return Batch(
            self.topic,
            [events[i] for i in indices],
            [partitions[i] for i in indices],
            [offsets[i] for i in indices],
        )


@dataclass(frozen=True, slots=True)
class Rejection:
    """An event the handler did not apply and that must be dead-lettered (e.g. stage `late`)."""

    index: int
    stage: str
    invalid: InvalidEvent


@dataclass(frozen=True)
class Origin:
    """What the broker says about the events topic when partitions are assigned: the handler
    compares it with what its state was built from before it applies anything."""

    topic: str
    topic_id: str  # "" where the broker has no topic ids
    partitions: int
    assigned: tuple[int, ...]
    committed: dict[int, int]  # the group's committed next offset, every partition that has one
    ends: dict[int, int]  # log end offset of each assigned partition (brokers without ids)


@dataclass(slots=True)
class Outcome:
    messages: list[OutMessage] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)


class BatchHandler(Protocol):
    def handle(self, batch: Batch) -> Outcome:
        """Apply the batch; raise `TransientError` when a dependency fails (it will be retried)."""
        ...

    def partitions_assigned(self, partitions: Sequence[int]) -> None: ...

    def partitions_revoked(self, partitions: Sequence[int]) -> None: ...

    def check_origin(self, origin: Origin) -> None:
        """Before the first batch of newly assigned partitions: raise `StateLostError` when the
        stored state does not belong to this topic and these offsets."""
        ...

    def committing(self, next_offsets: dict[int, int]) -> None:
        """These offsets are about to be committed (raise `TransientError` to hold it back)."""
        ...

    def committed(self, next_offsets: dict[int, int]) -> None:
        """Offsets up to these (exclusive) are committed; what they cover may be forgotten."""
        ...

    def busy(self) -> bool:
        """Whether the handler has work of its own between records (the loop then hands it
        an empty batch)."""
        ...

    def delivered(self) -> None:
        """Every message returned so far was delivered (the producer was flushed); called
        after the messages of an empty batch, whose offsets no commit covers."""
        ...


class NullHandler:
    """Applies nothing: the bare loop (validation, dead letters, checkpoints) and its benchmark."""

    def handle(self, batch: Batch) -> Outcome:
        return Outcome()

    def partitions_assigned(self, partitions: Sequence[int]) -> None:
        return None

    def partitions_revoked(self, partitions: Sequence[int]) -> None:
        return None

    def check_origin(self, origin: Origin) -> None:
        return None

    def committing(self, next_offsets: dict[int, int]) -> None:
        return None

    def committed(self, next_offsets: dict[int, int]) -> None:
        return None

    def busy(self) -> bool:
        return False

    def delivered(self) -> None:
        return None


H = TypeVar("H", bound=BatchHandler)


class Passthrough(Generic[H]):
    """A handler around another: subclasses see each batch in `handle`, the rest passes on."""

    def __init__(self, inner: H) -> None:
        self.inner = inner

    def partitions_assigned(self, partitions: Sequence[int]) -> None:
        self.inner.partitions_assigned(partitions)

    def partitions_revoked(self, partitions: Sequence[int]) -> None:
        self.inner.partitions_revoked(partitions)

    def check_origin(self, origin: Origin) -> None:
        self.inner.check_origin(origin)

    def committing(self, next_offsets: dict[int, int]) -> None:
        self.inner.committing(next_offsets)

    def committed(self, next_offsets: dict[int, int]) -> None:
        self.inner.committed(next_offsets)

    def busy(self) -> bool:
        return self.inner.busy()

    def delivered(self) -> None:
        self.inner.delivered()
