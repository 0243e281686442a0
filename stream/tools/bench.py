"""`segstream bench`: throughput and latency of the real pipeline, stage by stage, as JSON.

Stages: decode (in process); features (the feature store's `apply` against the real Redis,
no Kafka); produce (replay into a fresh topic); loop (consume → validate → checkpoint with no
handler work); pipeline (the loop with the feature stage: what `segstream run` does); reads
(point reads of the pipeline's users afterwards: the Python client, `GET /v1/users/{id}`);
latency (event time → handled by the pipeline, at an offered rate, after a warm-up).
Throughput is timed from the first record to the last batch, so group joins do not count. Runs
on the configured servers, or on local ones started the way `segstream demo` does.
"""

from __future__ import annotations

import http.client
import multiprocessing
import random
import statistics
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import msgspec
import orjson
from confluent_kafka import Producer
from redis.cluster import RedisCluster

from features.events import Event, decode_event
from features.store import FeatureStore
from stream.client import SegmentClient
from stream.kafka.handler import Batch, BatchHandler, NullHandler, Outcome, Passthrough
from stream.kafka.loop import Loop, RunSummary
from stream.kafka.topics import ensure_topics
from stream.ops import metrics
from stream.ops.health import Health, serve
from stream.service.segment_handler import SegmentHandler
from stream.service.wiring import build_handler, feature_store, read_api, redis_client
from stream.settings import ApiSettings, Settings, producer_config
from stream.tools.bench_processes import run_processes
from stream.tools.generate import generate
from stream.tools.local_servers import free_port, redis_cluster
from stream.tools.replay import Pacer, Pacing, Record, read_records, replay, replay_values
from stream.tools.servers import ensure_stack
from stream.tools.sizing import measured, memory_per_user, needs

SAMPLE_USERS = 2_000
WARMUP_S = 1.0
# Point reads after the pipeline run: single users, batches of users, and over HTTP.
READS = 10_000
READ_BATCH = 100
READ_BATCHES = 1_000
HTTP_READS = 2_000
T = TypeVar("T")


class EventLike(Protocol):
    def wait(self, timeout: float | None = None) -> bool: ...


START_MS = 1_767_225_600_000  # event times of bench events start here, 10 ms apart
# Events replayed before the latency run, so it measures users the service already knows.
LATENCY_USERS_EVENTS = 50_000


class LatencyProbe(Passthrough[BatchHandler]):
    """Wraps a handler and records, per event, wall time after handling minus event time.

    Events stamped before `measure_from_ms` are left out: the first fetches after an assignment
    (offset lookups, fetch sessions) take a few hundred ms once and are not steady-state latency.
    """

    def __init__(self, inner: BatchHandler) -> None:
        super().__init__(inner)
        self.latencies_ms: list[float] = []
        self.measure_from_ms = float("inf")

    def handle(self, batch: Batch) -> Outcome:
        outcome = self.inner.handle(batch)
        now_ms = time.time() * 1000
        start = self.measure_from_ms
        self.latencies_ms.extend(now_ms - e.ts_ms for e in batch.events if e.ts_ms >= start)
        return outcome


def run_bench(
    settings: Settings,
    *,
    events: int,
    users: int,
    latency_rate: float,
    latency_seconds: float,
    workdir: Path,
    cluster: bool = False,
    processes: int = 1,
) -> dict[str, object]:
    spread = _bench_values(_sample_values(workdir), events, users)
    sessions = _generated_values(workdir, users, 2 * events)
    figures: dict[str, object] = {"events": events, "users": users}
    figures["decode"] = _bench_decode(spread)
    with ExitStack() as resources:
        if cluster:
            settings = _on_cluster(settings, workdir, resources)
        stack = ensure_stack(settings, workdir, resources)
        figures["redis"] = _redis_figures(stack.settings)
        base = _fresh(stack.settings)
        figures["features"] = _bench_features(base, spread)
        figures["produce"], figures["loop"], figures["pipeline_spread"] = _bench_loops(base, spread)
        if processes > 1:
            figures["pipeline_spread_processes"] = run_processes(
                _fresh(stack.settings), spread, processes
            )
        pipeline_settings = _fresh(stack.settings)
        figures["pipeline"] = _bench_pipeline(pipeline_settings, sessions)
        figures["reads"] = _bench_reads(pipeline_settings, sessions)
        known = sessions[: min(len(sessions), LATENCY_USERS_EVENTS)]
        figures["latency_transport"] = _bench_latency(
            _fresh(stack.settings), known, latency_rate, latency_seconds, full=False
        )
        figures["latency"] = _bench_latency(
            _fresh(stack.settings), known, latency_rate, latency_seconds, full=True
        )
    pipeline, latency, worst = figures["pipeline"], figures["latency"], figures["pipeline_spread"]
    assert isinstance(pipeline, dict) and isinstance(latency, dict) and isinstance(worst, dict)
    return {
        "events_per_second": pipeline["events_per_second"],
        "worst_case_events_per_second": worst["events_per_second"],
        "p99_latency_ms": latency["p99_ms"],
        **figures,
        "sizing": _sizing(worst, pipeline),
    }


