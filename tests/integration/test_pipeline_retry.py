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
from stream.handler import Batch
from stream.pipeline import build_handler
from stream.settings import Settings

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


def test_a_retried_batch_publishes_the_changes_of_the_failed_attempt(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    handler = build_handler(settings)
    batch = Batch(settings.topics.events, events(3), [0, 0, 0], [0, 1, 2])
    settle = handler.store._settle
    failures = []

    def settle_then_fail(*args: Any, **kwargs: Any) -> Any:
        settled = settle(*args, **kwargs)
        if not failures:
            failures.append(1)
            msg = "redis went away after the writes"
            raise StoreUnavailableError(msg)
        return settled

    monkeypatch.setattr(handler.store, "_settle", settle_then_fail)
    with pytest.raises(TransientError):
        handler.handle(batch)
    retried = handler.handle(batch)
    assert handler.last is not None
    assert handler.last.duplicates == 3  # the first attempt's writes had landed
    assert change_ids(retried.messages) == {"u0:1", "u1:1", "u2:1"}
    # Once the batch succeeded, the next one does not publish them again.
    newcomer = events(4)[3]
    later = handler.handle(Batch(settings.topics.events, [newcomer], [0], [3]))
    assert change_ids(later.messages) == {"u3:1"}
    handler.close()
