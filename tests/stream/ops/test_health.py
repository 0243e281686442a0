"""Liveness and readiness: what the probes answer, over real HTTP on a free port."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import orjson
import pytest

import stream.ops.health
from stream.cli import main as cli
from stream.ops.health import Health, serve
from stream.ops.probe import probe
from stream.tools.local_servers import free_port
from tests.http_tools import get

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


def _stats(*states: str, rxidle_s: float = 0.5) -> dict[str, object]:
    brokers = {
        f"b{i}": {"nodeid": i, "state": s, "rxidle": int(rxidle_s * 1e6)}
        for i, s in enumerate(states)
    }
    brokers["bootstrap"] = {"nodeid": -1, "state": "UP", "rxidle": 0}
    return {"brokers": brokers}


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    now = [1000.0]
    monkeypatch.setattr("stream.ops.health.time.monotonic", lambda: now[0])
    return now


def test_liveness_fails_only_after_the_loop_stalls(clock: list[float]) -> None:
    health = Health(stall_s=30.0)
    health.beat()
    clock[0] += 29.0
    assert health.liveness()[0]
    health.all_brokers_down()  # a broker outage is not death
    assert health.liveness()[0]
    clock[0] += 2.0
    ok, detail = health.liveness()
    assert not ok
    assert detail["since_progress_s"] == pytest.approx(31.0)


def test_a_loop_blocked_in_a_broker_call_is_waiting_not_stuck(clock: list[float]) -> None:
    health = Health(stall_s=30.0)
    with health.waiting("commit"):
        clock[0] += 75.0  # a commit on a frozen broker, bounded by librdkafka's timeout
        ok, detail = health.liveness()
        assert ok
        assert detail["waiting_on"] == "commit"
    assert health.liveness()[0]  # the wait ended: that is progress
    clock[0] += 31.0
    assert not health.liveness()[0]


def test_readiness_follows_brokers_and_redis(
    health: Health, redis_ping: Redis, clock: list[float]
) -> None:
    assert health.readiness() == (False, {"kafka": "down", "redis": "up"})  # no broker heard yet
    health.kafka_statistics(_stats("DOWN", "UP"))
    assert health.readiness() == (True, {"kafka": "up", "redis": "up", "kafka_silent_s": 0.5})
    health.all_brokers_down()
    assert not health.readiness()[0]
    health.kafka_statistics(_stats("UP"))
    redis_ping.up = False
    health._redis_checked = -float("inf")  # the ping is cached for a second
    assert health.readiness()[1]["redis"] == "down"
    assert not health.readiness()[0]


def test_a_frozen_broker_whose_connection_stays_up_makes_the_service_unready(
    health: Health, clock: list[float]
) -> None:
    health.kafka_statistics(_stats("UP", rxidle_s=0.2))
    assert health.readiness()[0]
    clock[0] += 20.0  # frozen: the statistics still say UP, but nothing arrives
    health.kafka_statistics(_stats("UP", rxidle_s=20.2))
    assert health.readiness()[0]
    clock[0] += 11.0
    health.kafka_statistics(_stats("UP", rxidle_s=31.2))
    ok, detail = health.readiness()
    assert not ok
    assert detail["kafka"] == "down"
    assert detail["kafka_silent_s"] == pytest.approx(31.2)
    health.kafka_statistics(_stats("UP", rxidle_s=0.1))  # it answers again
    assert health.readiness()[0]


def test_a_loop_paused_on_a_dependency_or_stopped_for_lost_state_is_unready(
    health: Health, clock: list[float]
) -> None:
    health.beat()
    health.kafka_statistics(_stats("UP"))
    health.paused("handle")
    ok, detail = health.readiness()
    assert (ok, detail["paused_on"]) == (False, "handle")
    assert health.liveness()[0]  # waiting on Redis is no reason to restart the pod
    health.paused("")
    assert health.readiness()[0]
    health.halt("Redis lost segstream's state")
    ok, detail = health.readiness()
    assert (ok, detail["stopped"]) == (False, "Redis lost segstream's state")
    assert health.liveness()[0]


def test_http_endpoints_answer_metrics_and_probes(port: int, health: Health) -> None:
    status, body = get(port, "/metrics")
    assert status == 200
    assert b"segstream_build_info{" in body
    assert get(port, "/healthz")[0] == 200
    health.kafka_statistics(_stats("DOWN"))
    status, body = get(port, "/readyz")
    assert status == 503
    assert orjson.loads(body) == {"ok": False, "kafka": "down", "redis": "up"}
    health.kafka_statistics(_stats("UP"))
    assert get(port, "/readyz")[0] == 200
    assert get(port, "/nothing")[0] == 404


def test_a_half_sent_request_is_dropped_after_the_timeout(
    monkeypatch: pytest.MonkeyPatch, health: Health
) -> None:
    monkeypatch.setattr(stream.ops.health, "REQUEST_TIMEOUT_S", 0.3)
    number = free_port()
    server = serve(health, number, "127.0.0.1")
    assert server is not None
    try:
        with socket.create_connection(("127.0.0.1", number), timeout=5) as slow:
            slow.sendall(b"GET /metr")
            # The server closes the connection: the read ends (b"") instead of timing out.
            assert slow.recv(1024) == b""
        assert get(number, "/healthz")[0] == 200
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
