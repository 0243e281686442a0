"""The service's batch step: features into Redis, users scored, changes out, timers set.

`SegmentHandler._moment` is the table of contents; its steps, and why in this order:
1. a newer audience catalog and a newer model version are loaded, and, when the batch has
   events, the trainer lease is renewed (every refresh interval);
2. users whose event-time timers are due at this batch's watermarks are looked up, and, after
   a version that placed the clusters anew or a new audience catalog, the next users of the
   sweep, whose clusters and audiences alone are brought up to date (`sweep.py`). Between
   records the loop hands over empty batches while a sweep is under way (`busy`);
3. the feature store folds the events a slice of users at a time; before a slice is written,
   every touched or due user in it is scored with one model version, its segment record goes
   into the same compare-and-set, and any change is put in the partition's outbox first (so a
   crash cannot lose it). A write another writer refused is read, folded and scored again;
4. timers are rescheduled, the trainer learns from the batch's sample;
5. the changes go back to the loop, which publishes them before it commits the offsets.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Final

import msgspec
import orjson

from features.cluster import Command
from features.definitions import Rules
from features.errors import ConflictError, ScriptsReloadedError, StoreUnavailableError
from features.events import Event, InvalidEvent
from features.store import MAX_CONFLICT_ROUNDS, Applied, Around, FeatureStore, Folded, conflict
from segments.engine import MEMBERSHIP, SEGMENT, Change, Engine, Label, Scored, SpendLabel
from segments.validation import LiveQuality
from stream.errors import TransientError
from stream.kafka.handler import Batch, Origin, Outcome, OutMessage, Rejection
from stream.ops import metrics
from stream.service.audience_catalog import AudienceCatalog
from stream.service.census import Census
from stream.service.model_sync import ModelSync
from stream.service.origin_guard import OriginGuard
from stream.service.outbox import Outbox
from stream.service.sweep import Sweep
from stream.service.timers import Timers

logger = logging.getLogger(__name__)

# Every change record's headers: consumers can tell the value's format without parsing it.
CHANGE_HEADERS: Final = (("content-type", b"application/json"),)
# A change as it leaves: its input partition, its JSON value, and the change itself.
Published = tuple[int, bytes, Change]


@dataclass
class _Decisions:
    """What scoring decided in one moment, over its rounds (a refused write re-scores its
    users, and what was decided for them before is taken back)."""

    due: dict[str, int]  # users scored without an event of theirs -> partition
    last_offsets: dict[int, int]
    swept: set[str] = field(default_factory=set)  # those of them a sweep added
    scored: dict[str, tuple[int, int]] = field(default_factory=dict)  # user -> partition, due
    # By user, in the order decided: (partition, JSON value, change).
    changes: dict[str, list[Published]] = field(default_factory=dict)
    outbox: list[tuple[int, bytes]] = field(default_factory=list)  # entries written so far
    samples: Scored = field(default_factory=Scored)
    learn_share: float = 0.0  # of the scorings, for the trainer
    watermarks: dict[int, int] = field(default_factory=dict)  # of the batch's partitions
    in_batch: frozenset[int] = frozenset()  # partitions the batch has events of


class SegmentHandler:
    def __init__(
        self,
        store: FeatureStore,
        engine: Engine,
        *,
        sync: ModelSync,
        timers: Timers,
        sweep: Sweep,
        outbox: Outbox,
        segments_topic: str,
        census: Census | None = None,
        pseudonymize: Callable[[str], str] | None = None,
        guard: OriginGuard | None = None,
        audiences: AudienceCatalog | None = None,
    ) -> None:
        self.store = store
        self.store.observe = _observe_redis
        self._census = census
        self.engine = engine
        self.sync = sync
        self._timers = timers
        self._sweep = sweep
        self._outbox = outbox
        self._topic = segments_topic
        self._pseudonymize = pseudonymize
        # None for offline drivers (evaluate, tests) that hand batches over without a broker.
        self._guard = guard
        self._audiences = audiences
        # Per owned partition, an offset at or below the next one the group will commit: a
        # change decided without an event of the partition goes into its outbox there.
        self._positions: dict[int, int] = {}
        # Outbox entries of partitions their batch had no events of (swept users' changes, a
        # new owner's republished ones): no commit of the partition's offsets drops them, so
        # they go once delivered. Staged until their batch returns, then handed over.
        self._off_batch: list[tuple[int, bytes]] = []
        self._staged: list[tuple[int, bytes]] = []
        self._recovering: set[int] = set()  # newly assigned: publish the previous owner's rest
        self._retrying: set[int] = set()  # a failed attempt left entries of this batch
        self.quality = LiveQuality()
        self.last: Applied | None = None  # what the store did in the last batch's last moment
        # The propensity and spend snapshots the last batch resolved (for evaluations of a run).
        self.resolved: list[Label] = []
        self.resolved_spend: list[SpendLabel] = []
        self.decided: list[Change] = []  # the changes it published
        self._redirects = 0  # the store's, as counted in the metric

    def handle(self, batch: Batch) -> Outcome:
        try:
            outcome = self._handle(batch)
        except BaseException as exc:
            self._staged = []
            # A failed attempt may have written some users' states and their outbox entries;
            # the retry sees those events as duplicates, so it publishes the entries instead.
            # Swept users of any owned partition may be among them.
            self._retrying.update(batch.partitions, self._positions)
            if isinstance(exc, StoreUnavailableError):
                metrics.REDIS_ERRORS.labels("store").inc()
            if isinstance(exc, StoreUnavailableError | ConflictError):
                transient = TransientError(str(exc))
                transient.retry_now = isinstance(exc, ScriptsReloadedError)
                raise transient from exc
            raise
        self._off_batch += self._staged
        self._staged = []
        return outcome

    def _handle(self, batch: Batch) -> Outcome:
        """The batch's moments (see `SegmentConfig.moment_ms`) one after the other."""
        outcome = Outcome(messages=self._recover(batch))
        resolved: list[Label] = []
        resolved_spend: list[SpendLabel] = []
        decided: list[Change] = []
        for indices, moment in batch.moments(self.engine.config.moment_ms):
            done = self._moment(moment)
            outcome.messages += done.messages
            outcome.rejections += [replace(r, index=indices[r.index]) for r in done.rejections]
            resolved += self.resolved
            resolved_spend += self.resolved_spend
            decided += self.decided
        if self._guard is not None:
            # Before the changes go out: a Redis that lost state during the batch reused ids.
            self._guard.verify(batch.partitions)
        self.resolved, self.resolved_spend, self.decided = resolved, resolved_spend, decided
        self._recovering.clear()
        self._retrying.clear()
        return outcome

    def _moment(self, batch: Batch) -> Outcome:
        """One moment of a batch: every step of the service, in order."""
        store = self.store
        # 1. the audiences and a newer model version; with events, the trainer's lease too
        # (between records an instance neither takes the lease nor learns: it only sweeps)
        self._refresh(model=bool(batch.events))
        events = private(batch.events, self._pseudonymize)
        decisions = self._decisions(events, batch)  # 2. timers due now, users swept
        due = list(decisions.due)
        with store.batch(events, batch.partitions, batch.offsets, extra_users=due) as stored:
            for _ in range(MAX_CONFLICT_ROUNDS):  # 3. fold, score, write; refused: once more
                # Each slice is folded, scored and packed while Redis runs the slice before it.
                parts = store.fold(stored)
                store.write(stored, (store.pack(p, self._decide(p, decisions)) for p in parts))
                if not stored.pending:
                    break
            else:
                raise conflict(stored)
        self.last = stored.applied
        self._drop_erased(stored.applied, decisions)
        self._after(stored.applied, decisions)  # 4. timers of gone users, learning, metrics
        return self._outcome(events, stored.applied, decisions)  # 5. changes, late events

    def busy(self) -> bool:
        """Whether there is work without events: a sweep or a backfill under way, or changes
        of newly assigned partitions to publish again. The loop then hands over an empty
        batch between records."""
        self._refresh(model=False)
        self._follow_sweep()
        return self._sweep.active or bool(self._recovering)

    def _refresh(self, *, model: bool) -> None:
        if model:
            self.sync.refresh()
        else:
            self.sync.follow()
        catalog = self._audiences.refresh() if self._audiences is not None else None
        if catalog is not None:
            self.engine.set_audiences(catalog)

    def _follow_sweep(self) -> None:
        self._sweep.follow(self.sync.params.placement, self.engine.audiences.catalog.version)

    def _decisions(self, events: Sequence[Event], batch: Batch) -> _Decisions:
        marks = self._watermarks_after(events, batch.partitions)
        users = {e.user_id for e in events}
        due = {u: p for u, p in self._timers.due(marks).items() if u not in users}
        swept = self._swept(users | due.keys())
        offsets = self._positions | _last_offsets(batch)
        decisions = _Decisions(
            due | swept, offsets, set(swept), watermarks=marks, in_batch=frozenset(marks)
        )
        decisions.learn_share = self.sync.learn_share(len(users) + len(due))
        return decisions

    def _swept(self, busy: set[str]) -> dict[str, int]:
        """The next users of a sweep (user -> partition) whose cluster or audiences move,
        checked at their partition's watermark, whether the batch has events of it or not;
        those the batch scores anyway are left to it."""
        params = self.sync.params
        self._follow_sweep()
        candidates = {u: p for u, p in self._sweep.due().items() if u not in busy}
        if not candidates:
            return {}
        self.store.load_watermarks(sorted(set(candidates.values())))
        states = self.store.peek(list(candidates))
        users = list(states)
        now = [self.store.watermark(candidates[u]) for u in users]
        metrics.USERS_SCORED.labels("sweep").inc(len(users))
        moving = self.engine.moving(params, users, list(states.values()), now)
        return {u: candidates[u] for u in moving}

    def _outcome(self, events: Sequence[Event], applied: Applied, decisions: _Decisions) -> Outcome:
        changes = _flat(decisions.changes.values())
        messages = [self._message(change, value) for _, value, change in changes]
        rejections = [late_rejection(i, events[i], self.store.rules) for i in applied.late]
        return Outcome(messages=messages, rejections=rejections)

    def _watermarks_after(
        self, events: Sequence[Event], partitions: Sequence[int]
    ) -> dict[int, int]:
        self.store.load_watermarks(partitions)
        marks = {p: self.store.watermark(p) for p in set(partitions)}
        for event, partition in zip(events, partitions, strict=True):
            marks[partition] = max(marks[partition], event.ts_ms)
        return marks

    def _decide(self, part: Folded, decisions: _Decisions) -> Around:
        """Score a slice of folded users; return what goes with their writes: the outbox
        entries before, the timers after, the population tallies inside. Users whose events
        were all skipped (a replay of what was applied) are not scored: nothing about them
        changed."""
        folded = part.states
        states = {u: s for u, s in folded.items() if u in part.applied or u in decisions.due}
        users, scoring = list(states), list(states.values())
        now = [self.store.watermark(s.partition) for s in scoring]
        timer = [u in decisions.due for u in users]
        scored = self.engine.score(
            self.sync.params,
            users,
            scoring,
            now,
            timer,
            learn_share=decisions.learn_share,
            reassign=decisions.swept,
        )
        # A user folded again after a refused write: its earlier change never happened.
        redone = [u for u in folded if decisions.changes.pop(u, None) is not None]
        fresh: dict[str, list[Published]] = {}
        for change in scored.changes:
            partition = states[change.user_id].partition
            # No send time in the value: a change sent again (a retry, a new owner) must be
            # the same bytes; when it was sent is the record's own timestamp.
            value = orjson.dumps(change.payload)
            fresh.setdefault(change.user_id, []).append((partition, value, change))
        decisions.changes.update(fresh)
        before = self._outbox_commands(decisions, fresh, rewrite=bool(redone))
        for user, state in states.items():
            decisions.scored[user] = (state.partition, scored.due.get(user, 0))
        decisions.samples.samples.extend(scored.samples)
        decisions.samples.labels.extend(scored.labels)
        decisions.samples.spend_labels.extend(scored.spend_labels)
        decisions.samples.baskets.extend(scored.baskets)
        due = ((states[u].partition, u, scored.due.get(u, 0)) for u in users)
        return Around(before, self._timers.schedule_commands(due), scored.tallies)

    def _outbox_commands(
        self, decisions: _Decisions, fresh: dict[str, list[Published]], *, rewrite: bool
    ) -> list[Command]:
        """The slice's changes for the outbox; after a refused write, every change of the batch
        so far is written again and what was written before is dropped (some of it is untrue)."""
        if not rewrite:
            commands, written = self._outbox.add_commands(
                _entries(_flat(fresh.values()), decisions.last_offsets)
            )
            decisions.outbox += written
            return commands
        return self._rewrite_outbox(decisions)

    def _rewrite_outbox(self, decisions: _Decisions) -> list[Command]:
        """Commands that replace what the batch put in the outbox so far by its changes now
        (the old entries go first: an entry that stays the same is written again after)."""
        everything = _entries(_flat(decisions.changes.values()), decisions.last_offsets)
        commands = self._outbox.remove_commands(decisions.outbox)
        added, decisions.outbox = self._outbox.add_commands(everything)
        return commands + added

    def _drop_erased(self, applied: Applied, decisions: _Decisions) -> None:
        """Users erased by another process while this one held them (cached) were scored, but
        their writes were refused: nothing decided about them may go out, nor stay in the
        outbox (one more round trip, only then)."""
        gone = [user for user in decisions.changes if user not in applied.states]
        if not gone:
            return
        for user in gone:
            del decisions.changes[user]
        self._outbox.execute(self._rewrite_outbox(decisions))

    def _after(self, applied: Applied, decisions: _Decisions) -> None:
        """Work after the batch is stored; it must not fail the batch, whose changes are only
        returned once this is done."""
        scored = {u: v for u, v in decisions.scored.items() if u in applied.states}
        for partition, offset in decisions.last_offsets.items():
            self._positions[partition] = max(offset, self._positions.get(partition, 0))
        self._staged += [(p, v) for p, v in decisions.outbox if p not in decisions.in_batch]
        try:
            self._sweep.done()
            # A due user without a state now (erased, expired) needs no timer any more.
            gone = ((p, u, 0) for u, p in decisions.due.items() if u not in applied.states)
            self._timers.schedule(gone)
            if decisions.in_batch:  # between records an instance does not learn or publish
                self.sync.learn(decisions.samples, decisions.watermarks)
        except TransientError as exc:
            logger.warning("model or timer upkeep skipped for a batch: %s", exc)
        self.resolved = decisions.samples.labels
        self.resolved_spend = decisions.samples.spend_labels
        self.decided = [change for _, _, change in _flat(decisions.changes.values())]
        for label in self.resolved:
            self.quality.update(label.bought, label.propensity)
            metrics.LABELS_RESOLVED.labels("bought" if label.bought else "not_bought").inc()
        self._account(applied, decisions, scored)

    def _account(
        self, applied: Applied, decisions: _Decisions, scored: dict[str, tuple[int, int]]
    ) -> None:
        metrics.EVENTS_APPLIED.inc(applied.applied)
        metrics.WRITES_REFUSED.inc(applied.refused)
        metrics.REDIS_REDIRECTS.inc(self.store.redirects - self._redirects)
        self._redirects = self.store.redirects
        metrics.EVENTS_SKIPPED.labels("duplicate").inc(applied.duplicates)
        metrics.EVENTS_SKIPPED.labels("erased").inc(applied.erased)
        # Of the users scored and stored: a due user may have had no state left to store.
        due = [u for u in scored if u in decisions.due]
        timers = len([u for u in due if u not in decisions.swept])
        metrics.TIMERS_FIRED.inc(timers)
        metrics.USERS_SCORED.labels("timer").inc(timers)
        metrics.USERS_SCORED.labels("event").inc(len(scored) - len(due))
        moves: Counter[tuple[str, str]] = Counter()
        memberships: Counter[tuple[str, str, str]] = Counter()
        for change in self.decided:
            if change.kind == SEGMENT:
                moves[change.previous or "(new)", change.current] += 1
            else:
                way = "left" if change.previous else "entered"
                memberships[change.kind, change.current, way] += 1
        for (before, after), count in moves.items():
            metrics.SEGMENT_CHANGES.labels(before, after).inc(count)
        for (kind, name, way), count in memberships.items():
            counter = metrics.MEMBERSHIP_CHANGES if kind == MEMBERSHIP else metrics.AUDIENCE_CHANGES
            counter.labels(name, way).inc(count)
        if self.quality.both_outcomes():
            metrics.PROPENSITY_AUC.set(self.quality.roc_auc())
            metrics.PROPENSITY_LOG_LOSS.set(self.quality.mean_log_loss())
        metrics.TRAINER.set(int(self.sync.trainer))

    def _message(self, change: Change, value: bytes) -> OutMessage:
        return change_message(self._topic, change.user_id, value)

    def _recover(self, batch: Batch) -> list[OutMessage]:
        """Publish again what the outbox holds: of newly assigned partitions, from the committed
        offset on (the previous owner's unpublished changes; older entries are committed and
        dropped), at the first batch after the assignment, with events or without; on the retry
        of a failed batch, from the batch's first offsets on (entries of the failed attempt;
        older ones are kept, they may not be committed yet), and of partitions it had no events
        of, from the committed offset (its swept users' changes)."""
        if not self._recovering and not self._retrying:
            return []
        firsts: dict[int, int] = {}
        for partition, offset in zip(batch.partitions, batch.offsets, strict=True):
            firsts.setdefault(partition, offset)
        firsts = self._positions | firsts
        assigned = {p: firsts.get(p, 0) for p in self._recovering}
        retried = {p: firsts.get(p, 0) for p in self._retrying if p not in assigned}
        entries = self._outbox.unpublished(assigned, trim=True)
        entries += self._outbox.unpublished(retried, trim=False)
        # Of partitions without events here, no commit will drop them: they go once delivered.
        in_batch = set(batch.partitions)
        self._staged += [(p, blob) for p, blob in entries if p not in in_batch]
        values = [value for _, blob in entries for value in blob.split(b"\n")]
        metrics.CHANGES_REPUBLISHED.inc(len(values))
        return [change_message(self._topic, str(orjson.loads(v)["user_id"]), v) for v in values]

    def partitions_assigned(self, partitions: Sequence[int]) -> None:
        if self._census is not None:
            self._census.own(partitions)
        self.store.partitions_assigned(partitions)
        self._timers.forget(partitions)
        self._sweep.partitions_assigned(partitions)
        self._recovering.update(partitions)

    def partitions_revoked(self, partitions: Sequence[int]) -> None:
        if self._census is not None:
            self._census.disown(partitions)
        self.store.partitions_revoked(partitions)
        self._timers.forget(partitions)
        self._sweep.partitions_revoked(partitions)
        for partition in partitions:
            self._positions.pop(partition, None)
        self._recovering.difference_update(partitions)
        self._retrying.difference_update(partitions)
        if self._guard is not None:
            self._guard.forget(partitions)

    def check_origin(self, origin: Origin) -> None:
        for partition in origin.assigned:
            self._positions[partition] = origin.committed.get(partition, 0)
        if self._guard is not None:
            self.engine.epoch = self._guard.check(origin)

    def committing(self, next_offsets: dict[int, int]) -> None:
        if self._guard is not None:
            self._guard.record(next_offsets)

    def committed(self, next_offsets: dict[int, int]) -> None:
        for partition, offset in next_offsets.items():
            self._positions[partition] = max(offset, self._positions.get(partition, 0))
        self._outbox.committed(next_offsets)

    def delivered(self) -> None:
        """Called by the loop once the messages of an empty batch, and so of every batch
        before it, are delivered: the entries no commit drops can go."""
        if self._off_batch:
            self._outbox.remove(self._off_batch)
            self._off_batch = []

    def close(self) -> None:
        if self._census is not None:
            self._census.close()
        self.sync.close()


