"""Event-time alignment of partitions (`stream.kafka.alignment`): who runs ahead is held back
until the slowest partition still delivering catches up; idle and new partitions."""

from __future__ import annotations

import pytest

from stream.kafka.alignment import Alignment

pytestmark = pytest.mark.unit

HOUR = 3_600_000
DAY = 24 * HOUR


def aligned(drift_ms: int = HOUR, idle_s: float = 1.0) -> Alignment:
    return Alignment(max_drift_ms=drift_ms, idle_s=idle_s)


def step(alignment: Alignment, owned: set[int], now: float) -> tuple[set[int], set[int]]:
    pause, resume = alignment.decide(owned, now)
    alignment.applied(pause, resume)
    return pause, resume


def test_partitions_within_the_drift_are_left_alone() -> None:
    alignment = aligned()
    alignment.observe({0: 10 * HOUR, 1: 10 * HOUR + 30 * 60_000}, 0.0)
    assert step(alignment, {0, 1}, 0.1) == (set(), set())


def test_a_partition_ahead_is_paused_until_the_others_are_within_half_the_drift() -> None:
    alignment = aligned(drift_ms=2 * HOUR)
    alignment.observe({0: 5 * DAY, 1: DAY}, 0.0)
    assert step(alignment, {0, 1}, 0.1) == ({0}, set())
    alignment.observe({1: 3 * DAY}, 0.5)
    # Held back, partition 0 delivers nothing, yet it is not idle: it has more to give.
    assert step(alignment, {0, 1}, 1.2) == (set(), set())
    alignment.observe({1: 5 * DAY - HOUR - 1}, 1.3)
    assert step(alignment, {0, 1}, 1.4) == (set(), set())  # within the drift, not half of it
    alignment.observe({1: 5 * DAY - HOUR}, 1.5)
    assert step(alignment, {0, 1}, 1.6) == (set(), {0})
    assert alignment.paused == set()


def test_an_idle_partition_holds_nobody_back() -> None:
    alignment = aligned(idle_s=1.0)
    alignment.observe({0: 5 * DAY, 1: DAY}, 0.0)
    assert step(alignment, {0, 1}, 0.1) == ({0}, set())
    # Partition 1 delivered its last record at 0.0: a second later it is idle (caught up).
    assert step(alignment, {0, 1}, 1.5) == (set(), {0})


def test_a_new_partition_holds_the_others_back_until_it_delivers_or_is_idle() -> None:
    """A backlog may be read one partition after another: a partition that has not delivered
    yet may hold the oldest events of all."""
    alignment = aligned(idle_s=1.0)
    alignment.assigned([0, 1], 0.0)
    alignment.observe({0: DAY}, 0.2)
    assert step(alignment, {0, 1}, 0.3) == ({0}, set())
    alignment.observe({1: DAY + HOUR // 2}, 0.6)
    assert step(alignment, {0, 1}, 0.7) == (set(), {0})
    # Had partition 1 stayed silent, partition 0 would have gone on after `idle_s`.
    other = aligned(idle_s=1.0)
    other.assigned([0, 1], 0.0)
    other.observe({0: DAY}, 0.2)
    assert step(other, {0, 1}, 0.3) == ({0}, set())
    assert step(other, {0, 1}, 1.3) == (set(), {0})


def test_a_drift_of_zero_never_pauses() -> None:
    alignment = aligned(drift_ms=0)
    alignment.observe({0: 50 * DAY, 1: DAY}, 0.0)
    assert step(alignment, {0, 1}, 0.1) == (set(), set())


def test_revoked_partitions_are_forgotten() -> None:
    alignment = aligned()
    alignment.observe({0: 5 * DAY, 1: DAY}, 0.0)
    step(alignment, {0, 1}, 0.1)
    alignment.forget([0])
    assert alignment.paused == set()
    assert 0 not in alignment.event_time
    # A partition no longer owned is never resumed (it is not ours to resume).
    alignment.observe({2: 9 * DAY}, 0.2)
    assert step(alignment, {1, 2}, 0.3) == ({2}, set())
    assert step(alignment, {1}, 0.4) == (set(), set())


def test_event_time_only_moves_forward() -> None:
    alignment = aligned()
    alignment.observe({0: 5 * DAY}, 0.0)
    alignment.observe({0: DAY}, 0.1)  # an older event later in the partition
    assert alignment.event_time[0] == 5 * DAY
