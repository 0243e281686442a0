"""`segstream bench`: throughput and latency of the real pipeline, stage by stage, as JSON.

Stages: decode (in process), produce (replay into a fresh topic), loop (consume → validate →
handle → checkpoint, draining a backlog, measured from the first record to the last batch), and
latency (event time → handled, at an offered rate, p50/p99). Runs on the configured servers, or on
local ones started the way `segstream demo` does.
"""

from __future__ import annotations

import statistics
import threading
import time
import uuid
from collections.abc import Sequence
from contextlib import ExitStack
from pathlib import Path

import orjson
from confluent_kafka import Producer

from features.events import decode_event
from stream.generate import generate
from stream.handler import Batch, NullHandler, Outcome
from stream.loop import Loop
from stream.replay import Pacer, Pacing, Record, read_records, replay
from stream.settings import Settings, producer_config
from stream.stack import ensure_stack
from stream.topics import ensure_topics

SAMPLE_USERS = 2_000


WARMUP_S = 1.0


class LatencyProbe(NullHandler):
    """A null handler that records, per event, wall time at handling minus event time.

    Events stamped before `measure_from_ms` are left out: the first fetches after an assignment
    (offset lookups, fetch sessions) take a few hundred ms once and are not steady-state latency.
    """

    def __init__(self) -> None:
        self.latencies_ms: list[float] = []
        self.measure_from_ms = float("inf")

    def handle(self, batch: Batch) -> Outcome:
        now_ms = time.time() * 1000
        start = self.measure_from_ms
        self.latencies_ms.extend(now_ms - e.ts_ms for e in batch.events if e.ts_ms >= start)
        return Outcome()


def run_bench(
    settings: Settings, *, events: int, latency_rate: float, latency_seconds: float, workdir: Path
) -> dict[str, object]:
    sample = _sample_values(workdir)
    figures: dict[str, object] = {"events": events, "decode": _bench_decode(sample, events)}
    with ExitStack() as resources:
        stack = ensure_stack(settings, workdir, resources)
        base = _bench_settings(stack.settings)
        figures["produce"], figures["loop"] = _bench_loop(base, sample, events)
        figures["latency"] = _bench_latency(base, sample, latency_rate, latency_seconds)
    loop = figures["loop"]
    latency = figures["latency"]
    assert isinstance(loop, dict) and isinstance(latency, dict)
    return {
        "events_per_second": loop["events_per_second"],
        "p99_latency_ms": latency["p99_ms"],
        **figures,
    }


def _sample_values(workdir: Path) -> list[bytes]:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "sample.jsonl"
    generate(SAMPLE_USERS, 30, 1, path, workdir / "sample-personas.csv")
    return [record.value for record in read_records(path)]


def _bench_decode(sample: Sequence[bytes], events: int) -> dict[str, float]:
    now_ms = int(time.time() * 1000)
    started = time.perf_counter()
    for i in range(events):
        decode_event(sample[i % len(sample)], now_ms=now_ms)
    elapsed = time.perf_counter() - started
    return {"events_per_second": round(events / elapsed), "us_per_event": elapsed / events * 1e6}


def _bench_settings(settings: Settings) -> Settings:
    run = f"bench-{uuid.uuid4().hex[:8]}"
    kafka = settings.kafka.model_copy(update={"session_timeout_ms": 6000, "group_id": run})
    topics = settings.topics.model_copy(
        update={"events": f"{run}.events", "segments": f"{run}.segments", "dlq": f"{run}.dlq"}
    )
    metrics = settings.metrics.model_copy(update={"port": 0})
    return settings.model_copy(update={"kafka": kafka, "topics": topics, "metrics": metrics})


def _bench_loop(
    settings: Settings, sample: Sequence[bytes], events: int
) -> tuple[dict[str, object], dict[str, object]]:
    ensure_topics(settings)
    records = (
        Record(str(i % 50_000).encode(), sample[i % len(sample)], None) for i in range(events)
    )
    sent = replay(records, Producer(producer_config(settings)), settings.topics.events, Pacing())
    produced: dict[str, object] = {
        "events_per_second": round(sent.sent / sent.elapsed_s),
        "errors": sent.errors,
    }
    summary = Loop(settings, NullHandler()).run(max_events=events)
    loop: dict[str, object] = {
        "events_per_second": round(summary.consumed / summary.busy_s),
        "consumed": summary.consumed,
        "committed": summary.committed,
        "batches": summary.batches,
        "group_join_s": round(summary.first_record_s, 2),
    }
    return produced, loop


def _bench_latency(
    settings: Settings, sample: Sequence[bytes], rate: float, seconds: float
) -> dict[str, object]:
    settings = settings.model_copy(
        update={"topics": settings.topics.model_copy(update={"events": settings.topics.events
                                                              + ".latency"})}
    )  # fmt: skip
    ensure_topics(settings)
    total = int(rate * (seconds + WARMUP_S))
    probe = LatencyProbe()
    loop = Loop(settings, probe)
    runner = threading.Thread(target=loop.run, kwargs={"max_events": total}, daemon=True)
    runner.start()
    deadline = time.monotonic() + 60
    while not loop.assigned_partitions and time.monotonic() < deadline:
        time.sleep(0.05)
    probe.measure_from_ms = time.time() * 1000 + WARMUP_S * 1000
    _send_stamped(settings, sample, rate, total)
    runner.join(timeout=seconds + 60)
    loop.stop()
    values = sorted(probe.latencies_ms)
    if not values:
        return {"offered_events_per_second": rate, "p50_ms": None, "p99_ms": None}
    return {
        "offered_events_per_second": rate,
        "warmup_s": WARMUP_S,
        "measured": len(values),
        "p50_ms": round(statistics.median(values), 2),
        "p99_ms": round(values[int(0.99 * (len(values) - 1))], 2),
        "max_ms": round(values[-1], 2),
    }


def _send_stamped(settings: Settings, sample: Sequence[bytes], rate: float, total: int) -> None:
    """Send sample events at `rate`, each stamped with the wall clock as it leaves, so that
    latency = handling time - event time."""
    producer = Producer({**producer_config(settings), "linger.ms": 0})
    pacer = Pacer(Pacing(rate=rate))
    for i in range(total):
        event = orjson.loads(sample[i % len(sample)])
        pacer.wait(i, None)
        event["ts"] = int(time.time() * 1000)
        producer.produce(settings.topics.events, orjson.dumps(event), str(event["user_id"]))
        producer.poll(0)
    producer.flush(30)