def _on_cluster(settings: Settings, workdir: Path, resources: ExitStack) -> Settings:
    """Settings on a Redis Cluster: the configured one, else 3 local primaries."""
    if settings.redis.cluster:
        return settings
    cluster = redis_cluster(workdir / "cluster")
    resources.callback(cluster.stop)
    redis = settings.redis.model_copy(update={"url": cluster.address, "cluster": True})
    return settings.model_copy(update={"redis": redis})


def _redis_figures(settings: Settings) -> dict[str, object]:
    client = redis_client(settings)
    primaries = len(client.get_primaries()) if isinstance(client, RedisCluster) else 1  # type: ignore[no-untyped-call]
    return {"cluster": settings.redis.cluster, "primaries": primaries}


def _sizing(worst: dict[str, Any], sessions: dict[str, Any]) -> dict[str, object]:
    """What 100k and 1M events/s need at the costs measured, worst case and sessions."""
    return {
        case: [needs(rate, costs["costs"]) for rate in (100_000, 1_000_000)]
        for case, costs in (("worst_case", worst), ("sessions", sessions))
    }


def _sample_values(workdir: Path) -> list[bytes]:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "sample.jsonl"
    generate(SAMPLE_USERS, 30, 1, path, workdir / "sample-personas.csv")
    return [record.value for record in read_records(path)]


def _generated_values(workdir: Path, users: int, events: int) -> list[bytes]:
    """The generator's stream for `users` users (sessions, event-time order), first `events`."""
    path = workdir / "stream.jsonl"
    # About 1.5 events per user per day come out of the personas; leave a margin.
    days = max(3.0, events / users / 1.2)
    generate(users, days, 2, path, workdir / "stream-personas.csv")
    values = []
    for record in read_records(path):
        values.append(record.value)
        if len(values) == events:
            break
    return values


def _bench_values(sample: Sequence[bytes], events: int, users: int) -> list[bytes]:
    """Worst case for per-user writes: each event goes to a random one of `users` users (so a
    batch's events belong to different users), with unique ids and increasing times."""
    rng = random.Random(7)
    values = []
    for i in range(events):
        event = orjson.loads(sample[i % len(sample)])
        event.update(event_id=f"b{i}", user_id=f"u{rng.randrange(users)}", ts=START_MS + i * 10)
        values.append(orjson.dumps(event))
    return values


def _bench_decode(values: Sequence[bytes]) -> dict[str, float]:
    now_ms = int(time.time() * 1000)
    started = time.perf_counter()
    for value in values:
        decode_event(value, now_ms=now_ms)
    elapsed = time.perf_counter() - started
    return {
        "events_per_second": round(len(values) / elapsed),
        "us_per_event": elapsed / len(values) * 1e6,
    }


def _fresh(settings: Settings) -> Settings:
    """Topics, group and key prefix of their own, so runs never see each other's data."""
    run = f"bench-{uuid.uuid4().hex[:8]}"
    kafka = settings.kafka.model_copy(update={"session_timeout_ms": 6000, "group_id": run})
    topics = settings.topics.model_copy(
        update={"events": f"{run}.events", "segments": f"{run}.segments", "dlq": f"{run}.dlq"}
    )
    ports = settings.metrics.model_copy(update={"port": 0})
    segments = settings.segments.signed()
    return settings.model_copy(
        update={
            "kafka": kafka,
            "topics": topics,
            "metrics": ports,
            "segments": segments,
            "key_prefix": run,
        }
    )


