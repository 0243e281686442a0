"""A consumed batch is cut into moments of event time, in order, keeping every event."""

from __future__ import annotations

import orjson

from features.events import Event, decode_event
from stream.handler import Batch

DAY = 86_400_000
T0 = 1_767_225_600_000


def batch(*days: float) -> Batch:
    events = []
    for i, day in enumerate(days):
        raw = {"event_id": f"e{i}", "user_id": f"u{i}", "type": "view", "ts": T0 + int(day * DAY)}
        event = decode_event(orjson.dumps(raw), now_ms=T0 * 2)
        assert isinstance(event, Event)
        events.append(event)
    return Batch("events", events, [i % 2 for i in range(len(days))], list(range(len(days))))


def test_a_batch_within_one_moment_is_handled_whole() -> None:
    whole = batch(0, 0.5, 0.9, 1.0)
    assert whole.moments(DAY) == [(0, whole)]


def test_a_batch_spanning_weeks_is_cut_where_a_moment_is_over() -> None:
    weeks = batch(0, 0.5, 3, 3.2, 15, 16.5)
    moments = weeks.moments(DAY)
    assert [start for start, _ in moments] == [0, 2, 4, 5]
    assert [len(m.events) for _, m in moments] == [2, 2, 1, 1]
    # Every event once, in consumption order, with its own partition and offset.
    assert [e for _, m in moments for e in m.events] == list(weeks.events)
    assert [o for _, m in moments for o in m.offsets] == list(weeks.offsets)
    assert [p for _, m in moments for p in m.partitions] == list(weeks.partitions)


def test_an_event_older_than_its_moment_stays_in_it() -> None:
    late = batch(0, 10, 2, 10.5)
    assert [start for start, _ in late.moments(DAY)] == [0, 1]


def test_an_empty_batch_is_one_empty_moment() -> None:
    empty = batch()
    assert empty.moments(DAY) == [(0, empty)]
