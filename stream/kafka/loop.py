"""The consumer loop: poll → decode → handle → publish → checkpoint; a forced commit at the end.

Backpressure: when a step fails with a `TransientError` (Redis or the broker away), the assigned
partitions are paused, the same step is retried with capped exponential backoff while the consumer
keeps serving rebalances, and consumption resumes once it succeeds. No record is ever skipped.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import orjson
from confluent_kafka import (
    TIMESTAMP_NOT_AVAILABLE,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
    libversion,
)
from confluent_kafka.admin import AdminClient

from features.events import Event, InvalidEvent, decode_event
from stream.errors import SegstreamError, StateLostError, TransientError
from stream.kafka.alignment import Alignment
from stream.kafka.checkpoint import Checkpoint
from stream.kafka.dead_letters import dead_letter
from stream.kafka.handler import Batch, BatchHandler
from stream.kafka.publisher import Publisher
from stream.kafka.topics import describe_origin, ensure_topics
from stream.ops import metrics
from stream.ops.health import Health
from stream.settings import (
    Settings,
    admin_config,
    consumer_config,
    log_client_error,
    producer_config,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")
# Steps that block in a broker call, bounded by librdkafka's own timeouts: the loop is waiting
# on a dependency there, not stuck. A batch (`handle`) is not one: its Redis calls time out
# after SEGSTREAM_REDIS__SOCKET_TIMEOUT_S, and the rest of it is our own work.
BLOCKING_STEPS = frozenset({"commit", "produce", "origin"})
FINAL_COMMIT_ATTEMPTS = 5
JOIN_GRACE_S = 60.0


class StoppedError(SegstreamError):
    """A stop was requested while a step was failing; the failing work stays uncommitted."""


@dataclass
class RunSummary:
    consumed: int = 0
    processed: int = 0
    dead_lettered: Counter[str] = field(default_factory=Counter)
    committed: int = 0
    batches: int = 0
    retries: int = 0
    elapsed_s: float = 0.0
    # Seconds from start to the first record: group join and fetch start-up, not throughput.
    first_record_s: float = 0.0
    # Seconds from the first record to the end of the last batch: what throughput is measured on.
    busy_s: float = 0.0
    stopped_by: str = ""
    clean_exit: bool = True

    def as_dict(self) -> dict[str, object]:
        rate = self.consumed / self.busy_s if self.busy_s > 0 else 0.0
        return {
            "consumed": self.consumed,
            "processed": self.processed,
            "dead_lettered": sum(self.dead_lettered.values()),
            "dead_lettered_by_reason": dict(self.dead_lettered),
            "committed": self.committed,
            "batches": self.batches,
            "retries": self.retries,
            "elapsed_s": round(self.elapsed_s, 3),
            "first_record_s": round(self.first_record_s, 3),
            "busy_s": round(self.busy_s, 3),
            "events_per_second": round(rate, 1),
            "stopped_by": self.stopped_by,
            "clean_exit": self.clean_exit,
        }


class Loop:
    def __init__(
        self, settings: Settings, handler: BatchHandler, health: Health | None = None
    ) -> None:
        self._settings = settings
        self._handler = handler
        self._health = health or Health(settings.metrics.stall_s)
        self._topic = settings.topics.events
        self._stop_reason = ""
        self._failed = False
        self._broker_silent = False  # a bounded run ended on a broker that stopped answering
        self._until_idle: float | None = None
        self._paused = False
        self._owned: set[int] = set()
        self._unchecked: set[int] = set()  # assigned, origin not compared yet
        self._admin: AdminClient | None = None
        self._alignment = Alignment(int(settings.loop.max_drift_s * 1000), settings.loop.idle_s)
        self._assigned_once = False
        self._last_activity = time.monotonic()
        self._started = time.monotonic()
        self.summary = RunSummary()
        metrics.record_librdkafka(libversion()[0])

    @property
    def assigned_partitions(self) -> frozenset[int]:
        return frozenset(self._owned)

    def stop(self, reason: str = "stop requested") -> None:
        """Ask the loop to finish its batch, commit and return; safe from a signal handler."""
        self._stop_reason = self._stop_reason or reason

    def run(self, *, max_events: int | None = None, until_idle: float | None = None) -> RunSummary:
        """Consume until stopped, `max_events` records were read, or `until_idle` quiet seconds."""
        settings = self._settings
        if settings.topics.create:
            ensure_topics(settings)
        self._started = time.monotonic()
        with ExitStack() as stack:
            self._publisher = Publisher(
                producer_config(settings), flush_timeout_s=settings.loop.flush_timeout_s
            )
            stack.callback(self._publisher.close)
            callbacks = {"stats_cb": self._on_stats, "error_cb": self._on_error}
            self._consumer = Consumer({**consumer_config(settings), **callbacks})
            stack.callback(self._consumer.close)
            self._checkpoint = Checkpoint(
                self._consumer,
                self._publisher,
                self._topic,
                settings.loop.commit_interval_s,
                timeout_s=settings.loop.flush_timeout_s,
                on_commit=self._handler.committed,
                before_commit=self._handler.committing,
            )
            stack.callback(self._checkpoint.close)
            self._consumer.subscribe(
                [self._topic],
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
            try:
                try:
                    self._consume_until_done(max_events, until_idle)
                except StateLostError as exc:
                    self._halt(exc, bounded=max_events is not None or until_idle is not None)
                if self._broker_silent:
                    # A commit would only hang; the fences make re-reading the rest harmless.
                    logger.warning("offsets since the last checkpoint are read again next time")
                else:
                    self._final_commit()
            except StoppedError:
                self.summary.clean_exit = False
            except BaseException:
                self._failed = True  # no commit on the way out: side effects may be incomplete
                raise
        self.summary.elapsed_s = time.monotonic() - self._started
        self.summary.stopped_by = self._stop_reason
        self.summary.committed = self._checkpoint.committed_records
        return self.summary

    def _consume_until_done(self, max_events: int | None, until_idle: float | None) -> None:
        loop = self._settings.loop
        self._until_idle = until_idle
        self._last_activity = time.monotonic()
        while not self._stop_reason:
            self._health.beat()
            wanted = loop.batch_size
            if max_events is not None:
                wanted = min(wanted, max_events - self.summary.consumed)
                if wanted <= 0:
                    self.stop(f"max_events={max_events}")
                    break
            messages = self._consumer.consume(wanted, loop.batch_timeout_s)
            if self._unchecked:
                self._retry("origin", self._check_origin)
            if messages:
                self._last_activity = time.monotonic()
                if not self.summary.batches:
                    self.summary.first_record_s = self._last_activity - self._started
                self._process(messages, self._last_activity)
                self.summary.busy_s = time.monotonic() - self._started - self.summary.first_record_s
            elif self._owned and not self._unchecked and self._retry("handle", self._handler.busy):
                self._handle_between_records()
            elif until_idle is not None and self._idle_for() >= until_idle:
                self._stop_if_drained(until_idle)
            self._align()
            if self._checkpoint.due():
                self._retry("commit", self._checkpoint.commit)

    def _check_origin(self) -> None:
        """Compare the newly assigned partitions' topic and offsets with the stored state's."""
        if self._admin is None:
            self._admin = AdminClient(admin_config(self._settings))
        partitions = sorted(self._unchecked)
        timeout_s = self._settings.loop.flush_timeout_s
        origin = describe_origin(self._admin, self._consumer, self._topic, partitions, timeout_s)
        self._handler.check_origin(origin)
        self._unchecked.difference_update(partitions)

    def _halt(self, exc: StateLostError, *, bounded: bool) -> None:
        """Stop consuming for good: nothing more is applied or committed. A service stays up,
        unready, with the error on its probe and metrics until it is stopped; a bounded run
        (`--until-idle`, `--max-events`) ends at once. Either way the error is raised."""
        self._failed = True
        metrics.STATE_LOST.labels(exc.kind).set(1)
        self._health.halt(str(exc))
        logger.error("stopped consuming: %s", exc)
        self._set_paused(True)
        while not bounded and not self._stop_reason:
            self._wait_serving_rebalances(1.0)
        raise exc

    def _stop_if_drained(self, until_idle: float) -> None:
        """Quiet is only the end of the input if a broker answered during it: a frozen broker
        delivers nothing too. Waits for that answer, at most until readiness gives up on it."""
        quiet, silent = self._idle_for(), self._health.kafka_silent_s()
        if silent < quiet:
            self.stop(f"idle for {until_idle}s")
        elif silent >= self._health.kafka_silence_s:
            self._give_up_on_silent_broker(silent)

    def _give_up_on_silent_broker(self, silent: float) -> None:
        """End a bounded run on a broker that stopped answering: unclean, records may remain
        unread or uncommitted (read again next time; the fences make that harmless)."""
        self.summary.clean_exit = False
        self._broker_silent = True
        logger.error("no broker answered for %.0fs: records may remain unread", silent)
        self.stop(f"broker silent for {silent:.0f}s")

    def _idle_for(self) -> float:
        """Quiet seconds since the last record or assignment; the group join does not count,
        up to JOIN_GRACE_S, so a slow join cannot end a bounded run before it starts."""
        quiet = time.monotonic() - self._last_activity
        return quiet if self._assigned_once else quiet - JOIN_GRACE_S

    def _process(self, messages: list[Message], consumed_at: float) -> None:
        loop = self._settings.loop
        now_ms = int(time.time() * 1000)
        records: list[Message] = []
        valid: list[Message] = []
        events: list[Event] = []
        highest: dict[int, int] = {}
        for msg in messages:
            error = msg.error()
            if error is not None:
                _raise_unless_benign(error)
                continue
            records.append(msg)
            result = decode_event(
                msg.value(),
                now_ms=now_ms,
                max_bytes=loop.max_event_bytes,
                max_future_ms=loop.max_future_ms,
            )
            if isinstance(result, Event) and not _keyed_by(msg, result):
                result = _key_mismatch(msg)
            if isinstance(result, Event):
                valid.append(msg)
                events.append(result)
                partition, _ = _where(msg)
                highest[partition] = max(result.ts_ms, highest.get(partition, result.ts_ms))
            else:
                self._dead_letter(msg, "validate", result)
        self._alignment.observe(highest, consumed_at)
        self.summary.consumed += len(records)
        self.summary.batches += 1
        metrics.EVENTS_CONSUMED.inc(len(records))
        metrics.BATCH_SIZE.observe(len(records))
        self._handle(valid, events)
        self._track(records, consumed_at)

    def _handle_between_records(self) -> None:
        """The handler's own work while no record comes (a backfill), as an empty batch; what
        it returns is published like a batch's."""
        batch = Batch(topic=self._topic, events=[], partitions=[], offsets=[])
        outcome = self._retry("handle", lambda: self._handler.handle(batch))
        for message in outcome.messages:
            self._retry("produce", lambda m=message: self._publisher.produce(m))  # type: ignore[misc]
        if outcome.messages:
            # No commit covers them (no offset moved): delivered, the handler lets them go.
            self._retry("produce", self._publisher.flush)
            self._handler.delivered()

    def _handle(self, valid: list[Message], events: list[Event]) -> None:
        if not events:
            return
        positions = [_where(m) for m in valid]
        batch = Batch(
            topic=self._topic,
            events=events,
            partitions=[partition for partition, _ in positions],
            offsets=[offset for _, offset in positions],
        )
        outcome = self._retry("handle", lambda: self._handler.handle(batch))
        for rejection in outcome.rejections:
            self._dead_letter(valid[rejection.index], rejection.stage, rejection.invalid)
        for message in outcome.messages:
            self._retry("produce", lambda m=message: self._publisher.produce(m))  # type: ignore[misc]
        self.summary.processed += len(events) - len(outcome.rejections)
        metrics.EVENTS_PROCESSED.inc(len(events) - len(outcome.rejections))
        _observe_latency(valid, events)

    def _dead_letter(self, msg: Message, stage: str, invalid: InvalidEvent) -> None:
        record = dead_letter(self._settings.topics.dlq, msg, stage, invalid)
        self._retry("produce", lambda: self._publisher.produce(record))
        self.summary.dead_lettered[invalid.reason] += 1
        metrics.EVENTS_DEAD_LETTERED.labels(stage, invalid.reason).inc()

    def _track(self, records: Sequence[Message], consumed_at: float) -> None:
        last: dict[int, int] = {}
        owned = 0
        for msg in records:
            # Records of a partition revoked meanwhile are left to its new owner.
            partition, offset = _where(msg)
            if partition in self._owned:
                last[partition] = offset
                owned += 1
        self._checkpoint.track(last, owned, consumed_at)

    def _retry(self, step: str, action: Callable[[], T]) -> T:
        loop = self._settings.loop
        delay = loop.backoff_initial_s
        while True:
            try:
                with self._waiting(step):
                    result = action()
            except TransientError as exc:
                silent = self._health.kafka_silent_s()
                if self._until_idle is not None and silent >= self._health.kafka_silence_s:
                    self._give_up_on_silent_broker(silent)
                if self._stop_reason:
                    msg = f"{step} failing at stop: {exc}"
                    raise StoppedError(msg) from exc
                if exc.retry_now:
                    delay = loop.backoff_initial_s
                self.summary.retries += 1
                metrics.RETRIES.labels(step).inc()
                logger.warning("%s failed: %s; paused, retrying in %.2fs", step, exc, delay)
                self._set_paused(True)
                self._health.paused(step)
                self._wait_serving_rebalances(delay)
                delay = min(delay * 2, loop.backoff_max_s)
                continue
            self._set_paused(False)
            self._health.paused("")
            return result

    def _waiting(self, step: str) -> contextlib.AbstractContextManager[None]:
        if step in BLOCKING_STEPS:
            return self._health.waiting(step)
        return contextlib.nullcontext()

    def _wait_serving_rebalances(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0 and not self._stop_reason:
            self._health.beat()
            stray = self._consumer.consume(100, min(left, 0.1))
            if stray:
                self._rewind(stray)

    def _rewind(self, messages: list[Message]) -> None:
        """Seek back to records read while paused (a new partition), so that none is skipped."""
        first: dict[int, int] = {}
        for msg in messages:
            if msg.error() is None:
                first.setdefault(*_where(msg))
        for partition, offset in first.items():
            self._consumer.seek(TopicPartition(self._topic, partition, offset))

    def _set_paused(self, paused: bool) -> None:
        if paused == self._paused:
            return
        if paused:
            self._consumer.pause(self._partitions(self._owned))
        else:
            # Partitions held back for alignment stay paused.
            self._consumer.resume(self._partitions(self._owned - self._alignment.paused))
        self._paused = paused
        metrics.PAUSED.set(int(paused))

    def _align(self) -> None:
        """Pause the partitions too far ahead in event time, resume those caught up with."""
        pause, resume = self._alignment.decide(self._owned, time.monotonic())
        if not pause and not resume:
            return
        if pause:
            self._consumer.pause(self._partitions(pause))
        if resume and not self._paused:
            self._consumer.resume(self._partitions(resume))
        self._alignment.applied(pause, resume if not self._paused else set())
        metrics.ALIGNMENT_PAUSED.set(len(self._alignment.paused))

    def _partitions(self, numbers: Iterable[int]) -> list[TopicPartition]:
        return [TopicPartition(self._topic, p) for p in sorted(numbers)]

    def _final_commit(self) -> None:
        delay = self._settings.loop.backoff_initial_s
        for attempt in range(1, FINAL_COMMIT_ATTEMPTS + 1):
            try:
                with self._health.waiting("commit"):
                    self._checkpoint.commit()
                return
            except TransientError as exc:
                logger.warning("final commit attempt %d failed: %s", attempt, exc)
                time.sleep(delay)
                delay = min(delay * 2, self._settings.loop.backoff_max_s)
        logger.error("offsets left uncommitted; their records will be read again")
        self.summary.clean_exit = False

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        consumer.incremental_assign(partitions)
        if self._paused:
            consumer.pause(partitions)
        else:
            # librdkafka keeps the pause of a partition lost while paused (its session expired
            # during a retry) and given back: unresumed, it would be owned and never read.
            consumer.resume(partitions)
        numbers = [tp.partition for tp in partitions]
        self._owned.update(numbers)
        self._unchecked.update(numbers)
        self._alignment.assigned(numbers, time.monotonic())
        metrics.ASSIGNED_PARTITIONS.set(len(self._owned))
        self._last_activity = time.monotonic()
        self._assigned_once = True
        metrics.REBALANCES.labels("assign").inc()
        logger.info("assigned %s%s", self._topic, numbers)
        self._handler.partitions_assigned(numbers)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = [tp.partition for tp in partitions]
        metrics.REBALANCES.labels("revoke").inc()
        if not self._failed:
            try:
                with self._health.waiting("commit"):
                    self._checkpoint.commit(inline=True)
            except (TransientError, StateLostError) as exc:
                # A lost state is found again by the loop's own commit or origin check.
                logger.warning("commit on revoke of %s failed: %s", numbers, exc)
        self._release(numbers)
        logger.info("revoked %s%s", self._topic, numbers)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        numbers = [tp.partition for tp in partitions]
        metrics.REBALANCES.labels("lost").inc()
        logger.warning("lost %s%s without a chance to commit", self._topic, numbers)
        self._release(numbers)

    def _release(self, numbers: list[int]) -> None:
        self._alignment.forget(numbers)
        metrics.ALIGNMENT_PAUSED.set(len(self._alignment.paused))
        self._checkpoint.forget(numbers)
        self._owned.difference_update(numbers)
        self._unchecked.difference_update(numbers)
        metrics.ASSIGNED_PARTITIONS.set(len(self._owned))
        for partition in numbers:
            _drop_lag(partition)
        self._handler.partitions_revoked(numbers)

    def _on_stats(self, raw: str) -> None:
        """librdkafka statistics (every `statistics.interval.ms`): lag and broker state."""
        stats = orjson.loads(raw)
        self._health.kafka_statistics(stats)
        partitions = stats.get("topics", {}).get(self._topic, {}).get("partitions", {})
        for number in self._owned:
            lag = partitions.get(str(number), {}).get("consumer_lag", -1)
            if lag >= 0:  # -1: not known yet
                metrics.CONSUMER_LAG.labels(str(number)).set(lag)

    def _on_error(self, error: KafkaError) -> None:
        metrics.KAFKA_ERRORS.labels(error.name()).inc()
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            self._health.all_brokers_down()
        log_client_error(error)


def _observe_latency(valid: Sequence[Message], events: Sequence[Event]) -> None:
    """Per-event latencies up to now, when the batch's decisions are made, in two bulk calls."""
    now_ms = time.time() * 1000
    event_ms = np.fromiter((e.ts_ms for e in events), np.float64, len(events))
    metrics.EVENT_TIME_TO_DECISION.observe_many(np.maximum(now_ms - event_ms, 0.0) / 1000)
    record_ms = np.fromiter((_timestamp(m) for m in valid), np.float64, len(valid))
    known = record_ms > 0
    metrics.RECORD_TO_DECISION.observe_many(np.maximum(now_ms - record_ms[known], 0.0) / 1000)


def _keyed_by(msg: Message, event: Event) -> bool:
    """A record's key must be its user id (or absent): a user's events must share a partition,
    or their order, and who applies them, depends on two consumers."""
    key = msg.key()
    return key is None or key == event.user_id.encode()


def _key_mismatch(msg: Message) -> InvalidEvent:
    key = msg.key() or b""
    shown = key[:64].decode("utf-8", "replace")
    message = f"record key {shown!r} is not the event's user_id (keys must be user ids)"
    return InvalidEvent("key_mismatch", "KeyMismatch", message)


def _timestamp(msg: Message) -> int:
    kind, ms = msg.timestamp()
    return ms if kind != TIMESTAMP_NOT_AVAILABLE else 0


def _drop_lag(partition: int) -> None:
    with contextlib.suppress(KeyError):  # no statistics arrived while it was ours
        metrics.CONSUMER_LAG.remove(str(partition))


def _where(msg: Message) -> tuple[int, int]:
    partition, offset = msg.partition(), msg.offset()
    # A consumed record without an error always has both.
    assert partition is not None and offset is not None
    return partition, offset


def _raise_unless_benign(error: KafkaError) -> None:
    if error.code() == KafkaError._PARTITION_EOF:
        return
    if error.fatal():
        raise KafkaException(error)
    logger.warning("consumer error: %s", error.str())