def _bench_features(settings: Settings, values: Sequence[bytes]) -> dict[str, object]:
    """The feature store alone: batches as the loop would hand them, against the real Redis."""
    now_ms = int(time.time() * 1000)
    decoded = [decode_event(v, now_ms=now_ms) for v in values]
    events = [e for e in decoded if isinstance(e, Event)]
    partitions = [hash(e.user_id) % settings.topics.partitions for e in events]
    store = feature_store(settings)
    size = settings.loop.batch_size
    batches = -(-len(events) // size)
    cold = _apply_all(store, events, partitions, 0, size)
    cold_trips = store.round_trips
    # The same users again, later: their states are now in this owner's cache.
    span = len(events) * 10
    later = [
        msgspec.structs.replace(e, event_id=f"w{e.event_id}", ts_ms=e.ts_ms + span) for e in events
    ]
    warm = _apply_all(store, later, partitions, len(events), size)
    return {
        "events_per_second": round(len(events) / cold),
        "warm_events_per_second": round(len(events) / warm),
        "batch_size": size,
        "redis_round_trips_per_batch": round(cold_trips / batches, 2),
        "redis_round_trips_per_batch_warm": round((store.round_trips - cold_trips) / batches, 2),
        "memory_usage_bytes_per_user": _memory_per_user(settings, (e.user_id for e in events)),
    }


def _apply_all(
    store: FeatureStore, events: Sequence[Event], partitions: Sequence[int], first: int, size: int
) -> float:
    """Seconds to apply `events` in loop-sized batches, offsets counting from `first`."""
    started = time.perf_counter()
    for start in range(0, len(events), size):
        end = start + size
        store.apply(events[start:end], partitions[start:end], range(first + start, first + end))
    return time.perf_counter() - started


def _memory_per_user(settings: Settings, user_ids: Iterable[str]) -> dict[str, object]:
    return memory_per_user(redis_client(settings), settings.key_prefix, user_ids)


def _bench_loops(
    settings: Settings, values: Sequence[bytes]
) -> tuple[dict[str, object], dict[str, object], dict[str, object]]:
    sent = replay_values(settings, values)
    produced: dict[str, object] = {
        "events_per_second": round(sent.sent / sent.elapsed_s),
        "errors": sent.errors,
    }
    bare = Loop(settings, NullHandler()).run(max_events=len(values))
    full = settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(update={"group_id": settings.kafka.group_id + "-f"}),
            "key_prefix": settings.key_prefix + "-f",
        }
    )
    spread = _run_pipeline(full, len(values))
    users = (orjson.loads(v)["user_id"] for v in values)
    spread["memory_usage_bytes_per_user"] = _memory_per_user(full, users)
    return produced, _loop_figures(bare), spread


def _bench_pipeline(settings: Settings, values: Sequence[bytes]) -> dict[str, object]:
    """The service over the generator's stream, replayed into a fresh topic first, in one run:
    its first half is `cold` (most users are new and get their first segment), its second half
    the steady state of a live service (users known and cached, changing segment now and
    then), timed from the batch that crossed the half to the last."""
    replay_values(settings, values)
    clock = BatchClock(build_handler(settings))
    try:
        with measured(clock.inner.store.client) as costs:
            summary = Loop(settings, clock).run(max_events=len(values))
    finally:
        clock.inner.close()
    half = len(values) // 2
    cold_changes = clock.changes_at(half)
    return {
        "events_per_second": round(clock.rate(half, len(values))),
        "segment_changes": _changes() - cold_changes,
        "model_version": clock.inner.sync.params.version,
        "cold": {
            "events_per_second": round(clock.rate(0, half)),
            "segment_changes": cold_changes - clock.changes_before,
        },
        "whole_run": _loop_figures(summary),
        "costs": costs.figures(summary.consumed, clock.inner.store.writes),
        "memory_usage_bytes_per_user": _memory_per_user(
            settings, (orjson.loads(v)["user_id"] for v in values)
        ),
    }


