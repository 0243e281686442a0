"""The reference fold: features computed straight from the list of accepted events.

It is the specification the Redis store is tested against. It shares the definitions' constants
and window arithmetic but none of the incremental state: every feature is recomputed from the
events, and duplicates are found with an unbounded set of event ids.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from features.definitions import (
    DEFAULT_WINDOWS,
    RECENCY_CAP_DAYS,
    TENURE_CAP_DAYS,
    TYPE_NAMES,
    TYPES,
    Value,
    Window,
    top_categories,
)
from features.events import Event

DAY_MS = 86_400_000


@dataclass
class Arrival:
    """One valid record as the loop consumed it."""

    event: Event
    partition: int
    offset: int


@dataclass
class Reference:
    lateness_ms: int
    windows: Sequence[Window] = DEFAULT_WINDOWS
    accepted: dict[str, list[Event]] = field(default_factory=dict)
    late: list[Arrival] = field(default_factory=list)
    watermarks: dict[int, int] = field(default_factory=dict)
    partition_of: dict[str, int] = field(default_factory=dict)
    _seen_ids: set[str] = field(default_factory=set)
    _seen_offsets: set[tuple[int, int]] = field(default_factory=set)

    def fold(self, arrivals: Iterable[Arrival]) -> None:
        for arrival in arrivals:
            self._one(arrival)

    def _one(self, arrival: Arrival) -> None:
        event, where = arrival.event, (arrival.partition, arrival.offset)
        before = self.watermarks.get(arrival.partition, 0)
        self.watermarks[arrival.partition] = max(before, event.ts_ms)
        if where in self._seen_offsets:
            return
        self._seen_offsets.add(where)
        self.partition_of[event.user_id] = arrival.partition
        if event.ts_ms < before - self.lateness_ms:
            self.late.append(arrival)
            return
        if event.event_id in self._seen_ids:
            return
        self._seen_ids.add(event.event_id)
        self.accepted.setdefault(event.user_id, []).append(event)

    def profile(self, user_id: str) -> dict[str, Value]:
        now = self.watermarks[self.partition_of[user_id]]
        return features_of(self.accepted.get(user_id, []), now, self.windows)


def features_of(events: Sequence[Event], now: int, windows: Sequence[Window]) -> dict[str, Value]:
    counts = Counter(e.type for e in events)
    purchases = [e for e in events if e.type == "purchase"]
    first_line: dict[str, Event] = {}
    for e in purchases:
        first_line.setdefault(e.order_id or e.event_id, e)
    spend = sum(_spend(e) for e in purchases)
    orders = len(first_line)
    ratings = [e.rating for e in events if e.type == "review" and e.rating is not None]
    prices = [e.price for e in events if e.price is not None]
    categories = Counter(e.category for e in events if e.category)
    views, carts = counts["view"], counts["add_to_cart"]
    out: dict[str, Value] = {"events_total": len(events)}
    out.update({f"{n}_total": counts[t] for t, n in zip(TYPES, TYPE_NAMES, strict=True)})
    visits = max(1, len({e.session_id for e in events if e.session_id is not None}))
    out.update(
        {
            f"{n}_per_session": round(counts[t] / visits, 4)
            for t, n in zip(TYPES, TYPE_NAMES, strict=True)
        }
    )
    out.update(
        spend_total=round(spend, 2),
        orders_total=orders,
        first_seen=min((e.ts_ms for e in events), default=0),
        last_seen=max((e.ts_ms for e in events), default=0),
        sessions=len({e.session_id for e in events if e.session_id is not None}),
        recency_days=_days(max((e.ts_ms for e in purchases), default=0), now),
        days_since_last_seen=_days(max((e.ts_ms for e in events), default=0), now),
        tenure_days=_tenure(min((e.ts_ms for e in events), default=0), now),
        frequency=orders,
        monetary=round(spend, 2),
        avg_order_value=round(spend / orders, 2) if orders else 0.0,
        view_to_cart=round(carts / views, 4) if views else 0.0,
        cart_to_purchase=round(min(1.0, counts["purchase"] / carts), 4) if carts else 0.0,
        review_count=len(ratings),
        mean_rating=round(sum(ratings) / len(ratings), 3) if ratings else 0.0,
        price_level=round(sum(prices) / len(prices), 2) if prices else 0.0,
        distinct_categories=len(categories),
        top_categories=top_categories(dict(categories)),
    )
    for window in windows:
        inside = [e for e in events if _inside(e.ts_ms, window, now)]
        kinds = Counter(e.type for e in inside)
        out[f"events_{window.name}"] = len(inside)
        out.update({f"{n}_{window.name}": kinds[t] for t, n in zip(TYPES, TYPE_NAMES, strict=True)})
        spend_inside = sum(_spend(e) for e in inside if e.type == "purchase")
        out[f"spend_{window.name}"] = round(spend_inside, 2)
        out[f"orders_{window.name}"] = sum(
            1 for e in first_line.values() if _inside(e.ts_ms, window, now)
        )
    return out


def _inside(ts: int, window: Window, now: int) -> bool:
    newest = now // window.bucket_ms
    return newest - window.buckets < ts // window.bucket_ms <= newest


def _spend(event: Event) -> float:
    return (event.price or 0.0) * (1 if event.quantity is None else event.quantity)


def _tenure(first: int, now: int) -> float:
    if not first:
        return 0.0
    return round(min(TENURE_CAP_DAYS, max(0.0, (now - first) / DAY_MS)), 4)


def _days(ts: int, now: int) -> float:
    if not ts:
        return RECENCY_CAP_DAYS
    return round(min(RECENCY_CAP_DAYS, max(0.0, (now - ts) / DAY_MS)), 4)
