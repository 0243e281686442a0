"""No user id in a log line at INFO or above, on a run that logs a lot (DEBUG on)."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
import pytest

from stream.kafka.loop import Loop
from stream.kafka.topics import ensure_topics
from stream.service.wiring import build_handler
from stream.settings import Settings
from tests.kafka_tools import produce
from tests.stream.service.test_segments_e2e import generated, keyed

pytestmark = pytest.mark.integration


def test_user_ids_appear_only_in_debug_records(
    settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ensure_topics(settings)
    lines = generated(tmp_path, 80, 10, 5)
    late = orjson.dumps({"event_id": "late-1", "user_id": "u0000001", "type": "view", "ts": 1})
    invalid = b'{"event_id": "bad-1", "user_id": "u0000002", "type": "teleport", "ts": 5}'
    produce(settings.kafka.bootstrap_servers, settings.topics.events, keyed([*lines, late]))
    produce(settings.kafka.bootstrap_servers, settings.topics.events, [(b"u0000002", invalid)])
    users = {orjson.loads(line)["user_id"] for line in lines}

    caplog.set_level(logging.DEBUG)
    handler = build_handler(settings)
    try:
        summary = Loop(settings, handler).run(until_idle=2)
    finally:
        handler.close()

    assert summary.dead_lettered, "the late and the invalid record should have been rejected"
    assert any(r.levelno >= logging.INFO for r in caplog.records), "nothing was logged at INFO"
    leaks = [
        (r.levelname, r.getMessage())
        for r in caplog.records
        if r.levelno >= logging.INFO and any(user in r.getMessage() for user in users)
    ]
    assert not leaks, leaks[:5]
