"""The only module that talks to Redis about features: fenced per-user state, effectively once.

Each user's state is one string key: a 10-digit version, then the msgpack `UserState`. The owner of
a partition keeps its users' states in memory; for a batch it reads the users it does not hold
(one pipelined read), folds each user's events in Python with `features.definitions.decide`
(fence, duplicate ids, lateness), and writes every changed user back with one Lua compare-and-set
per user, pipelined: the write lands only if the version is still the one it read. A zombie
instance or a stale cache therefore cannot count twice: its write is refused, it reads the state
again and the fence skips what was already applied. Redis round trips per round: at most one read
(cache misses), one write; on a Redis Cluster, one of each per primary (`features.cluster`).

A batch goes through the store in steps its caller runs (see `apply` for the plainest caller):
`batch` opens it, `fold` reads and folds one slice of users at a time, `pack` turns a slice and
what the caller adds to it into commands, `write` sends them (while later slices are still being
folded) and leaves the users whose write was refused in `pending`, for another round.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import islice
from typing import Any, Final, NamedTuple

import msgspec
import redis
from redis.cluster import RedisCluster

from features import keys, resp, tallies
from features.cluster import Command
from features.definitions import (
    APPLIED,
    LATE,
    Rules,
    UserState,
    Value,
    compute_features,
    decide,
    prune,
)
from features.errors import ConflictError, ScriptsReloadedError, StoreUnavailableError
from features.events import Event
from features.layout import Layout

logger = logging.getLogger(__name__)

# A user's state is one string: a 10-digit version, then the msgpack `UserState`.
VERSION_DIGITS: Final = 10
# KEYS: state, erasure marker[, tallies hash]. ARGV: expected version ("" for a new user),
# version + state, ttl seconds (0: none)[, field, delta, ...]. Returns 1 when written, 0 when the
# version moved, -1 when erased. The tallies move only with a write that lands, so a retried or
# refused write never counts twice.
_WRITE = """
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
if redis.call('GETRANGE', KEYS[1], 0, 9) ~= ARGV[1] then return 0 end
if ARGV[3] == '0' then
  redis.call('SET', KEYS[1], ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
end
for i = 4, #ARGV, 2 do redis.call('HINCRBY', KEYS[3], ARGV[i], ARGV[i + 1]) end
return 1
"""
# KEYS: watermarks hash. ARGV: partition, ms, partition, ms, ... Raises each to at least ms.
_RAISE_WATERMARKS = """
for i = 1, #ARGV, 2 do
  local current = tonumber(redis.call('HGET', KEYS[1], ARGV[i])) or 0
  if tonumber(ARGV[i + 1]) > current then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
return 1
"""
MAX_CONFLICT_ROUNDS: Final = 5
# A state written after its TTL ran out in event time (an old event applied late) still lives
# this long, so the write is not lost before it can be read.
MIN_TTL_S: Final = 3_600
# Users folded per slice: a slice's writes are sent while the next slice is folded.
FOLD_SLICE: Final = 1_000
_WRITE_ARGS: Final = b"%b" + b"$%d\r\n%b\r\n" * 5


class Around(NamedTuple):
    """What the caller adds to a slice's writes: packed commands before and after them, and per
    user the tallies (field, delta) that move with that user's write."""

    before: list[Command]
    after: list[Command]
    tallies: dict[str, list[tuple[str, int]]]


# The tallies a stored state counts in (field, delta), to undo them when the user is erased.
TalliesOf = Callable[[UserState], list[tuple[str, int]]]

NOTHING_AROUND: Final = Around([], [], {})

_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(UserState).decode


@dataclass
class Cached:
    version: int
    state: UserState


@dataclass
class Applied:
    """What a batch did: each touched user's state (to score) and the events that were late."""

    states: dict[str, UserState] = field(default_factory=dict)
    late: list[int] = field(default_factory=list)
    duplicates: int = 0
    erased: int = 0
    applied: int = 0
    missing: list[str] = field(default_factory=list)
    refused: int = 0  # writes another writer's change refused (re-read and retried)


@dataclass(frozen=True)
class Folded:
    """One slice of a round's users, folded and not written yet. `states` may still be changed
    (the caller's record goes into the same compare-and-set); `applied` are the users that
    applied at least one event (the others only saw duplicates, late events or none)."""

    entries: dict[str, Cached]
    outcomes: dict[str, list[int]]  # per user, of each of its events (APPLIED, LATE, ...)
    applied: set[str]

    @property
    def states(self) -> dict[str, UserState]:
        return {user: cached.state for user, cached in self.entries.items()}


@dataclass
class Packed:
    """A slice's commands: the caller's before, one write per user, the caller's after."""

    folded: Folded
    commands: list[Command]
    first_write: int  # index in `commands` of the first user's write


@dataclass
class BatchInStore:
    """A batch between `FeatureStore.batch` and its end: the events by user, the watermark
    before each event, what the rounds so far applied, and the users still to write."""

    events: Sequence[Event]
    partitions: Sequence[int]
    offsets: Sequence[int]
    befores: Sequence[int]  # the partition watermark before each event
    by_user: dict[str, list[int]]
    pending: list[str]  # every user at first; after a round, those whose write was refused
    applied: Applied = field(default_factory=Applied)


class FeatureStore:
    def __init__(
        self,
        client: resp.Client,
        prefix: str,
        rules: Rules | None = None,
        *,
        ttl_s: int = 365 * 86_400,
        cache_users: int = 200_000,
    ) -> None:
        self._redis = client
        self._pipe = resp.pipe_for(client)
        self._prefix = prefix
        self.rules = rules or Rules()
        self._cache_users = cache_users
        self._cache: OrderedDict[str, Cached] = OrderedDict()
        self._watermarks: dict[int, int] = {}
        self._write = client.register_script(_WRITE)
        self._raise_watermarks = client.register_script(_RAISE_WATERMARKS)
        self._write_head = resp.evalsha_prefix(self._write.sha, 2, 3)
        self._tallied_forms: dict[int, tuple[bytes, bytes]] = {}  # per tally count
        self._tallies_key = tallies.key_of(client, prefix)
        self._ttl_s = ttl_s
        self._scripts_loaded = False
        # Pipelined requests sent to Redis by `apply` (each is one network round trip).
        self.round_trips = 0
        self.writes = 0  # users' compare-and-sets sent, all time
        # Told the seconds of each round trip by kind ("read", "write"), for metrics.
        self.observe: Callable[[str, float], None] = _ignore

    # -- ownership ---------------------------------------------------------------------------

    def partitions_assigned(self, partitions: Sequence[int]) -> None:
        """Watermarks of new partitions are read on their first batch (Redis may be away now)."""
        for partition in partitions:
            self._watermarks.pop(partition, None)

    def partitions_revoked(self, partitions: Sequence[int]) -> None:
        gone = set(partitions)
        for partition in gone:
            self._watermarks.pop(partition, None)
        for user in [u for u, c in self._cache.items() if c.state.partition in gone]:
            del self._cache[user]

    @property
    def client(self) -> resp.Client:
        return self._redis

    @property
    def node_round_trips(self) -> int:
        """Pipelined round trips of reads and writes to each server (a cluster: each node)."""
        return self._pipe.trips

    @property
    def redirects(self) -> int:
        """Commands a Redis Cluster had sent again elsewhere while its slots moved, all time."""
        return self._pipe.redirects

    @property
    def redis_url(self) -> str:
        """Where the store is, for messages (the password, if any, is not shown)."""
        return redis_address(self._redis)

    # -- the batch ---------------------------------------------------------------------------

    def apply(
        self,
        events: Sequence[Event],
        partitions: Sequence[int],
        offsets: Sequence[int],
        *,
        extra_users: Sequence[str] = (),
    ) -> Applied:
        """Fold a batch into Redis with nothing beside the features (tools, tests): the steps
        a batch goes through, with no record of the caller's in the writes."""
        with self.batch(events, partitions, offsets, extra_users=extra_users) as batch:
            for _ in range(MAX_CONFLICT_ROUNDS):
                self.write(batch, (self.pack(part, NOTHING_AROUND) for part in self.fold(batch)))
                if not batch.pending:
                    return batch.applied
            raise conflict(batch)

    @contextmanager
    def batch(
        self,
        events: Sequence[Event],
        partitions: Sequence[int],
        offsets: Sequence[int],
        *,
        extra_users: Sequence[str] = (),
    ) -> Iterator[BatchInStore]:
        """Open a batch: the watermarks move past its events. `extra_users` are written back
        without events (a timer re-scores them); one that has no stored state is left out and
        listed in `Applied.missing`. If the block fails, nothing of the batch is kept in memory
        either (watermarks, cached states); Redis keeps what was written, fenced."""
        self.load_watermarks(partitions)
        saved_watermarks = dict(self._watermarks)
        befores = self._advance_watermarks(events, partitions)
        by_user: dict[str, list[int]] = {}
        for index, event in enumerate(events):
            by_user.setdefault(event.user_id, []).append(index)
        for user in extra_users:
            by_user.setdefault(user, [])
        try:
            yield BatchInStore(events, partitions, offsets, befores, by_user, list(by_user))
        except BaseException:
            self._watermarks = saved_watermarks
            for user in by_user:
                self._cache.pop(user, None)
            raise
        self._trim_cache()

    def fold(self, batch: BatchInStore) -> Iterator[Folded]:
        """Start a round: read the pending users the cache lacks (one round trip), then fold
        them a slice at a time, lazily, in place (every path that does not persist a state
        drops it from the cache)."""
        current = self._writable(self._states_of(batch), batch)
        users = list(current)
        for start in range(0, len(users), FOLD_SLICE):
            part = {u: current[u] for u in users[start : start + FOLD_SLICE]}
            outcomes = {u: self._fold_one(batch, cached.state, u) for u, cached in part.items()}
            applied = {u for u, done in outcomes.items() if APPLIED in done}
            yield Folded(part, outcomes, applied)

    def pack(self, folded: Folded, around: Around) -> Packed:
        """A folded slice's commands, with what the caller adds around the writes."""
        entries = folded.entries
        writes = [self._write_call(u, c, around.tallies.get(u)) for u, c in entries.items()]
        self.writes += len(writes)
        commands = [*around.before, *writes, *around.after]
        return Packed(folded, commands, len(around.before))

    def write(self, batch: BatchInStore, slices: Iterable[Packed]) -> None:
        """Send the slices' commands as they come (Redis runs the first writes while later
        slices are folded), then settle the compare-and-sets: `batch.pending` keeps the users
        whose write was refused."""
        sent: list[Packed] = []

        def commands() -> Iterator[Command]:
            for packed in slices:
                sent.append(packed)
                yield from packed.commands
            yield self._watermarks_call(set(batch.partitions))

        replies = self._raw("write", commands())
        batch.pending = []
        start = 0
        for packed in sent:
            first = start + packed.first_write
            written = replies[first : first + len(packed.folded.entries)]
            batch.pending += self._settle(packed.folded, written, batch)
            start += len(packed.commands)

    def watermark(self, partition: int) -> int:
        """The partition's event-time watermark as this instance knows it (0: none yet)."""
        return self._watermarks.get(partition, 0)

    def load_watermarks(self, partitions: Sequence[int]) -> None:
        """Read the watermarks of partitions not seen yet (one round trip, if any)."""
        missing = sorted(set(partitions) - self._watermarks.keys())
        if not missing:
            return
        self.round_trips += 1
        stored = self._call(self._redis.hmget, keys.watermarks(self._prefix), missing)
        for partition, value in zip(missing, stored, strict=True):
            self._watermarks[partition] = int(value or 0)

    def _advance_watermarks(self, events: Sequence[Event], partitions: Sequence[int]) -> list[int]:
        marks = self._watermarks
        befores = []
        for event, partition in zip(events, partitions, strict=True):
            before = marks.get(partition, 0)
            befores.append(before)
            if event.ts_ms > before:
                marks[partition] = event.ts_ms
        return befores

    @staticmethod
    def _writable(current: dict[str, Cached], batch: BatchInStore) -> dict[str, Cached]:
        """A user without events and without a stored state is not created."""
        missing = [u for u, c in current.items() if not c.version and not batch.by_user[u]]
        batch.applied.missing.extend(missing)
        for user in missing:
            del current[user]
        return current

    def _fold_one(self, batch: BatchInStore, state: UserState, user: str) -> list[int]:
        events, partitions, offsets, befores = (
            batch.events, batch.partitions, batch.offsets, batch.befores,
        )  # fmt: skip
        rules = self.rules
        outcomes = [
            decide(state, events[i], partitions[i], offsets[i], befores[i], rules)
            for i in batch.by_user[user]
        ]
        prune(state, self._watermarks.get(state.partition, 0), rules)
        return outcomes

    def _states_of(self, batch: BatchInStore) -> dict[str, Cached]:
        """The pending users' states: cached ones, the rest read in one round trip; erased users
        are left out and counted."""
        users = batch.pending
        found = {u: c for u in users if (c := self._cache.get(u)) is not None}
        for user, cached in self._load([u for u in users if u not in found]).items():
            if cached is None:
                batch.applied.erased += len(batch.by_user[user])
            else:
                found[user] = cached
        return found

    def _settle(self, folded: Folded, replies: list[Any], batch: BatchInStore) -> list[str]:
        """Account a slice's compare-and-set replies; return the users whose write was refused."""
        conflicts = []
        cache = self._cache
        result = batch.applied
        for (user, cached), written in zip(folded.entries.items(), replies, strict=True):
            outcomes = folded.outcomes[user]
            if written == 1:
                cached.version += 1
                cache[user] = cached
                cache.move_to_end(user)
                self._account(result, cached.state, user, outcomes, batch.by_user[user])
                continue
            self._cache.pop(user, None)
            if written == 0:
                conflicts.append(user)
                result.refused += 1
            else:
                result.erased += len(outcomes)
        return conflicts

    def _account(
        self, result: Applied, state: UserState, user: str, outcomes: list[int], indexes: list[int]
    ) -> None:
        result.states[user] = state
        applied = outcomes.count(APPLIED)
        result.applied += applied
        if applied == len(outcomes):
            return
        late = [index for outcome, index in zip(outcomes, indexes, strict=True) if outcome == LATE]
        result.late.extend(late)
        result.duplicates += len(outcomes) - applied - len(late)

    def _load(self, users: list[str]) -> dict[str, Cached | None]:
        """Read users' states (None for erased users) in one round trip."""
        if not users:
            return {}
        # Both keys share the user's hash tag, so one MGET reads them (also on Redis Cluster).
        pairs = [(self._key(u), self._erased_key(u)) for u in users]
        calls = ((state, resp.command(b"MGET", state, erased)) for state, erased in pairs)
        replies = self._raw("read", calls)
        return {
            user: None if erased else _cached(value)
            for user, (value, erased) in zip(users, replies, strict=True)
        }

    def _write_call(
        self, user: str, cached: Cached, moved: list[tuple[str, int]] | None = None
    ) -> Command:
        """One packed EVALSHA of the compare-and-set, formatted in one go (hot path)."""
        state_key = self._key(user)
        erased_key = self._erased_key(user)
        expected = _version(cached.version)
        value = b"%010d%b" % (cached.version + 1, _encode(cached.state))
        ttl = self._ttl_of(cached.state)
        if moved:
            return state_key, self._tallied_call(
                moved, (state_key, erased_key, self._tallies_key(state_key), expected, value, ttl)
            )
        return state_key, _WRITE_ARGS % (
            self._write_head,
            len(state_key), state_key,
            len(erased_key), erased_key,
            len(expected), expected,
            len(value), value,
            len(ttl), ttl,
        )  # fmt: skip

    def _tallied_call(self, moved: list[tuple[str, int]], parts: tuple[bytes, ...]) -> bytes:
        """The compare-and-set with tallies that move with it (about two thirds of a new
        stream's writes): a head and a template per tally count, one `%` format (a third of
        what hiredis's packing costs here)."""
        form = self._tallied_forms.get(len(moved))
        if form is None:
            head = resp.evalsha_prefix(self._write.sha, 3, 3 + 2 * len(moved))
            template = b"%b" + b"$%d\r\n%b\r\n" * (len(parts) + 2 * len(moved))
            form = self._tallied_forms[len(moved)] = (head, template)
        flat: list[bytes | int] = [form[0]]
        for part in parts:
            flat += (len(part), part)
        for name, delta in moved:
            field, count = name.encode(), b"%d" % delta
            flat += (len(field), field, len(count), count)
        return form[1] % tuple(flat)

    def _ttl_of(self, state: UserState) -> bytes:
        """Seconds the state is kept after this write: the TTL counts from the user's last
        event in event time, so re-scoring a quiet user does not keep them for ever."""
        if not self._ttl_s:
            return b"0"
        idle_s = (self._watermarks.get(state.partition, 0) - state.last_seen) // 1000
        return b"%d" % max(MIN_TTL_S, self._ttl_s - max(idle_s, 0))

    def _key(self, user: str) -> bytes:
        return keys.state(self._prefix, user).encode()

    def _erased_key(self, user: str) -> bytes:
        return keys.erased(self._prefix, user).encode()

    def _raw(self, call: str, commands: Iterable[Command]) -> list[Any]:
        """Run packed script calls; missing scripts (Redis restarted) are loaded, then the
        batch fails as transient so the loop retries it, at once, from a clean cache. `observe` gets
        the call's seconds; the writes' include the folding and scoring that overlap them."""
        if not self._scripts_loaded:
            self._load_scripts()
        self.round_trips += 1
        started = time.perf_counter()
        results: list[Any] = self._call(self._pipe.execute, commands)
        self.observe(call, time.perf_counter() - started)
        errors = [r for r in results if isinstance(r, redis.ResponseError)]
        if not errors:
            return results
        self._scripts_loaded = False
        msg = f"{len(errors)} script calls failed, first: {errors[0]}"
        if all(isinstance(e, redis.exceptions.NoScriptError) for e in errors):
            self._load_scripts()
            raise ScriptsReloadedError(msg)
        raise StoreUnavailableError(msg)

    def _load_scripts(self) -> None:
        for script in (self._write, self._raise_watermarks):
            self._call(self._redis.script_load, script.script)
        self._scripts_loaded = True

    def _trim_cache(self) -> None:
        """Evict the least recently written users beyond the cache size (after a batch, so a
        batch never loses the states it is working on)."""
        while len(self._cache) > self._cache_users:
            self._cache.popitem(last=False)

    def _watermarks_call(self, partitions: set[int]) -> Command:
        """The packed call that raises the stored watermarks of `partitions` to ours."""
        args: list[bytes] = []
        for partition in sorted(partitions):
            args += [b"%d" % partition, b"%d" % self._watermarks.get(partition, 0)]
        sha = self._raise_watermarks.sha.encode()
        key = keys.watermarks(self._prefix).encode()
        return key, resp.command(b"EVALSHA", sha, b"1", key, *args)

    # -- reads and erasure -------------------------------------------------------------------

    def peek(self, users: Sequence[str]) -> dict[str, UserState]:
        """Users' current states, to look at and not change: cached ones, the others read in
        one round trip (and cached, as a batch would). Unknown and erased users are left out."""
        found = {u: c.state for u in users if (c := self._cache.get(u)) is not None}
        for user, cached in self._load([u for u in users if u not in found]).items():
            if cached is not None and cached.version:
                self._cache[user] = cached
                found[user] = cached.state
        return found

    def state(self, user_id: str) -> UserState | None:
        pipe = self._redis.pipeline(transaction=False)
        pipe.get(keys.state(self._prefix, user_id))
        pipe.exists(keys.erased(self._prefix, user_id))
        value, erased = self._call(pipe.execute)
        return None if erased or not value else _cached(value).state

    def profile(self, user_id: str) -> dict[str, Any] | None:
        """The user's features as of their partition's watermark, or None if unknown or erased."""
        state = self.state(user_id)
        if state is None:
            return None
        return self.describe(user_id, state, self.stored_watermarks())

    def profiles(self, batch: int = 500) -> Iterator[dict[str, Any]]:
        """Every stored user's profile (SCAN, so it walks a live keyspace without blocking it)."""
        marks = self.stored_watermarks()
        for user, state in self.states(batch):
            yield self.describe(user, state, marks)

    def states(self, batch: int = 500) -> Iterator[tuple[str, UserState]]:
        """Every stored user's state, `batch` keys per SCAN step and read."""
        pattern = keys.state_pattern(self._prefix)
        # A cluster client's scan walks every primary in turn.
        found = self._call(self._redis.scan_iter, match=pattern, count=batch)
        while page := self._call(lambda: list(islice(found, batch))):
            users = [u for key in page if (u := keys.user_of(self._prefix, resp.text(key)))]
            reads = [(key, resp.command(b"GET", key)) for key in map(self._key, users)]
            for user, value in zip(users, self._call(self._pipe.execute, reads), strict=True):
                if value:
                    yield user, _cached(value).state

    def describe(self, user_id: str, state: UserState, marks: dict[int, int]) -> dict[str, Any]:
        now = as_of(state, marks)
        features: dict[str, Value] = compute_features(state, now, self.rules.windows)
        # The layers above read their own record (opaque here) from `segment`.
        return {"user_id": user_id, "as_of": now, "features": features, "segment": state.segment}

    def stored_watermarks(self) -> dict[int, int]:
        raw = self._call(self._redis.hgetall, keys.watermarks(self._prefix))
        return {int(p): int(ms) for p, ms in raw.items()}

    def forget(self, user_id: str, tallies_of: TalliesOf | None = None) -> bool:
        """Delete every key of the user and record the erasure; True if there was data.
        `tallies_of(state)` names the tallies the stored state counts in; they are undone in
        the same transaction (watched, so a concurrent write makes it start over)."""
        state_key = keys.state(self._prefix, user_id)

        def erase(pipe: redis.client.Pipeline) -> None:
            stored = pipe.get(state_key) if tallies_of else None
            pipe.multi()
            pipe.delete(*keys.user_keys(self._prefix, user_id))
            pipe.set(keys.erased(self._prefix, user_id), 1)
            if isinstance(stored, bytes) and stored and tallies_of:
                tallies_key = self._tallies_key(state_key.encode())
                for name, delta in tallies_of(_cached(stored).state):
                    pipe.hincrby(tallies_key, name, -delta)

        self._cache.pop(user_id, None)
        replies = self._call(self._redis.transaction, erase, state_key)
        return bool(replies[0])

    def is_erased(self, user_id: str) -> bool:
        return bool(self._call(self._redis.exists, keys.erased(self._prefix, user_id)))

    def publish_layout(self, layout: Layout) -> bytes | None:
        """Write the layout record readers compute features with (`features.layout`); a plain
        SET, so every start may write it. Returns the record stored before, if any."""
        key = keys.layout(self._prefix)
        pipe = self._redis.pipeline(transaction=False)
        pipe.get(key)
        pipe.set(key, layout.encode())
        before, _ = self._call(pipe.execute)
        return before or None

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return guarded(fn, *args, **kwargs)


class Read(NamedTuple):
    """What `read_users` found: the layout record (None: there is none), each user's state in
    the order asked (None: unknown or erased), and the partitions' watermarks."""

    layout: bytes | None
    states: list[UserState | None]
    watermarks: dict[int, int]


def read_users(pipe: resp.Sender, prefix: str, users: Sequence[str]) -> Read:
    """Users' states for a reader that holds no store, in one round trip (per node of a Redis
    Cluster): the layout record, every user's state and erasure marker (one MGET per user: its
    keys share a slot), and the watermarks."""
    layout_key, marks_key = keys.layout(prefix).encode(), keys.watermarks(prefix).encode()
    commands = [(layout_key, resp.command(b"GET", layout_key))]
    commands.append((marks_key, resp.command(b"HGETALL", marks_key)))
    for user in users:
        state, erased = keys.state(prefix, user).encode(), keys.erased(prefix, user).encode()
        commands.append((state, resp.command(b"MGET", state, erased)))
    layout, marks, *values = guarded(pipe.execute, commands)
    for reply in (layout, marks, *values):
        if isinstance(reply, redis.ResponseError):
            msg = f"redis refused a read: {reply}"
            raise StoreUnavailableError(msg)
    states = [None if erased or not value else _cached(value).state for value, erased in values]
    return Read(layout, states, {int(p): int(ms) for p, ms in resp.hash_items(marks)})


def as_of(state: UserState, marks: dict[int, int]) -> int:
    """The event time a stored user's features are read at: their partition's watermark."""
    return marks.get(state.partition, state.last_seen)


def guarded(fn: Any, *args: Any, **kwargs: Any) -> Any:
    """Call redis-py; a Redis that does not answer or refuses raises StoreUnavailableError."""
    try:
        return fn(*args, **kwargs)
    except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
        msg = f"redis unavailable: {exc}"
        raise StoreUnavailableError(msg) from exc
    except redis.ResponseError as exc:
        msg = f"redis refused a call: {exc}"
        raise StoreUnavailableError(msg) from exc


def redis_address(client: resp.Client) -> str:
    """Where a client connects, for messages (the password, if any, is not shown)."""
    if isinstance(client, RedisCluster):
        node = client.get_default_node()  # type: ignore[no-untyped-call]
        return f"redis cluster at {node.host}:{node.port}" if node else "redis cluster"
    kwargs = client.connection_pool.connection_kwargs
    if "path" in kwargs:
        return f"unix://{kwargs['path']}"
    return f"redis://{kwargs.get('host')}:{kwargs.get('port')}/{kwargs.get('db', 0)}"


def _ignore(call: str, seconds: float) -> None:
    """No one listens to the store's timings."""


def _version(version: int) -> bytes:
    """The version prefix as stored; a user never written has none."""
    return b"%010d" % version if version else b""


def _cached(value: bytes | None) -> Cached:
    if not value:
        return Cached(0, UserState())
    return Cached(int(value[:VERSION_DIGITS]), _decode(value[VERSION_DIGITS:]))


def conflict(batch: BatchInStore) -> ConflictError:
    """The error when users kept changing under us for every round a caller allows."""
    msg = f"{len(batch.pending)} users kept changing under us after {MAX_CONFLICT_ROUNDS} rounds"
    return ConflictError(msg)
