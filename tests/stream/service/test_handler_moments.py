"""A batch spanning weeks of event time (a quiet shop's backlog) is scored moment by moment.

Real Redis, the service's handler. Each user is scored once per moment, so a snapshot resolves
a horizon after it was taken and sees a purchase inside its horizon even when later purchases
came in the same consumed batch.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from features.events import Event, decode_event
from stream.kafka.handler import Batch
from stream.service.wiring import build_handler
from stream.settings import Settings

pytestmark = pytest.mark.integration

DAY = 86_400_000
T0 = 1_767_225_600_000


def event(n: int, user: str, kind: str, day: float) -> Event:
    raw: dict[str, Any] = {"event_id": f"e{n}", "user_id": user, "type": kind}
    raw["ts"] = T0 + int(day * DAY)
    if kind == "purchase":
        raw.update(price=20.0, quantity=1, order_id=f"o{n}")
    decoded = decode_event(orjson.dumps(raw), now_ms=T0 * 2)
    assert isinstance(decoded, Event)
    return decoded


def one_batch(settings: Settings, events: list[Event], partitions: list[int]) -> Batch:
    """The events as consumed from the start of their partitions."""
    at = [partitions[:i].count(p) for i, p in enumerate(partitions)]
    return Batch(settings.topics.events, events, partitions, at)


def test_a_snapshot_in_a_weeks_long_batch_resolves_with_the_purchase_inside_its_horizon(
    settings: Settings,
) -> None:
    handler = build_handler(settings)
    purchases = [event(i, "u", "purchase", day) for i, day in enumerate((0, 3, 20))]
    handler.handle(one_batch(settings, purchases, [0, 0, 0]))
    # Taken at the first purchase, bought on day 3 (within 7 days), resolved at day 20. Scored
    # once at the batch's end, the user would have had no snapshot before day 20.
    assert [(label.bought, label.time_ms) for label in handler.resolved] == [(True, T0 + 20 * DAY)]
    handler.close()


def test_a_late_event_in_a_later_moment_is_rejected_under_its_own_index(
    settings: Settings,
) -> None:
    handler = build_handler(settings)
    events = [event(0, "a", "view", 0), event(1, "b", "view", 10), event(2, "c", "view", 1)]
    outcome = handler.handle(one_batch(settings, events, [0, 0, 0]))
    assert [(r.index, r.stage) for r in outcome.rejections] == [(2, "late")]
    handler.close()
