"""`segstream demo`: the main job on a fresh machine, end to end, with a readable summary."""

from __future__ import annotations

import csv
import logging
import uuid
from collections import Counter
from contextlib import ExitStack
from pathlib import Path

from confluent_kafka import Producer

from features.store import FeatureStore
from stream.kafka.loop import Loop, RunSummary
from stream.kafka.topics import ensure_topics
from stream.ops.health import Health, serve
from stream.service.wiring import build_handler, health_for
from stream.settings import Settings, producer_config
from stream.tools.demo_tables import segment_table
from stream.tools.evaluate import EvaluateOptions, Recorder
from stream.tools.generate import GenerateSummary, generate
from stream.tools.progress import Progress
from stream.tools.replay import Pacing, ReplaySummary, read_records, replay
from stream.tools.servers import Stack, ensure_stack
from stream.tools.sizing import memory_per_user

logger = logging.getLogger(__name__)

# One record of each kind the service must dead-letter, sent beside the generated events so the
# summary shows the dead-letter path at work.
INVALID_SAMPLES: tuple[bytes, ...] = (
    b"\xff\xfe not utf-8",
    b"{not json",
    b"[1, 2, 3]",
    b'{"event_id": "x1", "user_id": "", "type": "view", "ts": 1764201600000}',
    b'{"event_id": "x2", "user_id": 42, "type": "view", "ts": 1764201600000}',
    b'{"event_id": "x3", "user_id": "u1", "type": "view", "ts": "yesterday"}',
    b'{"event_id": "x4", "user_id": "u1", "type": "purchase", "ts": 1764201600000, "price": -5}',
    b'{"event_id": "x5", "user_id": "u1", "type": "view", "ts": 1, "schema_version": 9}',
    b'{"event_id": "x6", "user_id": "u1", "type": "view", "ts": 4102444800000}',
)


def run_demo(settings: Settings, *, users: int, days: float, seed: int, workdir: Path) -> int:
    with ExitStack() as resources:
        stack = ensure_stack(settings, workdir, resources)
        settings = _demo_settings(stack)
        ensure_topics(settings)
        generated = _generate(users, days, seed, workdir)
        replayed = _replay(settings, workdir / "events.jsonl")
        handler = build_handler(settings)
        store = handler.store
        recorder = Recorder(handler)
        health = health_for(settings)
        metrics_url = _serve_metrics(health, settings, resources)
        try:
            service = Loop(settings, recorder, health).run(until_idle=5.0)
        finally:
            handler.close()
        memory = memory_per_user(store.client, settings.key_prefix, _users(workdir))
        print(
            _summary(
                stack,
                settings=settings,
                generated=generated,
                replayed=replayed,
                service=service,
                workdir=workdir,
                metrics_url=metrics_url,
            )
        )
        print(_memory_line(memory))
        print("\n".join(_feature_table(store, workdir / "personas.csv", settings.key_prefix)))
        print("\n".join(segment_table(settings, recorder, workdir, EvaluateOptions())))
        return 0 if service.clean_exit and not replayed.errors else 1


def _demo_settings(stack: Stack) -> Settings:
    settings = stack.settings
    run = f"demo-{uuid.uuid4().hex[:8]}"
    kafka = settings.kafka.model_copy(update={"session_timeout_ms": 6000})
    # Fences in Redis are offsets of the input topic: a fresh topic needs fresh keys.
    settings = settings.model_copy(update={"key_prefix": run})
    # Nothing else of the segmentation differs from what `segstream run` does with the same
    # settings.
    settings = settings.model_copy(update={"segments": settings.segments.signed()})
    if stack.kafka_started:
        return settings.model_copy(update={"kafka": kafka})
    # A shared broker keeps earlier runs' records: give this run topics and a group of its own.
    topics = settings.topics.model_copy(
        update={"events": f"{run}.events", "segments": f"{run}.segments", "dlq": f"{run}.dlq"}
    )
    kafka = kafka.model_copy(update={"group_id": run})
    return settings.model_copy(update={"kafka": kafka, "topics": topics})


def _serve_metrics(health: Health, settings: Settings, resources: ExitStack) -> str:
    """Metrics and probes while the demo's service runs, so Prometheus can watch it; a port
    already taken only costs the demo its metrics."""
    port = settings.metrics.port
    try:
        server = serve(health, port, settings.metrics.host)
    except OSError as exc:
        logger.warning("metrics not served on port %d: %s", port, exc)
        return f"not served (port {port}: {exc.strerror})"
    if server is None:
        return "off (metrics port 0)"
    resources.callback(server.server_close)
    resources.callback(server.shutdown)
    return f"http://localhost:{port}/metrics (also /healthz, /readyz) while the service ran"


