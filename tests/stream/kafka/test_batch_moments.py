"""A consumed batch is cut into moments of event time, keeping each partition's order."""

from __future__ import annotations

import orjson
import pytest

from features.events import Event, decode_event
from stream.kafka.handler import Batch

pytestmark = pytest.mark.unit

DAY = 86_400_000
T0 = 1_767_225_600_000


def batch(days: list[float], partitions: list[int] | None = None) -> Batch:
    events = []
    for i, day in enumerate(days):
        raw = {"event_id": f"e{i}", "user_id": f"u{i}", "type": "view", "ts": T0 + int(day * DAY)}
        event = decode_event(orjson.dumps(raw), now_ms=T0 * 2)
        assert isinstance(event, Event)
        events.append(event)
    partitions = partitions or [0] * len(days)
    offsets = [partitions[:i].count(p) for i, p in enumerate(partitions)]
    return Batch("events", events, partitions, offsets)


def test_a_batch_within_one_moment_is_handled_whole() -> None:
    whole = batch([0, 0.5, 0.9, 1.0])
    assert whole.moments(DAY) == [([0, 1, 2, 3], whole)]


def test_a_batch_spanning_weeks_is_cut_into_days_of_event_time() -> None:
    weeks = batch([0, 0.5, 3, 3.2, 15, 16.5])
    moments = weeks.moments(DAY)
    assert [indices for indices, _ in moments] == [[0, 1], [2, 3], [4], [5]]
    for indices, moment in moments:
        assert list(moment.events) == [weeks.events[i] for i in indices]
        assert list(moment.offsets) == [weeks.offsets[i] for i in indices]
        assert list(moment.partitions) == [weeks.partitions[i] for i in indices]


def test_partitions_consumed_one_after_the_other_share_their_moments() -> None:
    # Two partitions' chunks of the same two days, as a consumer delivers them.
    chunks = batch([0, 0.6, 1.2, 1.8, 0.1, 0.7, 1.3, 1.9], [0, 0, 0, 0, 1, 1, 1, 1])
    assert [indices for indices, _ in chunks.moments(DAY)] == [[0, 1, 4, 5], [2, 3, 6, 7]]


def test_a_late_event_stays_behind_the_events_before_it_in_its_partition() -> None:
    late = batch([0, 10, 2, 10.5, 0.5], [0, 0, 0, 0, 1])
    # Event 2 is older than event 1 but comes after it in partition 0: it stays after it.
    assert [indices for indices, _ in late.moments(DAY)] == [[0, 4], [1, 2, 3]]


def test_an_empty_batch_is_one_empty_moment() -> None:
    empty = batch([])
    assert empty.moments(DAY) == [([], empty)]
