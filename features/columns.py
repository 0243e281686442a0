"""Numeric features straight from states, as one matrix for scoring many users per batch.

`compute_features` builds every feature of a user as a dict, which is what a profile shows;
scoring needs a few dozen numbers for thousands of users a second. `Columns` reads a short row of
raw state fields per user (and the sums of only the windows its names use), then derives every
feature for the whole batch with numpy. The values equal `compute_features` (tested), up to the
rounding a profile applies for display.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

from features.definitions import (
    BUCKET_SLOTS,
    DAY_MS,
    DEFAULT_WINDOWS,
    ORDERS,
    PURCHASE,
    RECENCY_CAP_DAYS,
    SPEND,
    TENURE_CAP_DAYS,
    TYPE_NAMES,
    TYPES,
    UserState,
    Window,
    catalog,
)

Matrix = npt.NDArray[np.float64]
Derive = Callable[[Matrix, npt.NDArray[np.float64]], npt.NDArray[np.float64]]

# Raw fields read per user, in this order, before any window sums.
_N_TYPES: Final = len(TYPES)
(_SPEND, _ORDERS, _SESSIONS, _RATING_SUM, _RATING_COUNT, _PRICE_SUM, _PRICE_COUNT, _CATEGORIES,
 _LAST_PURCHASE, _LAST_SEEN, _FIRST_SEEN) = range(_N_TYPES, _N_TYPES + 11)  # fmt: skip
_BASE: Final = _N_TYPES + 11
_VIEWS: Final = 0
_CARTS: Final = 2


def numeric_names(windows: Sequence[Window] = DEFAULT_WINDOWS) -> tuple[str, ...]:
    """Every numeric feature a model input or a rule may name."""
    return tuple(d.name for d in catalog(windows))


class Columns:
    """Reads the named features of many states at once."""

    def __init__(self, names: Sequence[str], windows: Sequence[Window] = DEFAULT_WINDOWS) -> None:
        known = set(numeric_names(windows))
        unknown = [n for n in names if n not in known]
        if unknown:
            msg = f"unknown features {unknown}; known: {sorted(known)}"
            raise ValueError(msg)
        self.names = tuple(names)
        self._windows = tuple(windows)
        self._used = sorted({i for n in names if (i := _window_of(n, windows)) is not None})
        offsets = {w: _BASE + k * BUCKET_SLOTS for k, w in enumerate(self._used)}
        self._derive = [_derivation(n, windows, offsets) for n in names]

    def matrix(self, states: Sequence[UserState], now: Sequence[int]) -> Matrix:
        """(len(states), len(names)) features, each state read as of its `now`."""
        if not self.names:
            return np.zeros((len(states), 0))
        rows = [self._raw(s, t) for s, t in zip(states, now, strict=True)]
        if not rows:
            return np.zeros((0, len(self.names)))
        base = np.array(rows, dtype=np.float64)
        now_ms = np.asarray(now, dtype=np.float64)
        return np.column_stack([derive(base, now_ms) for derive in self._derive])

    def row(self, state: UserState, now_ms: int) -> list[float]:
        values: list[float] = self.matrix([state], [now_ms])[0].tolist()
        return values

    def _raw(self, s: UserState, now_ms: int) -> list[float]:
        row = [
            *s.counts, s.spend, s.orders, s.sessions, s.rating_sum, s.rating_count, s.price_sum,
            s.price_count, len(s.categories), s.last_purchase, s.last_seen, s.first_seen,
        ]  # fmt: skip
        for i in self._used:
            row += _window_sums(s, self._windows[i], i, now_ms)
        return row


def _window_sums(state: UserState, window: Window, index: int, now_ms: int) -> list[float]:
    total = [0.0] * BUCKET_SLOTS
    if index >= len(state.windows):
        return total
    newest = now_ms // window.bucket_ms
    oldest = newest - window.buckets + 1
    for bucket_index, bucket in state.windows[index].items():
        if oldest <= bucket_index <= newest:
            for slot, value in enumerate(bucket):
                total[slot] += value
    return total


def _window_of(name: str, windows: Sequence[Window]) -> int | None:
    for i, window in enumerate(windows):
        if name.endswith(f"_{window.name}"):
            return i
    return None


def _derivation(name: str, windows: Sequence[Window], offsets: dict[int, int]) -> Derive:
    index = _window_of(name, windows)
    if index is None:
        return _LIFETIME[name]
    base = name.removesuffix(f"_{windows[index].name}")
    start = offsets[index]
    if base == "events":
        return lambda b, now: b[:, start : start + _N_TYPES].sum(axis=1)
    slot = {"spend": SPEND, "orders": ORDERS} | {n: i for i, n in enumerate(TYPE_NAMES)}
    column = start + slot[base]
    return lambda b, now: b[:, column]


def _ratio(top: npt.NDArray[np.float64], bottom: npt.NDArray[np.float64]) -> Matrix:
    out = np.zeros_like(top)
    np.divide(top, bottom, out=out, where=bottom != 0)
    return out


def _days_since(ts: npt.NDArray[np.float64], now: npt.NDArray[np.float64]) -> Matrix:
    days = np.clip((now - ts) / DAY_MS, 0.0, RECENCY_CAP_DAYS)
    return np.where(ts == 0, RECENCY_CAP_DAYS, days)


def _tenure(first: npt.NDArray[np.float64], now: npt.NDArray[np.float64]) -> Matrix:
    days = np.clip((now - first) / DAY_MS, 0.0, TENURE_CAP_DAYS)
    return np.where(first == 0, 0.0, days)


def _column(i: int) -> Derive:
    return lambda b, now: b[:, i]


def _per_session(i: int) -> Derive:
    return lambda b, now: b[:, i] / np.maximum(b[:, _SESSIONS], 1.0)


_LIFETIME: Final[dict[str, Derive]] = {
    "events_total": lambda b, now: b[:, :_N_TYPES].sum(axis=1),
    **{f"{n}_total": _column(i) for i, n in enumerate(TYPE_NAMES)},
    "orders_total": _column(_ORDERS),
    "frequency": _column(_ORDERS),
    "sessions": _column(_SESSIONS),
    "review_count": _column(_RATING_COUNT),
    "distinct_categories": _column(_CATEGORIES),
    "spend_total": _column(_SPEND),
    "monetary": _column(_SPEND),
    "avg_order_value": lambda b, now: _ratio(b[:, _SPEND], b[:, _ORDERS]),
    "price_level": lambda b, now: _ratio(b[:, _PRICE_SUM], b[:, _PRICE_COUNT]),
    "view_to_cart": lambda b, now: _ratio(b[:, _CARTS], b[:, _VIEWS]),
    "cart_to_purchase": lambda b, now: np.minimum(1.0, _ratio(b[:, PURCHASE], b[:, _CARTS])),
    "mean_rating": lambda b, now: _ratio(b[:, _RATING_SUM], b[:, _RATING_COUNT]),
    "recency_days": lambda b, now: _days_since(b[:, _LAST_PURCHASE], now),
    "days_since_last_seen": lambda b, now: _days_since(b[:, _LAST_SEEN], now),
    "tenure_days": lambda b, now: _tenure(b[:, _FIRST_SEEN], now),
    **{f"{n}_per_session": _per_session(i) for i, n in enumerate(TYPE_NAMES)},
}
