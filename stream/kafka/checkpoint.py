"""The checkpoint: side effects first, offsets last.

1. Redis writes happened inside the handler, before its batch was tracked here.
2. The producer is flushed; anything undelivered raises `DeliveryError`.
3. The handler records the offsets about to be committed (`before_commit`), so that Redis is
   never behind Kafka unless it lost state.
4. Offsets are committed synchronously and each partition's result is checked.

A synchronous commit has no time bound of its own: against a frozen coordinator one waited over
90 s, so a bounded run could not give up on the broker and a service looked stuck. The commit
runs on a helper thread and the loop waits at most `timeout_s` for it; a commit left unanswered
stays the only one in flight (the next attempt waits for it first), so offsets never go back.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as Unanswered

import numpy as np
from confluent_kafka import Consumer, KafkaException, TopicPartition

from stream.errors import CommitError
from stream.kafka.publisher import Publisher
from stream.ops import metrics

logger = logging.getLogger(__name__)


class Checkpoint:
    def __init__(
        self,
        consumer: Consumer,
        publisher: Publisher,
        topic: str,
        interval_s: float,
        *,
        timeout_s: float,
        on_commit: Callable[[dict[int, int]], None] | None = None,
        before_commit: Callable[[dict[int, int]], None] | None = None,
    ) -> None:
        self._on_commit = on_commit
        self._before_commit = before_commit
        self._consumer = consumer
        self._publisher = publisher
        self._topic = topic
        self._interval_s = interval_s
        self._timeout_s = timeout_s
        self._waiter = ThreadPoolExecutor(max_workers=1, thread_name_prefix="commit")
        self._in_flight: Future[list[TopicPartition] | None] | None = None
        self._next_offsets: dict[int, int] = {}
        self._last_commit = time.monotonic()
        self.committed_records = 0
        self._uncommitted_records = 0
        self._consumed: list[tuple[float, int]] = []  # (monotonic time, records) per batch

    def track(self, last_offsets: dict[int, int], records: int, consumed_at: float) -> None:
        """Record that `records` records up to these offsets (per partition), consumed at
        `consumed_at` (monotonic), have been handled."""
        for partition, offset in last_offsets.items():
            if offset + 1 > self._next_offsets.get(partition, -1):
                self._next_offsets[partition] = offset + 1
        self._uncommitted_records += records
        if records:
            self._consumed.append((consumed_at, records))

    @property
    def pending(self) -> bool:
        return bool(self._next_offsets)

    def due(self) -> bool:
        return self.pending and time.monotonic() - self._last_commit >= self._interval_s

    def forget(self, partitions: Iterable[int]) -> None:
        """Drop offsets of partitions no longer owned; their new owner reads those records again."""
        for partition in partitions:
            self._next_offsets.pop(partition, None)

    def commit(self, *, inline: bool = False) -> None:
        """Flush the producer, then commit offsets; a failure raises a `TransientError`.
        `inline` commits on the caller's thread, as a rebalance callback must: from the helper,
        a commit went unanswered for 30 s while the callback waited on it."""
        if not self._next_offsets:
            return
        self._publisher.flush()
        if self._before_commit is not None:
            self._before_commit(dict(self._next_offsets))
        offsets = [TopicPartition(self._topic, p, o) for p, o in sorted(self._next_offsets.items())]
        results = self._committed(offsets, inline=inline)
        failed = [(tp, tp.error) for tp in results or [] if tp.error is not None]
        if failed:
            detail = ", ".join(f"{tp.topic}[{tp.partition}]: {err.str()}" for tp, err in failed)
            msg = f"offset commit failed for {detail}"
            raise CommitError(msg, code=failed[0][1].name())
        logger.debug("committed %s", {tp.partition: tp.offset for tp in offsets})
        if self._on_commit is not None:
            self._on_commit(dict(self._next_offsets))
        self._next_offsets.clear()
        self.committed_records += self._uncommitted_records
        self._uncommitted_records = 0
        self._last_commit = time.monotonic()
        metrics.COMMITS.inc()
        for consumed_at, records in self._consumed:
            ages = np.array([self._last_commit - consumed_at])
            metrics.CONSUME_TO_COMMIT.observe_many(ages, weight=records)
        self._consumed.clear()

    def close(self) -> None:
        """Wait for a commit still in flight (it ends when the broker answers or librdkafka
        gives up on it): the consumer must not be closed under it (its close commits on revoke,
        inline)."""
        self._waiter.shutdown(wait=True)
        self._in_flight = None

    def _committed(
        self, offsets: list[TopicPartition], *, inline: bool
    ) -> list[TopicPartition] | None:
        """`CommitError` if the broker refuses or does not answer in time. A commit left in
        flight ends first."""
        try:
            if self._in_flight is not None:
                with contextlib.suppress(KafkaException):  # its offsets are committed again now
                    self._answer()
            if inline:
                return self._consumer.commit(offsets=offsets, asynchronous=False)
            self._in_flight = self._waiter.submit(
                self._consumer.commit, offsets=offsets, asynchronous=False
            )
            return self._answer()
        except KafkaException as exc:
            error = exc.args[0]
            msg = f"offset commit failed: {error.str()}"
            raise CommitError(msg, code=error.name()) from exc

    def _answer(self) -> list[TopicPartition] | None:
        assert self._in_flight is not None
        try:
            results = self._in_flight.result(self._timeout_s)
        except Unanswered:
            msg = f"offset commit unanswered after {self._timeout_s:.0f}s"
            raise CommitError(msg, code="_TIMED_OUT") from None
        finally:
            if self._in_flight.done():
                self._in_flight = None
        return results
