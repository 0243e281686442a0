"""The service's decisions without servers: the same fold, timers, engine and trainer over a
file of events, in event-time batches. `segstream evaluate` measures quality with it.

What differs from `segstream run` is only where things are kept (dicts and heaps instead of
Redis and Kafka) and that one process owns every partition and is always the trainer.
"""

from __future__ import annotations

import heapq
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from features.definitions import Rules, UserState, decide
from features.events import Event, decode_event
from segments.engine import Change, Engine, Scored
from segments.model import Model
from segments.scoring import Params, cold_params


@dataclass(frozen=True)
class OfflineOptions:
    partitions: int = 6
    batch_size: int = 5_000
    snapshot_every: int = 50_000  # events between model versions
    # The classifier stops learning labels at this event time (later ones are held out);
    # the clusterer keeps learning, as it would in service.
    labels_until_ms: int | None = None


@dataclass
class Resolution:
    """A resolved propensity snapshot: when it was taken, the score then, the outcome."""

    time_ms: int
    propensity: float
    bought: bool


@dataclass
class OfflineRun:
    states: dict[str, UserState] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    resolutions: list[Resolution] = field(default_factory=list)
    events: int = 0
    invalid: int = 0
    params: Params | None = None


class OfflinePipeline:
    def __init__(self, engine: Engine, options: OfflineOptions, rules: Rules | None = None) -> None:
        self.engine = engine
        self.options = options
        self.rules = rules or Rules()
        self.model = Model(engine.config)
        self.params = cold_params(engine.config.features)
        self.run = OfflineRun()
        self._watermarks = [0] * options.partitions
        self._offsets = [0] * options.partitions
        self._timers: list[list[tuple[int, str]]] = [[] for _ in range(options.partitions)]

    def feed(self, lines: Iterable[bytes], progress: Callable[[int], None] | None = None) -> None:
        for batch in _batches(lines, self.options.batch_size):
            self._batch(batch)
            if progress is not None:
                progress(self.run.events)
        self.run.params = self.params

    def _batch(self, lines: list[bytes]) -> None:
        touched: dict[str, int] = {}
        for line in lines:
            event = decode_event(line, now_ms=2**62)
            if not isinstance(event, Event):
                self.run.invalid += 1
                continue
            partition = self._fold(event)
            touched[event.user_id] = partition
        self.run.events += len(lines)
        due = self._due_users(touched)
        users = [*touched, *due]
        states = [self.run.states[u] for u in users]
        now = [self._watermarks[p] for p in [*touched.values(), *due.values()]]
        timer = [False] * len(touched) + [True] * len(due)
        scored = self.engine.score(self.params, users, states, now, timer)
        self._account(scored, users)
        self._train(scored, max(self._watermarks))

    def _fold(self, event: Event) -> int:
        partition = zlib.crc32(event.user_id.encode()) % self.options.partitions
        state = self.run.states.get(event.user_id)
        if state is None:
            state = self.run.states[event.user_id] = UserState()
        offset = self._offsets[partition]
        self._offsets[partition] += 1
        decide(state, event, partition, offset, self._watermarks[partition], self.rules)
        self._watermarks[partition] = max(self._watermarks[partition], event.ts_ms)
        return partition

    def _due_users(self, touched: dict[str, int]) -> dict[str, int]:
        due: dict[str, int] = {}
        for partition, heap in enumerate(self._timers):
            while heap and heap[0][0] <= self._watermarks[partition]:
                _, user = heapq.heappop(heap)
                if user not in touched:
                    due[user] = partition
        return due

    def _account(self, scored: Scored, users: list[str]) -> None:
        self.run.changes.extend(scored.changes)
        for user, when in scored.due.items():
            if when:
                partition = zlib.crc32(user.encode()) % self.options.partitions
                heapq.heappush(self._timers[partition], (when, user))

    def _train(self, scored: Scored, now: int) -> None:
        until = self.options.labels_until_ms
        for _, bought, propensity in scored.labels:
            if propensity >= 0:
                self.run.resolutions.append(Resolution(now, propensity, bought))
        for inputs, frequency, monetary in scored.samples:
            self.model.learn(inputs, frequency, monetary)
        if until is None or now < until:
            for inputs, bought, _ in scored.labels:
                self.model.learn_label(inputs, bought)
        due = not self.params.clusters_ready or self._due_snapshot()
        if due and self.model.segmenter.centers():
            self.params = self.model.params()

    def _due_snapshot(self) -> bool:
        return self.run.events // self.options.snapshot_every != (
            (self.run.events - self.options.batch_size) // self.options.snapshot_every
        )


def _batches(lines: Iterable[bytes], size: int) -> Iterator[list[bytes]]:
    batch: list[bytes] = []
    for line in lines:
        if line.strip():
            batch.append(line)
            if len(batch) >= size:
                yield batch
                batch = []
    if batch:
        yield batch
