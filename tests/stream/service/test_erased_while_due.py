"""Users erased by another process while this one holds them in its cache and their timers are
due: the batch scores them, their writes are refused as erased, nothing decided about them goes
out or stays in the outbox, and the step goes on."""

from __future__ import annotations

import orjson
import pytest

from features.events import Event, decode_event
from stream.kafka.handler import Batch
from stream.service.wiring import build_handler, feature_store
from stream.settings import Settings

pytestmark = pytest.mark.integration

T0 = 1_767_225_600_000
DAY = 86_400_000


def view(event_id: str, user: str, ts: int) -> Event:
    raw = orjson.dumps({"event_id": event_id, "user_id": user, "type": "view", "ts": ts})
    event = decode_event(raw, now_ms=ts)
    assert isinstance(event, Event)
    return event


def test_due_users_erased_elsewhere_are_left_out_and_the_batch_goes_on(
    settings: Settings,
) -> None:
    handler = build_handler(settings)
    topic = settings.topics.events
    first = [view("a", "u0", T0), view("b", "u2", T0 + 1)]
    handler.handle(Batch(topic, first, [0, 0], [0, 1]))
    # `segstream forget` from another process: this one still holds both users in its cache.
    eraser = feature_store(settings)
    assert eraser.forget("u0") and eraser.forget("u2")

    # Weeks later in event time, both users' timers are due along with a new user's event.
    later = handler.handle(Batch(topic, [view("c", "u1", T0 + 60 * DAY)], [0], [2]))

    assert handler.last is not None
    assert set(handler.last.states) == {"u1"}
    assert {orjson.loads(m.value)["user_id"] for m in later.messages} == {"u1"}
    # The outbox holds what the second batch decided (offset 2 on) about u1 alone.
    kept = [orjson.loads(line) for _, blob in handler._outbox.unpublished({0: 2}, trim=False)
            for line in blob.split(b"\n")]  # fmt: skip
    assert kept and {change["user_id"] for change in kept} == {"u1"}
    handler.close()
