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
from stream.publisher import OutMessage


@dataclass(frozen=True, slots=True)
class Batch:
    """Valid events in consumption order, with the (partition, offset) each came from."""

    topic: str
    events: Sequence[Event]
    partitions: Sequence[int]
    offsets: Sequence[int]

    def moments(self, span_ms: int) -> list[tuple[int, Batch]]:
        """The batch cut, in order, into runs whose events lie within `span_ms` of event time
        after the run's first one, each with the index of its first event."""
        starts = [0]
        first = self.events[0].ts_ms if self.events else 0
        for i, event in enumerate(self.events):
            if event.ts_ms - first > span_ms:
                starts.append(i)
                first = event.ts_ms
        if len(starts) == 1:
            return [(0, self)]
        ends = [*starts[1:], len(self.events)]
        return [
            (a, Batch(self.topic, self.events[a:b], self.partitions[a:b], self.offsets[a:b]))
            for a, b in zip(starts, ends, strict=True)
        ]


@dataclass(frozen=True, slots=True)
class Rejection:
    """An event the handler did not apply and that must be dead-lettered (e.g. stage `late`)."""

    index: int
    stage: str
    invalid: InvalidEvent


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

    def committed(self, next_offsets: dict[int, int]) -> None:
        """Offsets up to these (exclusive) are committed; what they cover may be forgotten."""
        ...


class NullHandler:
    """Applies nothing: the bare loop (validation, dead letters, checkpoints) and its benchmark."""

    def handle(self, batch: Batch) -> Outcome:
        return Outcome()

    def partitions_assigned(self, partitions: Sequence[int]) -> None:
        return None

    def partitions_revoked(self, partitions: Sequence[int]) -> None:
        return None

    def committed(self, next_offsets: dict[int, int]) -> None:
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

    def committed(self, next_offsets: dict[int, int]) -> None:
        self.inner.committed(next_offsets)
