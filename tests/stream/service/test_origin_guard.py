"""Lost state stops the service loudly, and `segstream recover` is the way forward.

Redis restarted empty (here: this deployment's keys deleted, as a flush would) and a topic
deleted and recreated, driven as an operator meets them: real processes, real servers.
"""

from __future__ import annotations

import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any
from urllib.error import HTTPError

import orjson
import pytest
import redis
from confluent_kafka.admin import AdminClient

from features import keys
from stream.errors import StateLostError
from stream.kafka.handler import Origin
from stream.kafka.topics import ensure_topics
from stream.service.origin_guard import OriginGuard
from stream.settings import Settings, admin_config
from stream.tools.local_servers import free_port
from tests.cli_tools import env_for, segstream
from tests.kafka_tools import committed, drain, produce
from tests.stream.service.test_features_e2e import assert_profiles_match, keyed, run_until_idle

pytestmark = pytest.mark.integration

DAY_MS = 86_400_000
START_MS = 1_764_201_600_000


def purchases(first: int, count: int) -> list[bytes]:
    """Purchases of 20 users a minute apart, so each user gets a first assignment."""
    return [orjson.dumps(purchase(i)) for i in range(first, first + count)]


def purchase(i: int) -> dict[str, Any]:
    return {
        "event_id": f"e{i}",
        "user_id": f"u{i % 20}",
        "type": "purchase",
        "ts": START_MS + i * 60_000,
        "price": 10.0 + i % 7,
        "quantity": 1,
    }


def wipe(settings: Settings) -> int:
    """Delete every key of this deployment, as a Redis restarted without persistence would."""
    client = redis.Redis.from_url(settings.redis.url)
    found = list(client.scan_iter(match=f"{settings.key_prefix}:*", count=1000))
    return client.delete(*found) if found else 0


def lose_state_then_run(
    settings: Settings, more: list[bytes]
) -> subprocess.CompletedProcess[bytes]:
    """Wipe the deployment's keys, send `more` events and run the service over them."""
    assert wipe(settings) > 0
    produce(settings.kafka.bootstrap_servers, settings.topics.events, keyed(more))
    return run_failing(settings)


def run_failing(settings: Settings) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        segstream("run", "--until-idle", "3", "--log-level", "WARNING"),
        env=env_for(settings), capture_output=True, timeout=180, check=False,
    )  # fmt: skip


