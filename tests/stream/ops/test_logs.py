"""Logging: one JSON object per line, extras kept, configured once (handlers replaced)."""

from __future__ import annotations

import io
import logging

import orjson
import pytest

from stream.ops import logs

pytestmark = pytest.mark.unit


def _record(**extra: object) -> logging.LogRecord:
    record = logging.LogRecord(
        "stream.kafka.loop", logging.WARNING, "loop.py", 1, "lag %d", (5,), None
    )
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_a_record_becomes_one_json_line_with_its_extras() -> None:
    line = logs.JsonFormatter().format(_record(partition=3))
    assert "\n" not in line
    parsed = orjson.loads(line)
    assert parsed["level"] == "WARNING"
    assert parsed["logger"] == "stream.kafka.loop"
    assert parsed["message"] == "lag 5"
    assert parsed["partition"] == 3
    assert parsed["time"].endswith("+00:00")


def test_an_exception_is_kept_in_the_line() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.LogRecord(
            "x", logging.ERROR, "f", 1, "failed", (), __import__("sys").exc_info()
        )
    parsed = orjson.loads(logs.JsonFormatter().format(record))
    assert "ValueError: boom" in parsed["exception"]


def test_configure_replaces_handlers_and_sets_the_level(monkeypatch: pytest.MonkeyPatch) -> None:
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    err = io.StringIO()
    monkeypatch.setattr(logs.sys, "stderr", err)
    try:
        logs.configure("warning", "json")
        logs.configure("warning", "json")  # twice: still one handler
        assert len(root.handlers) == 1
        logging.getLogger("stream.test").info("hidden")
        logging.getLogger("stream.test").warning("shown %s", "here")
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)
    lines = err.getvalue().splitlines()
    assert [orjson.loads(line)["message"] for line in lines] == ["shown here"]
