"""`prune` forgets what is out of reach as soon as it is: a stored state holds only what its
windows and id memories still cover, and no decision or feature changes because of it.

The month below is a shopper's 30 days: sessions of views, searches, carts and orders, a few events
out of order inside the lateness, ids sent twice and records sent again hours later (late).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest

from features.definitions import (
    APPLIED,
    DEFAULT_WINDOWS,
    DUPLICATE,
    ID_MEMORY_MS,
    LATE,
    UserState,
    compute_features,
    decide,
    prune,
)
from features.events import Event
from tests.features.test_definitions import DAY, HOUR, MINUTE, RULES, SECOND, T0

pytestmark = pytest.mark.unit

CATEGORIES = ("shoes", "bags", "books", "toys", "audio")
KINDS = ("view", "view", "view", "search", "add_to_cart", "remove_from_cart", "purchase", "review")


def event(event_id: str, kind: str = "view", ts: int = T0, **fields: Any) -> Event:
    fields.setdefault("user_id", "u1")
    return Event(event_id=event_id, type=kind, ts=ts, ts_ms=ts, **fields)


def month(seed: int) -> list[Event]:
    """A month of one shopper's events in arrival order."""
    rng = random.Random(seed)
    events: list[Event] = []
    for day in range(30):
        for s in range(rng.randrange(4)):
            session, ts = f"s{day}-{s}", T0 + day * DAY + rng.randrange(20 * HOUR)
            for n in range(rng.randrange(2, 12)):
                ts += rng.randrange(10 * SECOND, 5 * MINUTE)
                kind = rng.choice(KINDS)
                fields: dict[str, Any] = {"session_id": session}
                if kind != "search":
                    fields.update(category=rng.choice(CATEGORIES), product_id=f"p{n % 4}")
                    fields["price"] = round(rng.uniform(1, 200), 2)
                if kind == "purchase":
                    fields.update(order_id=f"o{day}-{s}", quantity=rng.randrange(1, 3))
                if kind == "review":
                    fields["rating"] = float(rng.randrange(1, 6))
                events.append(event(f"e{len(events)}", kind, ts, **fields))
    arrivals = list(events)
    for i in range(1, len(arrivals), 7):  # out of order, inside the lateness
        arrivals[i - 1], arrivals[i] = arrivals[i], arrivals[i - 1]
    for i in range(5, len(events), 11):  # an id sent twice, a few minutes apart
        arrivals.insert(min(len(arrivals), arrivals.index(events[i]) + 3), events[i])
    for i in range(9, len(events), 23):  # a record sent again hours later: late
        again = events[i].ts_ms + 3 * HOUR
        later = [j for j, e in enumerate(arrivals) if e.ts_ms > again]
        if later:
            arrivals.insert(later[0], events[i])
    return arrivals


def fold(events: Sequence[Event], *, pruned: bool) -> tuple[UserState, list[int], int]:
    """Decide `events` as records 0, 1, ... of partition 0; with `pruned`, pruned after each
    batch of 5 records as the store prunes after every batch."""
    state, outcomes, watermark = UserState(), [], 0
    for offset, one in enumerate(events):
        outcomes.append(decide(state, one, 0, offset, watermark, RULES))
        watermark = max(watermark, one.ts_ms)
        if pruned and offset % 5 == 4:
            prune(state, watermark, RULES)
    if pruned:
        prune(state, watermark, RULES)
    return state, outcomes, watermark


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_month_pruned_decides_and_reads_as_the_month_kept_whole(seed: int) -> None:
    events = month(seed)
    kept, kept_outcomes, watermark = fold(events, pruned=False)
    pruned, pruned_outcomes, _ = fold(events, pruned=True)

    assert pruned_outcomes == kept_outcomes
    assert {LATE, DUPLICATE} <= set(kept_outcomes)
    for now in (watermark, watermark + HOUR, watermark + 3 * DAY, watermark + 40 * DAY):
        assert compute_features(pruned, now) == compute_features(kept, now)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_month_pruned_keeps_only_what_is_in_reach(seed: int) -> None:
    state, _, watermark = fold(month(seed), pruned=True)

    horizon = watermark - RULES.lateness_ms
    assert all(ts >= horizon for ts in state.recent_ids.values())
    assert all(ts >= horizon - ID_MEMORY_MS for ts in state.recent_sessions.values())
    assert all(ts >= horizon - ID_MEMORY_MS for ts in state.recent_orders.values())
    for window, buckets in zip(DEFAULT_WINDOWS, state.windows, strict=True):
        oldest = watermark // window.bucket_ms - window.buckets + 1
        assert all(index >= oldest for index in buckets), window.name
    # What is left of a month of about 200 events: the last hour's ids, the last day's sessions
    # and orders, the buckets the windows still cover.
    kept, _, _ = fold(month(seed), pruned=False)
    assert len(msgspec.msgpack.encode(state)) < len(msgspec.msgpack.encode(kept)) / 2