def _bench_reads(settings: Settings, values: Sequence[bytes]) -> dict[str, object]:
    """Point reads of the users the pipeline left in Redis, one at a time after the run (Redis
    otherwise idle): `SegmentClient.user`, `users` batches, and `GET /v1/users/{id}` through
    the service's HTTP server and lookup (a connection per request: the server speaks
    HTTP/1.0)."""
    users = sorted({orjson.loads(v)["user_id"] for v in values})
    rng = random.Random(3)
    client = SegmentClient(settings.redis.url, settings.key_prefix, cluster=settings.redis.cluster)
    client.users(users[:READ_BATCH])  # connected and warm
    single = _timed(client.user, [rng.choice(users) for _ in range(READS)])
    batches = [rng.sample(users, min(READ_BATCH, len(users))) for _ in range(READ_BATCHES)]
    batched = _timed(client.users, batches)
    api = settings.model_copy(update={"api": ApiSettings(enabled=True)})
    port = free_port()
    lookups = read_api(api)
    assert lookups is not None  # the API is on in these settings
    server = serve(Health(stall_s=60.0, users=lookups[0]), port, "127.0.0.1")
    assert server is not None
    try:
        asked = [rng.choice(users) for _ in range(HTTP_READS)]
        over_http = _timed(lambda user: _http_get(port, user), asked)
    finally:
        server.shutdown()
        server.server_close()
    client.close()
    return {
        "users": len(users),
        "user": {"reads": READS, **single},
        "users_batch": {"batches": READ_BATCHES, "batch_size": READ_BATCH, **batched},
        "http": {"reads": HTTP_READS, **over_http},
    }


def _timed(read: Callable[[T], object], arguments: Sequence[T]) -> dict[str, float]:
    """Milliseconds each `read(argument)` took: p50, p99 and mean; every read must find."""
    took = []
    for argument in arguments:
        started = time.perf_counter()
        found = read(argument)
        took.append((time.perf_counter() - started) * 1000)
        if not found:
            msg = f"a bench read found nothing for {argument!r}"
            raise RuntimeError(msg)
    return {**_percentiles(sorted(took), 3), "mean_ms": round(statistics.fmean(took), 3)}


def _percentiles(ascending: list[float], digits: int) -> dict[str, float]:
    return {
        "p50_ms": round(statistics.median(ascending), digits),
        "p99_ms": round(ascending[int(0.99 * (len(ascending) - 1))], digits),
    }


def _http_get(port: int, user: str) -> bytes:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", "/v1/users/" + quote(user, safe=""))
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status != 200:
        msg = f"GET /v1/users/{user}: {response.status} {body[:200]!r}"
        raise RuntimeError(msg)
    return body


def _run_pipeline(settings: Settings, events: int) -> dict[str, object]:
    """The service's whole step: features fenced in Redis, users scored, changes published,
    timers set, the trainer learning, offsets committed."""
    handler = build_handler(settings)
    try:
        with measured(handler.store.client) as costs:
            summary = Loop(settings, handler).run(max_events=events)
    finally:
        handler.close()
    return {
        **_loop_figures(summary),
        "model_version": handler.sync.params.version,
        "segment_changes": _changes(),
        "costs": costs.figures(summary.consumed, handler.store.writes),
    }


class BatchClock(Passthrough[SegmentHandler]):
    """Wraps the service's handler and notes when each batch was done, so parts of one run
    can be timed."""

    def __init__(self, inner: SegmentHandler) -> None:
        super().__init__(inner)
        self.changes_before = _changes()
        self._started = 0.0
        self._marks: list[tuple[int, float, float]] = []  # events so far, time, changes so far
        self._events = 0

    def handle(self, batch: Batch) -> Outcome:
        if not self._started:
            self._started = time.perf_counter()
        outcome = self.inner.handle(batch)
        self._events += len(batch.events)
        self._marks.append((self._events, time.perf_counter(), _changes()))
        return outcome

    def rate(self, first: int, last: int) -> float:
        """Events/s from the batch that reached `first` events (or the start) to the one that
        reached `last`."""
        start = self._started if not first else self._at(first)[1]
        end = self._at(last)
        done = end[0] - (self._at(first)[0] if first else 0)
        return done / max(end[1] - start, 1e-9)

    def changes_at(self, events: int) -> float:
        return self._at(events)[2]

    def _at(self, events: int) -> tuple[int, float, float]:
        return next((m for m in self._marks if m[0] >= events), self._marks[-1])


