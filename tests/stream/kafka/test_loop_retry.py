"""The loop's retry of a failing step: backoff, and what the probes say meanwhile."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from stream.errors import TransientError
from stream.kafka.handler import NullHandler
from stream.kafka.loop import Loop
from stream.ops.health import Health
from stream.settings import load_settings

pytestmark = pytest.mark.unit


class Consumer:
    """Pause and resume are all a retry asks of the consumer here."""

    def pause(self, partitions: object) -> None:
        return None

    def resume(self, partitions: object) -> None:
        return None


def failing(errors: list[TransientError]) -> Callable[[], str]:
    def step() -> str:
        if errors:
            raise errors.pop(0)
        return "done"

    return step


def loop_with(health: Health, monkeypatch: pytest.MonkeyPatch) -> tuple[Loop, list[float]]:
    settings = load_settings(
        {"loop": {"backoff_initial_s": 0.1, "backoff_max_s": 10.0}, "metrics": {"port": 0}}
    )
    loop = Loop(settings, NullHandler(), health)
    loop._consumer = Consumer()  # type: ignore[assignment]
    waits: list[float] = []
    monkeypatch.setattr(loop, "_wait_serving_rebalances", waits.append)
    return loop, waits


def test_a_dependency_that_answers_again_is_retried_without_the_grown_backoff(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loop, waits = loop_with(Health(stall_s=60.0), monkeypatch)
    scripts_reloaded = TransientError("scripts loaded again")
    scripts_reloaded.retry_now = True
    outage = [TransientError("redis unavailable") for _ in range(7)]

    assert loop._retry("handle", failing([*outage, scripts_reloaded])) == "done"

    assert waits[:7] == [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4]
    assert waits[7] == 0.1  # not 10 s: Redis is back, only our scripts were missing


def test_readiness_fails_while_a_step_is_retried_and_comes_back_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    health = Health(stall_s=60.0)
    health.kafka_statistics({"brokers": {"b": {"nodeid": 1, "state": "UP", "rxidle": 0}}})
    loop, _ = loop_with(health, monkeypatch)
    seen: list[tuple[bool, str]] = []

    def watch(delay: float) -> None:
        ok, detail = health.readiness()
        seen.append((ok, detail.get("paused_on", "")))

    monkeypatch.setattr(loop, "_wait_serving_rebalances", watch)
    loop._retry("commit", failing([TransientError("broker away")]))

    assert seen == [(False, "commit")]
    assert health.readiness()[0]