def change_message(topic: str, user_id: str, value: bytes) -> OutMessage:
    """A change as the segments topic carries it: keyed by user, its JSON value typed."""
    return OutMessage(topic, user_id.encode(), value, list(CHANGE_HEADERS))


def _flat(groups: Iterable[list[Published]]) -> Iterator[Published]:
    for group in groups:
        yield from group


def _entries(
    changes: Iterable[Published], last_offsets: dict[int, int]
) -> dict[int, tuple[int, list[bytes]]]:
    """Outbox entries by partition, each at the last offset of its partition in the batch."""
    entries: dict[int, tuple[int, list[bytes]]] = {}
    for partition, value, _ in changes:
        entries.setdefault(partition, (last_offsets.get(partition, 0), []))[1].append(value)
    return entries


def _last_offsets(batch: Batch) -> dict[int, int]:
    last: dict[int, int] = {}
    for partition, offset in zip(batch.partitions, batch.offsets, strict=True):
        last[partition] = max(offset, last.get(partition, -1))
    return last


def _observe_redis(call: str, seconds: float) -> None:
    metrics.REDIS_SECONDS.labels(call).observe(seconds)


def private(events: Sequence[Event], pseudonymize: Callable[[str], str] | None) -> Sequence[Event]:
    """The events with pseudonymous user ids, when a key is configured."""
    if pseudonymize is None:
        return events
    replace = msgspec.structs.replace
    return [replace(e, user_id=pseudonymize(e.user_id)) for e in events]


def late_rejection(index: int, event: Event, rules: Rules) -> Rejection:
    lateness_s = rules.lateness_ms / 1000
    message = f"ts={event.ts_ms} is more than {lateness_s:g}s behind its partition's watermark"
    return Rejection(index, "late", InvalidEvent("late", "LateEvent", message))
