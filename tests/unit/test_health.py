"""Liveness and readiness: what the probes answer, over real HTTP on a free port."""

from __future__ import annotations

import socket
import urllib.request
from collections.abc import Iterator
from urllib.error import HTTPError

import orjson
import pytest
from confluent_kafka import KafkaError

import stream.health
from stream import cli
from stream.health import Health, serve
from stream.localstack import free_port
from stream.probe import probe

pytestmark = pytest.mark.unit


class Redis:
    up = True

    def __call__(self) -> bool:
        return self.up


@pytest.fixture
def redis_ping() -> Redis:
    return Redis()


@pytest.fixture
def health(redis_ping: Redis) -> Health:
    return Health(stall_s=60.0, ping_redis=redis_ping)


@pytest.fixture
def port(health: Health) -> Iterator[int]:
    number = free_port()
    server = serve(health, number, "127.0.0.1")
    assert server is not None
    yield number
    server.shutdown()
    server.server_close()


def _get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as response:
            return response.status, response.read()
    except HTTPError as exc:
        return exc.code, exc.read()


def _stats(*states: str) -> dict[str, object]:
    brokers = {f"b{i}": {"nodeid": i, "state": s} for i, s in enumerate(states)}
    brokers["bootstrap"] = {"nodeid": -1, "state": "UP"}
    return {"brokers": brokers}


def test_liveness_fails_only_after_the_loop_stalls(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr("stream.health.time.monotonic", lambda: clock[0])
    health = Health(stall_s=30.0)
    health.beat()
    clock[0] += 29.0
    assert health.liveness()[0]
    health.kafka_error(KafkaError(KafkaError._ALL_BROKERS_DOWN))  # a broker outage is not death
    assert health.liveness()[0]
    clock[0] += 2.0
    ok, detail = health.liveness()
    assert not ok
    assert detail["since_progress_s"] == pytest.approx(31.0)


def test_readiness_follows_brokers_and_redis(health: Health, redis_ping: Redis) -> None:
    assert health.readiness() == (True, {"kafka": "unknown", "redis": "up"})
    health.kafka_statistics(_stats("DOWN", "UP"))
    assert health.readiness()[0]
    health.kafka_statistics(_stats("DOWN", "CONNECT"))  # only the bootstrap entry is up
    assert health.readiness() == (False, {"kafka": "down", "redis": "up"})
    health.kafka_statistics(_stats("UP"))
    health.kafka_error(KafkaError(KafkaError._ALL_BROKERS_DOWN))
    assert not health.readiness()[0]
    health.kafka_statistics(_stats("UP"))
    redis_ping.up = False
    health._redis_checked = -float("inf")  # the ping is cached for a second
    assert health.readiness() == (False, {"kafka": "up", "redis": "down"})


def test_http_endpoints_answer_metrics_and_probes(port: int, health: Health) -> None:
    status, body = _get(port, "/metrics")
    assert status == 200
    assert b"segstream_build_info{" in body
    assert _get(port, "/healthz")[0] == 200
    health.kafka_statistics(_stats("DOWN"))
    status, body = _get(port, "/readyz")
    assert status == 503
    assert orjson.loads(body) == {"ok": False, "kafka": "down", "redis": "up"}
    assert _get(port, "/nothing")[0] == 404


def test_a_half_sent_request_is_dropped_after_the_timeout(
    monkeypatch: pytest.MonkeyPatch, health: Health
) -> None:
    monkeypatch.setattr(stream.health, "REQUEST_TIMEOUT_S", 0.3)
    number = free_port()
    server = serve(health, number, "127.0.0.1")
    assert server is not None
    try:
        with socket.create_connection(("127.0.0.1", number), timeout=5) as slow:
            slow.sendall(b"GET /metr")
            # The server closes the connection: the read ends (b"") instead of timing out.
            assert slow.recv(1024) == b""
        assert _get(number, "/healthz")[0] == 200
    finally:
        server.shutdown()
        server.server_close()


def test_probe_reports_an_unreachable_service_as_not_ok() -> None:
    ok, answer = probe("127.0.0.1", free_port(), ready=False, timeout_s=1.0)
    assert not ok
    assert "no answer from http://127.0.0.1:" in str(answer["error"])


def test_check_command_exit_code_follows_the_probe(
    port: int, health: Health, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SEGSTREAM_METRICS__PORT", str(port))
    assert cli.main(["check"]) == 0
    assert orjson.loads(capsys.readouterr().out)["ok"] is True
    health.kafka_statistics(_stats("DOWN"))
    assert cli.main(["check"]) == 0  # still live
    assert cli.main(["check", "--ready"]) == 1
    assert orjson.loads(capsys.readouterr().out.split("}\n")[-2] + "}")["status"] == 503
    monkeypatch.setenv("SEGSTREAM_METRICS__PORT", str(free_port()))
    assert cli.main(["check"]) == 1