def recover(settings: Settings, how: str) -> dict[str, Any]:
    done = subprocess.run(
        segstream("recover", how, "--log-level", "WARNING"),
        env=env_for(settings), capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    result: dict[str, Any] = orjson.loads(done.stdout)
    return result


def change_ids(settings: Settings) -> list[str]:
    """Every change id on the segments topic, sorted (partitions interleave in any order)."""
    records = drain(settings.kafka.bootstrap_servers, settings.topics.segments, 3, quiet_s=1.5)
    return sorted(orjson.loads(r.value())["change_id"] for r in records if r.value())


def offsets(settings: Settings) -> dict[int, int]:
    group, topic = settings.kafka.group_id, settings.topics.events
    return committed(settings.kafka.bootstrap_servers, group, topic, 3)


def test_redis_restarted_empty_stops_the_service_until_recover_rebuilds_it(
    settings: Settings,
) -> None:
    first, second = purchases(0, 300), purchases(300, 200)
    ensure_topics(settings)
    produce(settings.kafka.bootstrap_servers, settings.topics.events, keyed(first))
    run_until_idle(settings)
    epoch_before = int(redis.Redis.from_url(settings.redis.url).hget(
        keys.origin(settings.key_prefix), "epoch"))  # fmt: skip
    ids_before = change_ids(settings)
    committed_before = offsets(settings)

    stopped = lose_state_then_run(settings, second)

    assert stopped.returncode == 1
    error = stopped.stderr.decode()
    assert "holds no segstream state" in error
    assert "segstream recover --from-earliest" in error
    assert offsets(settings) == committed_before, "offsets moved past events never applied"
    assert change_ids(settings) == ids_before, "changes published from a lost state"

    time.sleep(1)  # the epoch is in seconds: a recovery in the same second still gets a new one
    result = recover(settings, "--from-earliest")
    assert result["epoch"] > epoch_before
    assert result["offsets"] == {"0": 0, "1": 0, "2": 0}
    run_until_idle(settings)

    assert_profiles_match(settings, first + second)
    ids = change_ids(settings)
    assert len(ids) == len(set(ids)), "a change id was published twice"
    assert {i.split(":")[1] for i in ids} == {str(epoch_before), str(result["epoch"])}


def test_recover_from_committed_goes_on_without_what_was_lost_and_counts_nothing_twice(
    settings: Settings,
) -> None:
    first, second = purchases(0, 100), purchases(100, 60)
    ensure_topics(settings)
    produce(settings.kafka.bootstrap_servers, settings.topics.events, keyed(first))
    run_until_idle(settings)
    assert lose_state_then_run(settings, second).returncode == 1
    committed_then = offsets(settings)

    result = recover(settings, "--from-committed")
    assert result["offsets"] == {str(p): o for p, o in committed_then.items()}
    summary = run_until_idle(settings)

    assert summary["processed"] == len(second)
    assert_profiles_match(settings, second)  # the first events' history is what Redis lost
    ids = change_ids(settings)
    assert len(ids) == len(set(ids)), "a change id was published twice"


def test_a_stopped_service_stays_up_unready_with_the_reason_on_its_probe(
    settings: Settings, tmp_path: Path
) -> None:
    ensure_topics(settings)
    bootstrap, topic = settings.kafka.bootstrap_servers, settings.topics.events
    produce(bootstrap, topic, keyed(purchases(0, 100)))
    run_until_idle(settings)
    wipe(settings)
    produce(bootstrap, topic, keyed(purchases(100, 50)))
    port = free_port()
    env = {**env_for(settings), "SEGSTREAM_METRICS__PORT": str(port)}
    with (tmp_path / "service.log").open("wb") as log:
        service = subprocess.Popen(
            segstream("run", "--log-level", "WARNING"), env=env, stdout=log, stderr=log
        )
    try:
        ready = wait_for_probe(port, "/readyz", lambda s, body: s == 503 and "stopped" in body)
        assert "holds no segstream state" in ready["stopped"]
        assert probe(port, "/healthz")[0] == 200, "a stopped service is alive, not stuck"
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
        assert b'segstream_state_lost{kind="lost"} 1.0' in metrics
    finally:
        service.terminate()
        assert service.wait(timeout=60) == 1


def test_a_recreated_topic_stops_the_service_instead_of_dropping_new_events(
    settings: Settings,
) -> None:
    ensure_topics(settings)
    bootstrap, topic = settings.kafka.bootstrap_servers, settings.topics.events
    produce(bootstrap, topic, keyed(purchases(0, 200)))
    run_until_idle(settings)
    admin = AdminClient(admin_config(settings))
    admin.delete_topics([topic])[topic].result(timeout=30)
    wait_until(lambda: topic not in admin.list_topics(timeout=10).topics)
    ensure_topics(settings)
    fresh = purchases(1000, 100)
    produce(bootstrap, topic, keyed(fresh))

    stopped = run_failing(settings)

    assert stopped.returncode == 1
    assert "is not the one the state was built from" in stopped.stderr.decode()
    recover(settings, "--from-earliest")
    summary = run_until_idle(settings)
    assert summary["processed"] == len(fresh)
    assert_profiles_match(settings, fresh)


def test_recover_refuses_while_an_instance_runs(settings: Settings, tmp_path: Path) -> None:
    ensure_topics(settings)
    produce(settings.kafka.bootstrap_servers, settings.topics.events, keyed(purchases(0, 50)))
    with (tmp_path / "service.log").open("wb") as log:
        service = subprocess.Popen(
            segstream("run", "--log-level", "INFO"), env=env_for(settings), stdout=log, stderr=log
        )
    try:
        wait_until(lambda: sum(offsets(settings).values()) == 50)
        done = subprocess.run(
            segstream("recover", "--from-earliest"),
            env=env_for(settings), capture_output=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 1
        assert "stop every instance" in done.stderr.decode()
        assert sum(offsets(settings).values()) == 50, "recover moved a live group's offsets"
    finally:
        service.terminate()
        service.wait(timeout=60)


def probe(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except HTTPError as exc:
        return exc.code, exc.read().decode()


def wait_for_probe(port: int, path: str, done: Any, timeout_s: float = 90) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            status, body = probe(port, path)
        except OSError:  # not listening yet
            status, body = 0, ""
        if done(status, body):
            answer: dict[str, Any] = orjson.loads(body)
            return answer
        time.sleep(0.2)
    raise AssertionError(f"{path} never answered as expected; last {status} {body}")


def wait_until(condition: Any, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.2)


def origin_of(topic: str, **changes: Any) -> Origin:
    fields: dict[str, Any] = {
        "topic": topic, "topic_id": "id-1", "partitions": 3, "assigned": (0, 1, 2),
        "committed": {}, "ends": {},
    }  # fmt: skip
    return Origin(**{**fields, **changes})


def test_the_guard_tells_a_fresh_start_from_lost_older_or_foreign_state(
    servers: Any, names: str
) -> None:
    client = redis.Redis.from_url(servers.redis_url)
    guard = OriginGuard(client, names)
    epoch = guard.check(origin_of("events"))  # nothing committed, nothing stored: fresh
    guard.record({0: 40, 1: 7})
    assert OriginGuard(client, names).check(origin_of("events", committed={0: 40, 1: 7})) == epoch

    cases = {
        "behind Kafka": (origin_of("events", committed={0: 41}), "Redis is behind Kafka"),
        "recreated": (origin_of("events", topic_id="id-2"), "deleted and recreated"),
        "repartitioned": (origin_of("events", partitions=4), "it has 4 partitions"),
        "another topic": (origin_of("other"), "give each events topic its own"),
        "offsets went back": (
            origin_of("events", topic_id="", ends={0: 3}),
            "ends at offset 3, before offset 40",
        ),
    }
    for origin, message in cases.values():
        with pytest.raises(StateLostError, match=message):
            OriginGuard(client, names).check(origin)

    # Redis restored from an older snapshot while the service runs: our offsets went back.
    client.hset(keys.origin(names), "next:0", 12)
    with pytest.raises(StateLostError, match="went back in time"):
        guard.verify([0])
    # Flushed while the service runs: neither the batch nor the commit may go through.
    client.delete(keys.origin(names))
    with pytest.raises(StateLostError, match="lost segstream's state while the service ran"):
        guard.verify([1])
    with pytest.raises(StateLostError, match="offsets are not committed"):
        guard.record({1: 9})
    assert not client.exists(keys.origin(names)), "a lost record must not be created again"
    with pytest.raises(StateLostError, match="holds no segstream state"):
        OriginGuard(client, names).check(origin_of("events", committed={0: 40}))