def test_an_id_inside_the_lateness_outlives_a_prune_that_drops_older_ones() -> None:
    state = UserState()
    first, second = event("e1", ts=T0), event("e2", ts=T0 + 2 * HOUR - MINUTE)
    assert decide(state, first, 0, 0, 0, RULES) == APPLIED
    assert decide(state, second, 0, 1, T0, RULES) == APPLIED
    watermark = second.ts_ms

    prune(state, watermark, RULES)

    assert list(state.recent_ids) == ["e2"]
    assert decide(state, second, 0, 2, watermark, RULES) == DUPLICATE  # 1 minute behind
    assert decide(state, first, 0, 3, watermark, RULES) == LATE  # its id is gone: late anyway
    assert compute_features(state, watermark)["views_total"] == 2


def test_a_session_or_order_used_again_moves_behind_older_ones() -> None:
    state = UserState()
    arrivals = [
        event("a", "purchase", T0, session_id="s1", order_id="o1", price=1.0),
        event("b", "purchase", T0 + MINUTE, session_id="s2", order_id="o2", price=1.0),
        event("c", "purchase", T0 + 30 * HOUR, session_id="s1", order_id="o1", price=1.0),
    ]
    watermark = 0
    for offset, one in enumerate(arrivals):
        assert decide(state, one, 0, offset, watermark, RULES) == APPLIED
        watermark = one.ts_ms

    assert list(state.recent_sessions) == ["s2", "s1"]
    assert list(state.recent_orders) == ["o2", "o1"]
    prune(state, watermark, RULES)  # s2 and o2 were last used 30 h ago

    assert state.recent_sessions == {"s1": T0 + 30 * HOUR}
    assert state.recent_orders == {"o1": T0 + 30 * HOUR}
    assert (state.sessions, state.orders) == (2, 2)


def test_an_entry_out_of_order_behind_a_fresh_one_waits_for_the_next_scan() -> None:
    # e2 arrives after e1 with an older time (inside the lateness): the first entry, e1, is
    # fresh for a while after e2 is out of reach. Keeping e2 longer changes no result.
    state = UserState()
    assert decide(state, event("e1", ts=T0 + 30 * MINUTE), 0, 0, 0, RULES) == APPLIED
    assert decide(state, event("e2", ts=T0), 0, 1, T0 + 30 * MINUTE, RULES) == APPLIED

    prune(state, T0 + HOUR + 10 * MINUTE, RULES)
    assert list(state.recent_ids) == ["e1", "e2"]
    prune(state, T0 + 2 * HOUR, RULES)
    assert state.recent_ids == {}


def test_a_state_stored_unpruned_loads_and_is_pruned_on_its_next_write() -> None:
    # States written before prune dropped entries eagerly hold a month of ids and buckets.
    events = month(4)
    kept, _, watermark = fold(events, pruned=False)
    stored = b"%010d" % 7 + msgspec.msgpack.encode(kept)

    loaded = msgspec.msgpack.decode(stored[10:], type=UserState)
    prune(loaded, watermark, RULES)

    assert compute_features(loaded, watermark) == compute_features(kept, watermark)
    assert loaded == fold(events, pruned=True)[0]
