"""Redis going away pauses the loop; nothing is skipped or read twice when it comes back."""

from __future__ import annotations

import signal
import threading
import time

import orjson
import pytest
import redis

from stream.errors import TransientError
from stream.kafka.handler import Batch, NullHandler, Outcome
from stream.kafka.loop import Loop, RunSummary
from stream.kafka.topics import ensure_topics
from stream.settings import Settings
from tests.conftest import Servers
from tests.kafka_tools import committed, end_offsets, produce

pytestmark = pytest.mark.integration


class RedisRecorder(NullHandler):
    """A handler with a real Redis side effect: each event id into a set, each delivery counted."""

    def __init__(self, url: str, prefix: str, pause_s: float = 0.0) -> None:
        self.client = redis.Redis.from_url(url, socket_timeout=0.3, socket_connect_timeout=0.3)
        self.ids = f"{prefix}:ids"
        self.seen = f"{prefix}:seen"
        self.pause_s = pause_s

    def handle(self, batch: Batch) -> Outcome:
        time.sleep(self.pause_s)
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.sadd(self.ids, *[e.event_id for e in batch.events])
            pipe.incrby(self.seen, len(batch.events))
            pipe.execute()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            msg = f"redis unavailable: {exc}"
            raise TransientError(msg) from exc
        return Outcome()


def events(n: int) -> list[tuple[bytes | None, bytes]]:
    """Ten seconds of event time apart (83 hours in all), so that the partitions are read side
    by side (the loop holds back a partition that runs 12 hours ahead of the others)."""
    return [
        (f"u{i % 50}".encode(), orjson.dumps(
            {"event_id": f"e{i}", "user_id": f"u{i % 50}", "type": "view",
             "ts": 1_764_201_600_000 + 10_000 * i}
        ))
        for i in range(n)
    ]  # fmt: skip


def run_in_thread(loop: Loop, **kwargs: float) -> tuple[threading.Thread, list[RunSummary]]:
    out: list[RunSummary] = []
    thread = threading.Thread(target=lambda: out.append(loop.run(**kwargs)), daemon=True)
    thread.start()
    return thread, out


def wait_for(condition: object, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_redis_outage_mid_stream_pauses_then_resumes_without_loss(
    settings: Settings, servers: Servers, names: str
) -> None:
    if servers.local_redis is None or servers.local_redis.process is None:
        pytest.skip("needs a Redis process started by the tests (REDIS_URL points elsewhere)")
    settings = settings.model_copy(
        update={"loop": settings.loop.model_copy(update={"batch_size": 200})}
    )
    ensure_topics(settings)
    placed = produce(settings.kafka.bootstrap_servers, settings.topics.events, events(6000))
    recorder = RedisRecorder(servers.redis_url, names, pause_s=0.01)
    loop = Loop(settings, recorder)
    thread, out = run_in_thread(loop, until_idle=2.0)

    wait_for(lambda: loop.summary.batches >= 3)
    process = servers.local_redis.process
    process.send_signal(signal.SIGSTOP)
    try:
        wait_for(lambda: loop.summary.retries >= 3)
    finally:
        process.send_signal(signal.SIGCONT)
    thread.join(timeout=120)

    summary = out[0]
    assert summary.retries >= 3
    assert summary.consumed == 6000
    check = redis.Redis.from_url(servers.redis_url)
    assert check.scard(recorder.ids) == 6000
    assert committed(
        settings.kafka.bootstrap_servers, settings.kafka.group_id, settings.topics.events, 3
    ) == end_offsets(placed)


def test_second_instance_joins_cooperatively_and_nothing_is_handled_twice(
    settings: Settings, servers: Servers, names: str
) -> None:
    total = 30_000
    settings = settings.model_copy(
        update={"loop": settings.loop.model_copy(update={"batch_size": 100})}
    )
    ensure_topics(settings)
    placed = produce(settings.kafka.bootstrap_servers, settings.topics.events, events(total))
    # Slow handlers keep the first instance busy while the second joins (a join takes seconds).
    first = Loop(settings, RedisRecorder(servers.redis_url, names, pause_s=0.02))
    thread_a, out_a = run_in_thread(first, until_idle=8.0)
    wait_for(lambda: first.summary.consumed >= 1000)
    second = Loop(settings, RedisRecorder(servers.redis_url, names, pause_s=0.02))
    thread_b, out_b = run_in_thread(second, until_idle=8.0)
    thread_a.join(timeout=120)
    thread_b.join(timeout=120)

    a, b = out_a[0], out_b[0]
    assert b.consumed > 0, "the second instance got no partitions"
    assert a.consumed + b.consumed == total
    check = redis.Redis.from_url(servers.redis_url)
    recorder = RedisRecorder(servers.redis_url, names)
    assert check.scard(recorder.ids) == total
    assert int(check.get(recorder.seen) or 0) == total, "some events were handled twice"
    assert committed(
        settings.kafka.bootstrap_servers, settings.kafka.group_id, settings.topics.events, 3
    ) == end_offsets(placed)