def _generate(users: int, days: float, seed: int, workdir: Path) -> GenerateSummary:
    progress = Progress("generate")
    summary = generate(
        users, days, seed, workdir / "events.jsonl", workdir / "personas.csv", progress=progress
    )
    progress.close()
    return summary


def _replay(settings: Settings, path: Path) -> ReplaySummary:
    producer = Producer(producer_config(settings))
    for value in INVALID_SAMPLES:
        producer.produce(settings.topics.events, value, b"demo-invalid")
    progress = Progress("replay")
    summary = replay(read_records(path), producer, settings.topics.events, Pacing(), progress)
    progress.close()
    producer.close()
    return summary


def _summary(
    stack: Stack,
    *,
    settings: Settings,
    generated: GenerateSummary,
    replayed: ReplaySummary,
    service: RunSummary,
    workdir: Path,
    metrics_url: str,
) -> str:
    data = service.as_dict()
    busy = max(service.busy_s, 1e-9)
    personas = ", ".join(f"{name} {count}" for name, count in sorted(generated.personas.items()))
    reasons = ", ".join(f"{r} {n}" for r, n in sorted(service.dead_lettered.items())) or "none"
    span_days = (generated.last_ts_ms - generated.first_ts_ms) / 86_400_000
    started = {True: "started here", False: "already running"}
    lines = [
        "",
        "segstream demo",
        "==============",
        f"broker      {settings.kafka.bootstrap_servers} ({started[stack.kafka_started]})",
        f"redis       {stack.settings.redis.url} ({started[stack.redis_started]})",
        f"topics      {settings.topics.events} -> {settings.topics.segments}, "
        f"dead letters {settings.topics.dlq}",
        "",
        f"generated   {generated.users:,} users, {generated.events:,} events over "
        f"{span_days:.1f} days of event time",
        f"            personas (ground truth in {workdir / 'personas.csv'}): {personas}",
        f"replayed    {replayed.sent:,} events in {replayed.elapsed_s:.1f} s "
        f"({replayed.sent / max(replayed.elapsed_s, 1e-9):,.0f}/s), "
        f"{replayed.errors} errors, plus {len(INVALID_SAMPLES)} invalid records",
        f"service     consumed {service.consumed:,}, processed {service.processed:,}, "
        f"dead-lettered {data['dead_lettered']}, committed {service.committed:,}",
        f"            {service.consumed / busy:,.0f} events/s from first to last record "
        f"({busy:.1f} s; group join took {service.first_record_s:.1f} s)",
        f"dead letters by reason: {reasons}",
        f"stopped     {service.stopped_by}; clean exit: {service.clean_exit}",
        f"metrics     {metrics_url}",
        "",
    ]
    return "\n".join(lines)


def _users(workdir: Path) -> list[str]:
    with (workdir / "personas.csv").open(newline="") as handle:
        return [row["user_id"] for row in csv.DictReader(handle)]


def _memory_line(memory: dict[str, object]) -> str:
    encodings = memory.get("object_encoding")
    return (
        f"redis       {memory.get('mean')} B per user on average, {memory.get('p95')} B at the"
        f" 95th percentile (MEMORY USAGE of 500 users' keys, encoding {encodings})\n"
    )


TABLE_FEATURES = (
    "events_total",
    "purchases_total",
    "spend_30d",
    "orders_30d",
    "recency_days",
    "view_to_cart",
    "price_level",
)


def _feature_table(store: FeatureStore, personas_csv: Path, prefix: str) -> list[str]:
    """Mean features per ground-truth persona, read back from Redis."""
    with personas_csv.open(newline="") as handle:
        persona_of = {row["user_id"]: row["persona"] for row in csv.DictReader(handle)}
    sums: dict[str, list[float]] = {}
    users: Counter[str] = Counter()
    for found in store.profiles():
        persona = persona_of.get(found["user_id"])
        if persona is None:
            continue
        users[persona] += 1
        row = sums.setdefault(persona, [0.0] * len(TABLE_FEATURES))
        for i, name in enumerate(TABLE_FEATURES):
            row[i] += float(found["features"][name])
    header = f"{'persona (mean per user)':<24}{'users':>6}" + "".join(
        f"{name:>16}" for name in TABLE_FEATURES
    )
    lines = ["features in Redis, by ground-truth persona:", header]
    for persona in sorted(sums):
        means = [value / users[persona] for value in sums[persona]]
        cells = "".join(f"{value:>16,.2f}" for value in means)
        lines.append(f"{persona:<24}{users[persona]:>6}{cells}")
    lines += [
        "",
        f"look up a user:  segstream profile --key-prefix {prefix} "
        f"--redis-url {store.redis_url} u0000001",
        "",
    ]
    return lines
