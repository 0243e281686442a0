"""The per-user feature definitions, checked against features computed by hand.

Every expected value below is worked out from the events in the test, not read back from the code:
the windows are the defaults (1h, 24h, 7d, 30d, 24 buckets each, so buckets of 150 s, 1 h, 7 h and
30 h). T0 is 2025-11-27T00:00:00Z, which starts a bucket of the 1h, 24h and 7d windows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import msgspec
import pytest

from features.definitions import (
    APPLIED,
    DEFAULT_WINDOWS,
    DUPLICATE,
    LATE,
    MAX_CATEGORIES,
    RECENCY_CAP_DAYS,
    TYPE_NAMES,
    TYPES,
    Rules,
    UserState,
    Value,
    Window,
    catalog,
    compute_features,
    decide,
    parse_windows,
    prune,
    to_vector,
    top_categories,
)
from features.events import Event
from features.reference import features_of

pytestmark = pytest.mark.unit

T0 = 1_764_201_600_000  # 2025-11-27T00:00:00Z
SECOND = 1_000
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
DAY = 24 * HOUR
RULES = Rules(lateness_ms=HOUR)


def event(event_id: str, kind: str = "view", ts: int = T0, **fields: Any) -> Event:
    """An event as `decode_event` would return it: `ts_ms` is the event time in ms."""
    fields.setdefault("user_id", "u1")
    return Event(event_id=event_id, type=kind, ts=ts, ts_ms=ts, **fields)


def fold(
    events: Sequence[Event], rules: Rules = RULES, *, pruned: bool = False
) -> tuple[UserState, list[int], int]:
    """Decide `events` in order as records 0, 1, ... of partition 0, as the store does.

    Returns the state, each event's outcome and the partition watermark after the last event.
    With `pruned`, the state is pruned after every event, as the store prunes after every batch.
    """
    state, outcomes, watermark = UserState(), [], 0
    for offset, one in enumerate(events):
        outcomes.append(decide(state, one, 0, offset, watermark, rules))
        watermark = max(watermark, one.ts_ms)
        if pruned:
            prune(state, watermark, rules)
    return state, outcomes, watermark


def window_block(name: str, **values: Value) -> dict[str, Value]:
    """Every feature of one window, zero unless given (`views=3`, `spend=1.5`, ...)."""
    block: dict[str, Value] = {f"events_{name}": 0, f"spend_{name}": 0.0, f"orders_{name}": 0}
    block.update({f"{n}_{name}": 0 for n in TYPE_NAMES})
    for key, value in values.items():
        block[f"{key}_{name}"] = value
    return block


# A shopper's day: two sessions of browsing and an order of two lines, then a one-line order
# without an order id and two reviews in a third session.
SHOPPER = (
    event("e1", "view", T0, session_id="s1", product_id="p1", category="shoes", price=50.0),
    event("e2", "view", T0 + MINUTE, session_id="s1", product_id="p2", category="shoes",
          price=30.0),
    event("e3", "add_to_cart", T0 + 2 * MINUTE, session_id="s1", category="shoes", price=50.0,
          quantity=1),
    event("e4", "search", T0 + 3 * MINUTE, session_id="s1", query="boots"),
    event("e5", "view", T0 + 10 * MINUTE, session_id="s2", category="bags", price=120.0),
    event("e6", "add_to_cart", T0 + 11 * MINUTE, session_id="s2", category="bags", price=120.0,
          quantity=1),
    event("e7", "remove_from_cart", T0 + 12 * MINUTE, session_id="s2", category="bags",
          price=120.0),
    event("e8", "purchase", T0 + 20 * MINUTE, session_id="s2", order_id="o1", category="shoes",
          price=50.0, quantity=2),
    event("e9", "purchase", T0 + 20 * MINUTE + SECOND, session_id="s2", order_id="o1",
          category="socks", price=4.99, quantity=3),
    event("e10", "purchase", T0 + 2 * HOUR, session_id="s3", category="bags", price=19.99),
    event("e11", "review", T0 + 3 * HOUR, session_id="s3", category="shoes", rating=4.0),
    event("e12", "review", T0 + 3 * HOUR + 1, session_id="s3", category="bags", rating=5.0),
)  # fmt: skip
# Lifetime features of SHOPPER that do not depend on when they are read.
SHOPPER_LIFETIME: dict[str, Value] = {
    "events_total": 12,
    "views_total": 3,
    "searches_total": 1,
    "add_to_cart_total": 2,
    "remove_from_cart_total": 1,
    "purchases_total": 3,
    "reviews_total": 2,
    "spend_total": 134.96,  # 2 * 50.00 + 3 * 4.99 + 19.99
    "monetary": 134.96,
    "orders_total": 2,  # o1 (two lines) and e10 (no order id: the event is its own order)
    "frequency": 2,
    "sessions": 3,
    # Per visit: 3 sessions.
    "views_per_session": 1.0,
    "searches_per_session": 0.3333,
    "add_to_cart_per_session": 0.6667,
    "remove_from_cart_per_session": 0.3333,
    "purchases_per_session": 1.0,
    "reviews_per_session": 0.6667,
    "first_seen": T0,
    "last_seen": T0 + 3 * HOUR + 1,
    "avg_order_value": 67.48,  # 134.96 / 2
    "view_to_cart": 0.6667,  # 2 carts / 3 views
    "cart_to_purchase": 1.0,  # 3 purchases / 2 carts, capped at 1
    "review_count": 2,
    "mean_rating": 4.5,
    "price_level": 62.78,  # (50 + 30 + 50 + 120 * 3 + 50 + 4.99 + 19.99) / 9 = 62.7756
    "distinct_categories": 3,
    "top_categories": ["bags", "shoes", "socks"],  # bags 5, shoes 5 (tie: by name), socks 1
}
ALL_OF_SHOPPER = {
    "views": 3,
    "searches": 1,
    "add_to_cart": 2,
    "remove_from_cart": 1,
    "purchases": 3,
    "reviews": 2,
    "events": 12,
    "spend": 134.96,
    "orders": 2,
}


# -- compute_features: hand-computed profiles ------------------------------------------------


def test_shopper_read_at_the_watermark() -> None:
    state, outcomes, watermark = fold(SHOPPER)
    assert outcomes == [APPLIED] * 12
    assert watermark == T0 + 3 * HOUR + 1

    expected = {
        **SHOPPER_LIFETIME,
        "recency_days": 0.0417,  # last purchase 1 h - 1 ms before: 1/24 day
        "days_since_last_seen": 0.0,
        "tenure_days": 0.125,  # 3 h since the first event
        # 1h: buckets of 150 s, the 24 ending at now's reach back to T0 + 2h 2m 30s: the reviews.
        **window_block("1h", events=2, reviews=2),
        **window_block("24h", **ALL_OF_SHOPPER),
        **window_block("7d", **ALL_OF_SHOPPER),
        **window_block("30d", **ALL_OF_SHOPPER),
    }
    assert compute_features(state, watermark) == expected


def test_shopper_read_a_day_later() -> None:
    state, _, _ = fold(SHOPPER)

    expected = {
        **SHOPPER_LIFETIME,
        "recency_days": 0.9167,  # 22 h since the purchase at T0 + 2h
        "days_since_last_seen": 0.875,  # 21 h (less 1 ms) since the last review
        "tenure_days": 1.0,
        **window_block("1h"),
        # 24h: hourly buckets; read at T0 + 24h the oldest counted is T0 + 1h, so only e10-e12.
        **window_block("24h", events=3, purchases=1, reviews=2, spend=19.99, orders=1),
        **window_block("7d", **ALL_OF_SHOPPER),
        **window_block("30d", **ALL_OF_SHOPPER),
    }
    assert compute_features(state, T0 + DAY) == expected


def test_shopper_read_forty_days_later_keeps_lifetime_and_empties_every_window() -> None:
    state, _, _ = fold(SHOPPER)

    features = compute_features(state, T0 + 40 * DAY)

    assert {k: features[k] for k in SHOPPER_LIFETIME} == SHOPPER_LIFETIME
    for window in DEFAULT_WINDOWS:
        assert {k: v for k, v in features.items() if k.endswith(f"_{window.name}")} == (
            window_block(window.name)
        )
    assert features["recency_days"] == round(40 - 2 / 24, 4)


@pytest.mark.parametrize(("kind", "name"), list(zip(TYPES, TYPE_NAMES, strict=True)))
def test_each_type_is_counted_under_its_own_name(kind: str, name: str) -> None:
    state, _, _ = fold([event("e1", kind, T0)])

    features = compute_features(state, T0)

    assert features["events_total"] == 1
    assert {f"{n}_total": features[f"{n}_total"] for n in TYPE_NAMES} == {
        f"{n}_total": int(n == name) for n in TYPE_NAMES
    }
    for window in ("1h", "24h", "7d", "30d"):
        assert features[f"events_{window}"] == 1
        assert features[f"{name}_{window}"] == 1


def test_empty_state_has_zeros_and_capped_recency() -> None:
    features = compute_features(UserState(), T0)

    assert features["events_total"] == 0
    assert features["recency_days"] == RECENCY_CAP_DAYS
    assert features["days_since_last_seen"] == RECENCY_CAP_DAYS
    assert features["top_categories"] == []
    assert features["first_seen"] == features["last_seen"] == 0
    for name in ("avg_order_value", "view_to_cart", "cart_to_purchase", "mean_rating"):
        assert features[name] == 0.0
    assert features["price_level"] == 0.0
    for window in DEFAULT_WINDOWS:
        assert features[f"events_{window.name}"] == 0


def test_spend_is_price_times_quantity_of_purchases_only() -> None:
    state, _, _ = fold(
        [
            event("e1", "purchase", T0, price=10.25, quantity=4),  # 41.00
            event("e2", "purchase", T0 + 1, price=0.1, quantity=3),  # 0.30
            event("e3", "purchase", T0 + 2, price=7.5),  # no quantity: 1 -> 7.50
            event("e4", "purchase", T0 + 3, price=99.99, quantity=0),  # 0
            event("e5", "purchase", T0 + 4),  # no price: 0
            event("e6", "add_to_cart", T0 + 5, price=500.0, quantity=2),  # not a purchase
        ]
    )

    features = compute_features(state, T0 + 5)

    assert features["spend_total"] == features["monetary"] == 48.8
    assert features["spend_1h"] == features["spend_30d"] == 48.8
    assert features["orders_total"] == 5  # no order ids: every purchase is its own order
    assert features["avg_order_value"] == 9.76
    # Every priced event counts in the price level, purchase or not.
    assert features["price_level"] == 123.57  # (10.25 + 0.1 + 7.5 + 99.99 + 500.0) / 5


def test_orders_are_distinct_order_ids_and_count_in_the_window_of_their_first_line() -> None:
    state, _, _ = fold(
        [
            event("e1", "purchase", T0, order_id="o1", price=10.0),
            event("e2", "purchase", T0 + 30 * MINUTE, order_id="o2", price=5.0),
            event("e3", "purchase", T0 + 2 * HOUR, order_id="o1", price=2.5),  # late line of o1
            event("e4", "purchase", T0 + 2 * HOUR + 1, order_id="o3", price=1.0),
        ]
    )

    features = compute_features(state, T0 + 2 * HOUR + 1)

    assert features["orders_total"] == features["frequency"] == 3
    assert features["purchases_total"] == 4
    assert features["spend_total"] == 18.5
    assert features["avg_order_value"] == 6.17
    # Last hour: the second line of o1 (spend, but not a new order) and o3.
    assert features["purchases_1h"] == 2
    assert features["spend_1h"] == 3.5
    assert features["orders_1h"] == 1


def test_sessions_are_distinct_session_ids_and_events_without_one_are_not_a_session() -> None:
    state, _, _ = fold(
        [
            event("e1", ts=T0, session_id="a"),
            event("e2", ts=T0 + 1, session_id="b"),
            event("e3", ts=T0 + 2, session_id="a"),
            event("e4", ts=T0 + 3),
            event("e5", ts=T0 + 20 * HOUR, session_id="a"),
        ]
    )

    assert compute_features(state, T0 + 20 * HOUR)["sessions"] == 2


def test_first_and_last_seen_follow_event_time_not_arrival_order() -> None:
    state, outcomes, _ = fold(
        [event("e1", ts=T0 + 10 * MINUTE), event("e2", ts=T0), event("e3", ts=T0 + 5 * MINUTE)]
    )

    assert outcomes == [APPLIED] * 3
    features = compute_features(state, T0 + 10 * MINUTE)
    assert (features["first_seen"], features["last_seen"]) == (T0, T0 + 10 * MINUTE)


@pytest.mark.parametrize(
    ("purchase_at", "now", "expected"),
    [
        (T0, T0, 0.0),
        (T0, T0 + 12 * HOUR, 0.5),
        (T0, T0 + 36 * HOUR, 1.5),
        (T0, T0 + 1_000 * MINUTE, 0.6944),  # 1000 / 1440, rounded to 4 places
        (T0, T0 + 400 * DAY, RECENCY_CAP_DAYS),
    ],
)
def test_recency_days(purchase_at: int, now: int, expected: float) -> None:
    state, _, _ = fold([event("e1", "purchase", purchase_at, price=1.0)])

    features = compute_features(state, now)

    assert features["recency_days"] == expected
    assert features["days_since_last_seen"] == expected


def test_recency_is_about_purchases_and_seen_is_about_any_event() -> None:
    state, _, _ = fold([event("e1", "purchase", T0, price=1.0), event("e2", "view", T0 + 2 * DAY)])

    features = compute_features(state, T0 + 3 * DAY)

    assert features["recency_days"] == 3.0
    assert features["days_since_last_seen"] == 1.0


@pytest.mark.parametrize(
    ("kinds", "view_to_cart", "cart_to_purchase"),
    [
        ({"view": 4, "add_to_cart": 1}, 0.25, 0.0),
        ({"view": 3, "add_to_cart": 1, "purchase": 1}, 0.3333, 1.0),
        ({"add_to_cart": 3, "purchase": 2}, 0.0, 0.6667),  # no views: 0, not a division error
        ({"view": 1, "add_to_cart": 2, "purchase": 5}, 2.0, 1.0),  # capped at 1
        ({"purchase": 2}, 0.0, 0.0),
    ],
)
def test_funnel_ratios(kinds: dict[str, int], view_to_cart: float, cart_to_purchase: float) -> None:
    events = [event(f"{kind}{i}", kind, T0 + i) for kind, n in kinds.items() for i in range(n)]
    state, _, _ = fold(events)

    features = compute_features(state, T0 + 10)

    assert features["view_to_cart"] == view_to_cart
    assert features["cart_to_purchase"] == cart_to_purchase


def test_mean_rating_counts_ratings_of_reviews_only() -> None:
    state, _, _ = fold(
        [
            event("e1", "review", T0, rating=5.0),
            event("e2", "review", T0 + 1, rating=4.0),
            event("e3", "review", T0 + 2, rating=4.0),
            event("e4", "review", T0 + 3),  # a review without a rating
            event("e5", "view", T0 + 4, rating=1.0),  # a rating on a view is not a review
        ]
    )

    features = compute_features(state, T0 + 4)

    assert features["reviews_total"] == 4
    assert features["review_count"] == 3
    assert features["mean_rating"] == 4.333


def test_categories_distinct_and_top_three_by_count_then_name() -> None:
    counts = {"toys": 2, "books": 3, "garden": 1, "audio": 2, "food": 3}
    events = [
        event(f"{name}{i}", ts=T0 + i, category=name)
        for name, n in counts.items()
        for i in range(n)
    ]
    state, _, _ = fold([*events, event("nocat", ts=T0 + 5), event("empty", ts=T0 + 6, category="")])

    features = compute_features(state, T0 + 6)

    assert features["distinct_categories"] == 5
    assert features["top_categories"] == ["books", "food", "audio"]


def test_top_categories_of_fewer_than_k() -> None:
    assert top_categories({"b": 1, "a": 1}) == ["a", "b"]
    assert top_categories({}) == []
    assert top_categories({"a": 1, "b": 2, "c": 3}, k=1) == ["c"]


def test_categories_beyond_the_cap_replace_the_rarest() -> None:
    events = [event(f"e{i}", ts=T0 + i, category=f"c{i:02}") for i in range(MAX_CATEGORIES)]
    events += [event("again", ts=T0 + 100, category="c05")]
    events += [event("new", ts=T0 + 101, category="zz")]
    state, _, _ = fold(events)

    features = compute_features(state, T0 + 101)

    assert features["distinct_categories"] == MAX_CATEGORIES
    # c00 was the rarest (count 1, first by name): zz took its place with count 1 + 1.
    assert "c00" not in state.categories
    assert state.categories["zz"] == 2
    assert features["top_categories"] == ["c05", "zz", "c01"]


# -- rolling windows: expiry and bucket edges ------------------------------------------------


def test_a_24h_count_read_a_day_later_is_zero() -> None:
    state, _, _ = fold([event("e1", "purchase", T0 + 30 * MINUTE, price=9.99)])

    later = compute_features(state, T0 + 30 * MINUTE + DAY)
    just_before = compute_features(state, T0 + DAY - 1)

    assert (later["events_24h"], later["purchases_24h"]) == (0, 0)
    assert (later["spend_24h"], later["orders_24h"]) == (0.0, 0)
    assert later["events_7d"] == 1
    assert later["purchases_total"] == 1
    assert (just_before["events_24h"], just_before["spend_24h"], just_before["orders_24h"]) == (
        1,
        9.99,
        1,
    )


@pytest.mark.parametrize(
    ("window", "event_at", "read_at", "counted"),
    [
        # 24h, hourly buckets: an event counts while now is within 24 buckets of its own.
        ("24h", T0, T0, True),
        ("24h", T0, T0 + DAY - 1, True),  # now in the 24th bucket from the event's
        ("24h", T0, T0 + DAY, False),  # exactly 24 h later
        ("24h", T0 + HOUR - 1, T0 + DAY, False),  # 23 h 1 ms later, but 24 buckets on
        ("24h", T0 + HOUR - 1, T0 + DAY - 1, True),
        ("24h", T0 + HOUR, T0 + HOUR + DAY - 1, True),
        # 1h, buckets of 150 s.
        ("1h", T0, T0 + HOUR - 1, True),
        ("1h", T0, T0 + HOUR, False),
        ("1h", T0 + 149_999, T0 + HOUR, False),
        ("1h", T0 + 150_000, T0 + HOUR + 149_999, True),
        # 7d, buckets of 7 h (T0 starts one).
        ("7d", T0, T0 + 7 * DAY - 1, True),
        ("7d", T0, T0 + 7 * DAY, False),
        # 30d, buckets of 30 h; T0 is 6 h into its bucket, which started at T0 - 6h.
        ("30d", T0, T0 + 30 * DAY - 6 * HOUR - 1, True),
        ("30d", T0, T0 + 30 * DAY - 6 * HOUR, False),
    ],
)
def test_window_edges_are_at_bucket_granularity(
    window: str, event_at: int, read_at: int, counted: bool
) -> None:
    state, _, _ = fold([event("e1", "purchase", event_at, price=2.5, order_id="o1")])

    features = compute_features(state, read_at)

    assert features[f"events_{window}"] == int(counted)
    assert features[f"purchases_{window}"] == int(counted)
    assert features[f"orders_{window}"] == int(counted)
    assert features[f"spend_{window}"] == (2.5 if counted else 0.0)


def test_custom_windows_are_named_by_their_config_name() -> None:
    windows = parse_windows(("30m", "2d"), 6)
    rules = Rules(lateness_ms=HOUR, windows=windows)
    state, _, _ = fold([event("e1", ts=T0), event("e2", ts=T0 + HOUR)], rules)

    features = compute_features(state, T0 + HOUR, windows)

    assert (features["views_30m"], features["views_2d"]) == (1, 2)
    assert "views_24h" not in features


# -- decide: fence, duplicate ids, lateness --------------------------------------------------


def test_decide_applies_a_new_event_and_advances_the_fence() -> None:
    state = UserState()

    assert decide(state, event("e1"), 3, 17, 0, RULES) == APPLIED

    assert state.fence == {3: 17}
    assert state.partition == 3
    assert state.counts[TYPES.index("view")] == 1


def test_decide_skips_records_at_or_below_the_fence() -> None:
    state = UserState()
    decide(state, event("e1"), 0, 5, 0, RULES)

    # A re-delivery of the same record, and an older record of the same partition.
    assert decide(state, event("e1"), 0, 5, T0, RULES) == DUPLICATE
    assert decide(state, event("e0", ts=T0 - 1), 0, 4, T0, RULES) == DUPLICATE

    assert state.counts == [1, 0, 0, 0, 0, 0]
    assert state.fence == {0: 5}


def test_the_fence_is_per_partition() -> None:
    state = UserState()
    decide(state, event("e1"), 0, 5, 0, RULES)

    assert decide(state, event("e2", ts=T0 + 1), 1, 0, 0, RULES) == APPLIED
    assert state.fence == {0: 5, 1: 0}
    assert state.counts[0] == 2


def test_decide_skips_an_event_id_already_applied_at_a_new_offset() -> None:
    state = UserState()
    decide(state, event("e1", "purchase", price=5.0), 0, 0, 0, RULES)

    outcome = decide(state, event("e1", "purchase", price=5.0), 0, 1, T0, RULES)

    assert outcome == DUPLICATE
    assert state.fence == {0: 1}  # the record was seen: a re-delivery of it is fenced
    features = compute_features(state, T0)
    assert (features["purchases_total"], features["spend_total"]) == (1, 5.0)


def test_decide_reports_an_event_older_than_the_lateness_as_late() -> None:
    state = UserState()
    watermark = T0 + 2 * HOUR

    late = decide(state, event("e1", ts=watermark - HOUR - 1), 0, 0, watermark, RULES)
    on_time = decide(state, event("e2", ts=watermark - HOUR), 0, 1, watermark, RULES)

    assert (late, on_time) == (LATE, APPLIED)
    assert state.counts[0] == 1
    assert state.first_seen == watermark - HOUR
    assert state.fence == {0: 1}
    assert "e1" not in state.recent_ids  # not applied, so not a duplicate later either


def test_a_redelivered_late_record_is_late_again_and_never_applied() -> None:
    """At least once into the dead-letter topic: a crash may come between the state write and
    the dead letter, so a late record delivered again is reported late again."""
    state = UserState()
    watermark = T0 + 2 * HOUR
    assert decide(state, event("e1", ts=T0), 0, 0, watermark, RULES) == LATE

    assert decide(state, event("e1", ts=T0), 0, 0, watermark, RULES) == LATE
    assert decide(state, event("e1", ts=T0), 0, 0, watermark + DAY, RULES) == LATE
    assert state.counts == [0] * len(TYPES)


def test_a_redelivered_on_time_record_is_a_duplicate() -> None:
    state = UserState()
    decide(state, event("e1", ts=T0), 0, 0, 0, RULES)
    decide(state, event("e2", ts=T0 + 2 * HOUR), 0, 1, T0, RULES)

    # Re-delivered long after: older than the lateness now, but it was applied, not late.
    assert decide(state, event("e1", ts=T0), 0, 0, T0 + 2 * HOUR, RULES) == DUPLICATE


def test_every_redelivered_late_record_is_late_again() -> None:
    """A client flushing a buffer of old events gives one user many late records at once; a
    crash before the commit re-delivers them all, and each must be dead-lettered again."""
    state = UserState()
    decide(state, event("now", ts=T0 + 2 * HOUR), 0, 0, 0, RULES)
    buffered = [event(f"old{i}", ts=T0 + i * SECOND) for i in range(20)]
    first = [decide(state, e, 0, 1 + i, T0 + 2 * HOUR, RULES) for i, e in enumerate(buffered)]

    again = [decide(state, e, 0, 1 + i, T0 + 2 * HOUR, RULES) for i, e in enumerate(buffered)]

    assert first == [LATE] * 20
    assert again == [LATE] * 20


def test_lateness_is_checked_before_event_ids() -> None:
    """An event re-sent (new offset) once older than the lateness is late even though its id
    was applied: so forgetting ids older than the lateness never changes a decision."""
    state = UserState()
    decide(state, event("e1", "purchase", T0, price=5.0), 0, 0, 0, RULES)
    decide(state, event("e2", ts=T0 + 2 * HOUR), 0, 1, T0, RULES)

    assert decide(state, event("e1", "purchase", T0, price=5.0), 0, 2, T0 + 2 * HOUR, RULES) == (
        LATE
    )
    assert compute_features(state, T0 + 2 * HOUR)["purchases_total"] == 1


def test_zero_lateness_accepts_only_events_at_or_after_the_watermark() -> None:
    rules = Rules(lateness_ms=0)
    state = UserState()

    assert decide(state, event("e1", ts=T0), 0, 0, T0, rules) == APPLIED
    assert decide(state, event("e2", ts=T0 - 1), 0, 1, T0, rules) == LATE


# -- prune: forgets only what no future decision or read can need ----------------------------


def views(count: int, start: int) -> list[Event]:
    """`count` plain views a second apart from `start`: enough of them make prune do its work."""
    return [event(f"v{start}-{i}", ts=start + i * SECOND) for i in range(count)]


# Each case has enough events (80 ids, sessions, orders or buckets) that a lazy prune prunes.
PRUNE_CASES = {
    "duplicate within the lateness": [
        event("e1", ts=T0),
        *views(80, T0 + 30 * MINUTE),
        event("e1", ts=T0),
    ],
    "duplicate of an event older than the lateness": [
        event("e1", "purchase", T0, price=5.0),
        *views(80, T0 + 2 * HOUR),
        event("e1", "purchase", T0, price=5.0),
    ],
    "sessions resumed 20 h after their last event": [
        *(event(f"a{i}", ts=T0 + i, session_id=f"s{i}") for i in range(80)),
        event("b", ts=T0 + 19 * HOUR),
        *(event(f"c{i}", ts=T0 + 20 * HOUR + i, session_id=f"s{i}") for i in range(80)),
    ],
    "order lines arriving 20 h after the first": [
        *(event(f"a{i}", "purchase", T0 + i, order_id=f"o{i}", price=1.0) for i in range(80)),
        event("b", ts=T0 + 19 * HOUR),
        *(
            event(f"c{i}", "purchase", T0 + 20 * HOUR + i, order_id=f"o{i}", price=2.0)
            for i in range(80)
        ),
    ],
    "windows slide past old buckets": [
        *(event(f"p{i}", "purchase", T0 + i * HOUR, price=1.5) for i in range(80)),
        event("x", ts=T0 + 80 * HOUR - 30 * MINUTE),
        event("y", ts=T0 + 9 * DAY),
        event("z", "purchase", T0 + 9 * DAY - 59 * MINUTE, price=2.0),
    ],
    "late and on-time events around a moving watermark": [
        event("e1", ts=T0 + HOUR),
        event("e2", ts=T0 - 1),  # late
        event("e3", ts=T0 + 30 * MINUTE),
        *views(80, T0 + 80 * MINUTE),
        event("e3", ts=T0 + 30 * MINUTE),  # duplicate id, 50 min behind
        event("e2", ts=T0 - 1),  # a late event sent again is late again
    ],
}


@pytest.mark.parametrize("events", PRUNE_CASES.values(), ids=PRUNE_CASES.keys())
def test_prune_keeps_decisions_and_features_identical(events: list[Event]) -> None:
    kept, kept_outcomes, watermark = fold(events)
    pruned, pruned_outcomes, _ = fold(events, pruned=True)

    assert pruned_outcomes == kept_outcomes
    for now in (watermark, watermark + HOUR, watermark + 3 * DAY, watermark + 40 * DAY):
        assert compute_features(pruned, now) == compute_features(kept, now)


def test_pruned_state_stays_small_however_long_the_history() -> None:
    # A purchase every 3 hours for 60 days, each in a new session and order.
    events = [
        event(f"e{i}", "purchase", T0 + i * 3 * HOUR, session_id=f"s{i}", order_id=f"o{i}")
        for i in range(480)
    ]
    state, outcomes, watermark = fold(events, pruned=True)

    assert outcomes == [APPLIED] * 480
    assert max(len(state.recent_ids), len(state.recent_sessions), len(state.recent_orders)) <= 64
    assert all(len(buckets) <= 2 * 24 for buckets in state.windows)
    assert len(msgspec.msgpack.encode(state)) < 8_000
    features = compute_features(state, watermark)
    assert (features["orders_total"], features["sessions"]) == (480, 480)
    # 30d: buckets of 30 h, T0 6 h into one; now (T0 + 1437 h) is in the 48th bucket after T0's,
    # so the window starts 25 buckets after it, at T0 + 744 h: purchases 248..479.
    assert features["purchases_30d"] == 232


# -- the state as stored: msgpack ------------------------------------------------------------


def test_state_round_trips_through_msgpack() -> None:
    state, _, watermark = fold(SHOPPER)
    state.fence[4] = 99

    blob = msgspec.msgpack.encode(state)
    back = msgspec.msgpack.decode(blob, type=UserState)

    assert back == state
    assert back.windows[0]  # integer bucket keys survive
    assert all(isinstance(index, int) for buckets in back.windows for index in buckets)
    assert back.fence == {0: 11, 4: 99}
    assert compute_features(back, watermark) == compute_features(state, watermark)
    assert isinstance(msgspec.msgpack.decode(blob), list)  # array-like: no field names stored


def test_empty_state_round_trips_through_msgpack() -> None:
    blob = msgspec.msgpack.encode(UserState())

    assert msgspec.msgpack.decode(blob, type=UserState) == UserState()


# -- parse_windows ---------------------------------------------------------------------------


def test_parse_windows_reads_minutes_hours_and_days() -> None:
    windows = parse_windows(["30m", "1h", "24h", "7d"], 6)

    assert windows == (
        Window("30m", 30 * MINUTE, 6),
        Window("1h", HOUR, 6),
        Window("24h", DAY, 6),
        Window("7d", 7 * DAY, 6),
    )
    assert [w.bucket_ms for w in windows] == [5 * MINUTE, 10 * MINUTE, 4 * HOUR, 28 * HOUR]


def test_default_windows() -> None:
    assert [(w.name, w.length_ms, w.buckets) for w in DEFAULT_WINDOWS] == [
        ("1h", HOUR, 24),
        ("24h", DAY, 24),
        ("7d", 7 * DAY, 24),
        ("30d", 30 * DAY, 24),
    ]


@pytest.mark.parametrize("bad", ["", "h", "0h", "1x", "1.5h", "-1h", "1H", "h1", "1 h", " 1h"])
def test_parse_windows_rejects_a_bad_name_and_names_it(bad: str) -> None:
    with pytest.raises(ValueError, match="is not <number><m\\|h\\|d>") as raised:
        parse_windows(["1h", bad], 24)

    assert repr(bad) in str(raised.value)


# -- catalog and model vectors ---------------------------------------------------------------


def test_catalog_lists_every_numeric_feature_once() -> None:
    defs = catalog()
    names = [d.name for d in defs]

    # 13 lifetime counts (tenure too) + 6 per-session rates + 8 counts per window + 4 money
    # + 1 spend per window + 3 ratios + 2 ages
    assert len(defs) == 13 + 6 + 8 * 4 + 4 + 4 + 3 + 2 == 64
    assert len(set(names)) == len(names)
    features = compute_features(UserState(), T0)
    assert set(names) <= set(features)
    # Timestamps and category names are not model inputs.
    assert set(features) - set(names) == {"first_seen", "last_seen", "top_categories"}


def test_catalog_follows_the_windows() -> None:
    windows = parse_windows(("30m", "2d"), 6)

    names = [d.name for d in catalog(windows)]

    assert len(names) == 13 + 6 + 8 * 2 + 4 + 2 + 3 + 2
    assert {"views_30m", "spend_2d", "orders_2d"} <= set(names)
    assert not any(n.endswith("_24h") for n in names)


def test_vector_of_nothing_is_every_default() -> None:
    defs = catalog()

    vector = to_vector({}, defs)

    assert len(vector) == len(defs)
    by_name = dict(zip((d.name for d in defs), vector, strict=True))
    assert by_name["recency_days"] == by_name["days_since_last_seen"] == math.log1p(365.0)
    assert {v for k, v in by_name.items() if "days" not in k} == {0.0}
    # An empty profile is the same model input as no profile.
    assert to_vector(compute_features(UserState(), T0), defs) == vector


def test_vector_transforms_counts_and_money_by_log1p_and_keeps_ratios() -> None:
    state, _, watermark = fold(SHOPPER)
    features = compute_features(state, watermark)

    by_name = dict(zip((d.name for d in catalog()), to_vector(features, catalog()), strict=True))

    assert by_name["events_total"] == math.log1p(12)
    assert by_name["views_1h"] == 0.0
    assert by_name["reviews_1h"] == math.log1p(2)
    assert by_name["spend_total"] == math.log1p(134.96)
    assert by_name["recency_days"] == math.log1p(0.0417)
    assert by_name["view_to_cart"] == 0.6667
    assert by_name["cart_to_purchase"] == 1.0
    assert by_name["mean_rating"] == 4.5


def test_vector_replaces_missing_and_non_numeric_values_by_defaults() -> None:
    defs = catalog()
    features: dict[str, Value] = {"events_total": ["not", "a", "number"], "spend_total": -5.0}

    by_name = dict(zip((d.name for d in defs), to_vector(features, defs), strict=True))

    assert by_name["events_total"] == 0.0
    assert by_name["spend_total"] == 0.0  # log1p of a negative is clamped at 0
    assert by_name["recency_days"] == math.log1p(RECENCY_CAP_DAYS)


# -- the fold agrees with the reference ------------------------------------------------------


REFERENCE_CASES = {
    "shopper": list(SHOPPER),
    "duplicates and late events": [
        event("e1", "purchase", T0 + 2 * HOUR, order_id="o1", price=3.0, quantity=2),
        event("e1", "purchase", T0 + 2 * HOUR, order_id="o1", price=3.0, quantity=2),
        event("e2", "view", T0 - 1, category="x"),  # late: more than 1 h behind
        event("e3", "purchase", T0 + HOUR + 30 * MINUTE, order_id="o1", price=1.25),
        event("e4", "review", T0 + 3 * HOUR, rating=2.0, session_id="s"),
    ],
    "orders across windows": [
        event("e1", "purchase", T0, order_id="o1", price=10.0),
        event("e2", "purchase", T0 + 20 * HOUR, order_id="o1", price=1.0, session_id="a"),
        event("e3", "purchase", T0 + 2 * DAY, order_id="o2", price=0.01, session_id="a"),
        event("e4", "add_to_cart", T0 + 2 * DAY + 1, category="c", price=0.01),
    ],
}


@pytest.mark.parametrize("events", REFERENCE_CASES.values(), ids=REFERENCE_CASES.keys())
def test_folded_state_gives_the_reference_features(events: list[Event]) -> None:
    state, outcomes, watermark = fold(events)
    accepted = [e for e, outcome in zip(events, outcomes, strict=True) if outcome == APPLIED]

    for now in (watermark, watermark + HOUR, watermark + 2 * DAY, watermark + 31 * DAY):
        assert compute_features(state, now) == features_of(accepted, now, DEFAULT_WINDOWS)


def test_reference_case_outcomes() -> None:
    _, outcomes, _ = fold(REFERENCE_CASES["duplicates and late events"])

    assert outcomes == [APPLIED, DUPLICATE, LATE, APPLIED, APPLIED]
