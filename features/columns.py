"""Numeric features straight from a state, for scoring many users per batch.

`compute_features` builds every feature of a user as a dict, which is what a profile shows;
scoring needs a few dozen numbers per user thousands of times a second, so `Columns` compiles
the wanted names once into getters and reads only the windows those names use. The values are
the same as `compute_features` gives (tested), before any model transform.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

from features.definitions import (
    BUCKET_SLOTS,
    DAY_MS,
    DEFAULT_WINDOWS,
    ORDERS,
    PURCHASE,
    RECENCY_CAP_DAYS,
    SPEND,
    TYPE_NAMES,
    TYPES,
    UserState,
    Window,
    catalog,
)

Getter = Callable[[UserState, int, list[list[float]]], float]

_VIEWS: Final = 0
_CARTS: Final = 2


def numeric_names(windows: Sequence[Window] = DEFAULT_WINDOWS) -> tuple[str, ...]:
    """Every numeric feature a model input or a rule may name."""
    return tuple(d.name for d in catalog(windows))


class Columns:
    """Reads the named features of states as rows of floats."""

    def __init__(self, names: Sequence[str], windows: Sequence[Window] = DEFAULT_WINDOWS) -> None:
        known = set(numeric_names(windows))
        unknown = [n for n in names if n not in known]
        if unknown:
            msg = f"unknown features {unknown}; known: {sorted(known)}"
            raise ValueError(msg)
        self.names = tuple(names)
        self._windows = tuple(windows)
        self._used = sorted({i for n in names if (i := _window_of(n, windows)) is not None})
        self._getters = [_getter(n, windows) for n in names]

    def row(self, state: UserState, now_ms: int) -> list[float]:
        sums = self._window_sums(state, now_ms)
        return [get(state, now_ms, sums) for get in self._getters]

    def _window_sums(self, state: UserState, now_ms: int) -> list[list[float]]:
        sums: list[list[float]] = [[] for _ in self._windows]
        for i in self._used:
            window = self._windows[i]
            total = [0.0] * BUCKET_SLOTS
            buckets = state.windows[i] if i < len(state.windows) else {}
            newest = now_ms // window.bucket_ms
            oldest = newest - window.buckets + 1
            for index, bucket in buckets.items():
                if oldest <= index <= newest:
                    for slot, value in enumerate(bucket):
                        total[slot] += value
            sums[i] = total
        return sums


def _window_of(name: str, windows: Sequence[Window]) -> int | None:
    for i, window in enumerate(windows):
        if name.endswith(f"_{window.name}"):
            return i
    return None


def _getter(name: str, windows: Sequence[Window]) -> Getter:
    index = _window_of(name, windows)
    if index is not None:
        return _window_getter(name.removesuffix(f"_{windows[index].name}"), index)
    return _LIFETIME[name]


def _window_getter(base: str, index: int) -> Getter:
    if base == "events":
        return lambda s, now, sums: sum(sums[index][: len(TYPES)])
    slot = {"spend": SPEND, "orders": ORDERS} | {n: i for i, n in enumerate(TYPE_NAMES)}
    at = slot[base]
    if at == SPEND:
        return lambda s, now, sums: round(sums[index][at], 2)
    return lambda s, now, sums: sums[index][at]


def _days_since(ts: int, now_ms: int) -> float:
    if not ts:
        return RECENCY_CAP_DAYS
    return round(min(RECENCY_CAP_DAYS, max(0.0, (now_ms - ts) / DAY_MS)), 4)


def _ratio(top: float, bottom: float, digits: int) -> float:
    return round(top / bottom, digits) if bottom else 0.0


def _count(i: int) -> Getter:
    return lambda s, now, sums: s.counts[i]


_LIFETIME: Final[dict[str, Getter]] = {
    "events_total": lambda s, now, sums: sum(s.counts),
    **{f"{n}_total": _count(i) for i, n in enumerate(TYPE_NAMES)},
    "orders_total": lambda s, now, sums: s.orders,
    "frequency": lambda s, now, sums: s.orders,
    "sessions": lambda s, now, sums: s.sessions,
    "review_count": lambda s, now, sums: s.rating_count,
    "distinct_categories": lambda s, now, sums: len(s.categories),
    "spend_total": lambda s, now, sums: round(s.spend, 2),
    "monetary": lambda s, now, sums: round(s.spend, 2),
    "avg_order_value": lambda s, now, sums: _ratio(s.spend, s.orders, 2),
    "price_level": lambda s, now, sums: _ratio(s.price_sum, s.price_count, 2),
    "view_to_cart": lambda s, now, sums: _ratio(s.counts[_CARTS], s.counts[_VIEWS], 4),
    "cart_to_purchase": lambda s, now, sums: (
        round(min(1.0, s.counts[PURCHASE] / s.counts[_CARTS]), 4) if s.counts[_CARTS] else 0.0
    ),
    "mean_rating": lambda s, now, sums: _ratio(s.rating_sum, s.rating_count, 3),
    "recency_days": lambda s, now, sums: _days_since(s.last_purchase, now),
    "days_since_last_seen": lambda s, now, sums: _days_since(s.last_seen, now),
}