def _changes() -> float:
    """Changes published so far in this process, from the metric (the stages run one by one)."""
    return sum(
        sample.value
        for family in metrics.SEGMENT_CHANGES.collect()
        for sample in family.samples
        if sample.name.endswith("_total")
    )


def _loop_figures(summary: RunSummary) -> dict[str, object]:
    return {
        "events_per_second": round(summary.consumed / summary.busy_s),
        "consumed": summary.consumed,
        "committed": summary.committed,
        "batches": summary.batches,
        "group_join_s": round(summary.first_record_s, 2),
    }


def _bench_latency(
    settings: Settings, values: Sequence[bytes], rate: float, seconds: float, *, full: bool
) -> dict[str, object]:
    """Event time -> handled, at `rate` events/s of users the service already knows; with
    `full` false, the loop alone (what the broker and the client cost)."""
    ensure_topics(settings)
    if full:
        _known_users(settings, values)
    total = int(rate * (seconds + WARMUP_S))
    # The load comes from another process, as it would live (in this one it would compete with
    # the service for the interpreter lock); it starts now and sends when told.
    context = multiprocessing.get_context("spawn")
    go = context.Event()
    sender = context.Process(target=_send_stamped, args=(settings, list(values), rate, total, go))
    sender.start()
    handler = build_handler(settings) if full else None
    probe = LatencyProbe(handler or NullHandler())
    loop = Loop(settings, probe)
    runner = threading.Thread(target=loop.run, kwargs={"max_events": total}, daemon=True)
    runner.start()
    deadline = time.monotonic() + 60
    while not loop.assigned_partitions and time.monotonic() < deadline:
        time.sleep(0.05)
    probe.measure_from_ms = time.time() * 1000 + WARMUP_S * 1000
    go.set()
    sender.join(timeout=seconds + 120)
    runner.join(timeout=seconds + 60)
    loop.stop()
    if handler is not None:
        handler.close()
    return _latency_figures(probe.latencies_ms, rate)


def _latency_figures(latencies: list[float], rate: float) -> dict[str, object]:
    found = sorted(latencies)
    result: dict[str, object] = {"offered_events_per_second": rate, "warmup_s": WARMUP_S}
    if not found:
        return {**result, "p50_ms": None, "p99_ms": None}
    return {
        **result,
        "measured": len(found),
        **_percentiles(found, 2),
        "max_ms": round(found[-1], 2),
    }


def _known_users(settings: Settings, values: Sequence[bytes]) -> None:
    """Replay `values` with times ending a minute ago and let the service handle them, so the
    latency run meets known users at a watermark that moves on smoothly into the present."""
    shift = int(time.time() * 1000) - 60_000 - max(orjson.loads(v)["ts"] for v in values)
    records = []
    for value in values:
        event = orjson.loads(value)
        event["ts"] += shift
        records.append(Record(str(event["user_id"]).encode(), orjson.dumps(event), None))
    replay(iter(records), Producer(producer_config(settings)), settings.topics.events, Pacing())
    handler = build_handler(settings)
    try:
        Loop(settings, handler).run(max_events=len(records))
    finally:
        handler.close()


def _send_stamped(
    settings: Settings, values: Sequence[bytes], rate: float, total: int, go: EventLike
) -> None:
    """Send events at `rate` once `go` is set, each stamped with the wall clock as it leaves,
    so that latency = handling time - event time."""
    go.wait()
    producer = Producer({**producer_config(settings), "linger.ms": 0})
    pacer = Pacer(Pacing(rate=rate))
    for i in range(total):
        event = orjson.loads(values[i % len(values)])
        pacer.wait(i, None)
        event.update(event_id=f"l{i}", ts=int(time.time() * 1000))
        producer.produce(settings.topics.events, orjson.dumps(event), str(event["user_id"]))
        producer.poll(0)
    producer.flush(30)
    producer.close()
