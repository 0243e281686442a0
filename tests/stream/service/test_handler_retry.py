"""A batch whose writes landed before the attempt failed still publishes its changes on retry.

The retry sees the batch's events as duplicates (their fences are stored), so it decides no
change itself: the changes of the failed attempt must come from the outbox.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from features.errors import StoreUnavailableError
from features.events import Event, decode_event
from stream.errors import TransientError
from stream.kafka.handler import Batch
from stream.service.segment_handler import SegmentHandler
from stream.service.wiring import build_handler
from stream.settings import Settings
from tests.stream.service.test_handler_moments import event

pytestmark = pytest.mark.integration

T0 = 1_767_225_600_000


def events(users: int) -> list[Event]:
    found = []
    for i in range(users):
        raw = orjson.dumps(
            {"event_id": f"e{i}", "user_id": f"u{i}", "type": "view", "ts": T0 + i * 1000}
        )
        event = decode_event(raw, now_ms=T0 * 2)
        assert isinstance(event, Event)
        found.append(event)
    return found


def change_ids(messages: list[Any]) -> set[str]:
    return {orjson.loads(m.value)["change_id"] for m in messages}


def fail_after_writes(monkeypatch: pytest.MonkeyPatch, handler: SegmentHandler, call: int) -> None:
    """The store's `call`-th settling of writes lands them, then Redis goes away (once)."""
    settle = handler.store._settle
    calls = []

    def settle_then_fail(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        settled = settle(*args, **kwargs)
        if len(calls) == call:
            msg = "redis went away after the writes"
            raise StoreUnavailableError(msg)
        return settled

    monkeypatch.setattr(handler.store, "_settle", settle_then_fail)


def test_a_retried_batch_publishes_the_changes_of_the_failed_attempt(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler = build_handler(settings)
    batch = Batch(settings.topics.events, events(3), [0, 0, 0], [0, 1, 2])
    fail_after_writes(monkeypatch, handler, call=1)
    with pytest.raises(TransientError):
        handler.handle(batch)
    retried = handler.handle(batch)
    assert handler.last is not None
    assert handler.last.duplicates == 3  # the first attempt's writes had landed
    assert change_ids(retried.messages) == {"u0:0:1", "u1:0:1", "u2:0:1"}
    # Once the batch succeeded, the next one does not publish them again.
    newcomer = events(4)[3]
    later = handler.handle(Batch(settings.topics.events, [newcomer], [0], [3]))
    assert change_ids(later.messages) == {"u3:0:1"}
    handler.close()


def test_a_retry_after_a_failed_later_moment_publishes_the_earlier_moments_changes(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler = build_handler(settings)
    # Two moments of event time (days 0 and 5), on two partitions.
    batch = Batch(
        settings.topics.events, [event(0, "a", "view", 0), event(1, "b", "view", 5)], [0, 1], [0, 0]
    )
    fail_after_writes(monkeypatch, handler, call=2)
    with pytest.raises(TransientError):
        handler.handle(batch)
    retried = handler.handle(batch)
    # Both moments' writes had landed: their changes come from the outbox, none is lost.
    assert change_ids(retried.messages) == {"a:0:1", "b:0:1"}
    handler.close()
