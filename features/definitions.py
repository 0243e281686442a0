"""Per-user features in event time: the state they fold into, the fold, and the catalog.

Everything here is pure: no I/O, no clock. `UserState` is one user's compact state; `decide`
applies a user's events in arrival order (fence, duplicate ids, lateness) and `compute_features`
turns a state into named features as of an event time `now_ms`, with rolling windows expired
relative to it. The Redis store and the reference fold both use these definitions.

Rolling windows are exact at bucket granularity: a window of length L with B buckets counts the
events whose bucket (ts // (L/B)) lies among the B buckets ending at now's bucket.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Final

import msgspec

from features.events import Event

TYPES: Final = ("view", "search", "add_to_cart", "remove_from_cart", "purchase", "review")
TYPE_INDEX: Final = {name: i for i, name in enumerate(TYPES)}
# Feature names of the per-type counts: `views_total`, `views_24h`, ...
TYPE_NAMES: Final = ("views", "searches", "add_to_cart", "remove_from_cart", "purchases", "reviews")
PURCHASE: Final = TYPE_INDEX["purchase"]
SPEND: Final = len(TYPES)  # bucket slot of spend
ORDERS: Final = len(TYPES) + 1  # bucket slot of orders
BUCKET_SLOTS: Final = len(TYPES) + 2

DAY_MS: Final = 86_400_000
# Session and order ids are remembered this long after their last event (beyond the lateness),
# so lines of one order or events of one session arriving apart are counted once.
ID_MEMORY_MS: Final = DAY_MS
MAX_CATEGORIES: Final = 32
TOP_CATEGORIES: Final = 3
RECENCY_CAP_DAYS: Final = 365.0
TENURE_CAP_DAYS: Final = 3650.0
# A user's late records are remembered (for re-delivery after a crash) up to this many; a client
# flushing a buffer of old events stays well inside it.
MAX_LATE_KEPT: Final = 1024
# An id map is scanned for entries out of reach once it grows past this many entries, whatever
# its first entry (`prune`).
PRUNE_AT: Final = 32
# Products a basket (a session's cart and orders) holds for cross-sell counting, and recent
# products a user's recommendations start from: bounded, whatever a session holds.
MAX_BASKET: Final = 16
MAX_RECENT: Final = 5
# Event types whose product goes into the basket: what a user meant to buy, not browsed.
BASKET_TYPES: Final = frozenset({TYPE_INDEX["add_to_cart"], TYPE_INDEX["purchase"]})


@dataclass(frozen=True)
class Window:
    name: str
    length_ms: int
    buckets: int
    bucket_ms: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "bucket_ms", max(1, self.length_ms // self.buckets))


def parse_windows(names: Iterable[str], buckets: int) -> tuple[Window, ...]:
    """Windows from names like `1h`, `24h`, `7d`, `30m`; raises ValueError naming a bad one."""
    units = {"m": 60_000, "h": 3_600_000, "d": DAY_MS}
    windows = []
    for name in names:
        number, unit = name[:-1], name[-1:]
        if unit not in units or not number.isdigit() or int(number) == 0:
            msg = f"window {name!r} is not <number><m|h|d>"
            raise ValueError(msg)
        windows.append(Window(name, int(number) * units[unit], buckets))
    return tuple(windows)


DEFAULT_WINDOWS: Final = parse_windows(("1h", "24h", "7d", "30d"), 24)


class UserState(msgspec.Struct, array_like=True, gc=False):
    """One user's folded state; msgpack-encoded as an array it is a few hundred bytes."""

    counts: list[int] = msgspec.field(default_factory=lambda: [0] * len(TYPES))
    spend: float = 0.0
    orders: int = 0
    sessions: int = 0
    first_seen: int = 0
    last_seen: int = 0
    last_purchase: int = 0
    rating_sum: float = 0.0
    rating_count: int = 0
    price_sum: float = 0.0
    price_count: int = 0
    categories: dict[str, int] = msgspec.field(default_factory=dict)
    # Per window: bucket index -> [count per type..., spend, orders].
    windows: list[dict[int, list[int | float]]] = msgspec.field(default_factory=list)
    recent_ids: dict[str, int] = msgspec.field(default_factory=dict)
    recent_sessions: dict[str, int] = msgspec.field(default_factory=dict)
    recent_orders: dict[str, int] = msgspec.field(default_factory=dict)
    # Last decided offset per input partition: anything at or below it was seen already.
    fence: dict[int, int] = msgspec.field(default_factory=dict)
    partition: int = -1
    # [partition, offset] of recent late events, so a re-delivered one is dead-lettered again
    # instead of passing as a duplicate (at least once into the dead-letter topic).
    late: list[tuple[int, int]] = msgspec.field(default_factory=list)
    # The segmentation layer's record of this user, opaque here: stored with the features so a
    # decision and the state it was made on are written by one compare-and-set.
    segment: bytes = b""
    # Fields are encoded by position: new ones go last, so stored states still load.
    # The current basket (the products carted or bought in one session, else one order) and its
    # distinct categories; how many of each the segmentation layer has counted already (a new
    # basket starts them at 0), so a basket's pairs are counted once however its events arrive.
    basket_key: str = ""
    basket: list[str] = msgspec.field(default_factory=list)
    basket_categories: list[str] = msgspec.field(default_factory=list)
    basket_counted: tuple[int, int] = (0, 0)
    # The last products carted or bought, most recent last.
    recent: list[str] = msgspec.field(default_factory=list)


APPLIED: Final = 0
DUPLICATE: Final = 1
LATE: Final = 2


@dataclass(frozen=True)
class Rules:
    """How events are folded: the allowed lateness and the rolling windows."""

    lateness_ms: int = 3_600_000
    windows: tuple[Window, ...] = DEFAULT_WINDOWS


def decide(  # noqa: PLR0917 - called once per event; positional keeps it cheap
    state: UserState, event: Event, partition: int, offset: int, watermark_before: int, rules: Rules
) -> int:
    """Apply one event unless it was seen (fence, event id) or is later than the lateness.

    A record at or below the fence was decided before: skipped, or dead-lettered again if it
    was late (at least once into the dead-letter topic). Any other record later than the
    lateness is late, even if its id was applied long ago.
    """
    if offset <= state.fence.get(partition, -1):
        return LATE if state.late and (partition, offset) in state.late else DUPLICATE
    state.fence[partition] = offset
    state.partition = partition
    # Lateness first: then only ids inside the lateness matter, which `prune` keeps.
    if event.ts_ms < watermark_before - rules.lateness_ms:
        state.late.append((partition, offset))
        if len(state.late) > MAX_LATE_KEPT:
            del state.late[:-MAX_LATE_KEPT]
        return LATE
    if event.event_id in state.recent_ids:
        return DUPLICATE
    state.recent_ids[event.event_id] = event.ts_ms
    apply_event(state, event, rules.windows)
    return APPLIED


def apply_event(state: UserState, event: Event, windows: Sequence[Window]) -> None:
    ts = event.ts_ms
    kind = TYPE_INDEX[event.type]
    state.counts[kind] += 1
    if not state.first_seen or ts < state.first_seen:
        state.first_seen = ts
    state.last_seen = max(state.last_seen, ts)
    spend, new_order = _purchase(state, event) if kind == PURCHASE else (0.0, False)
    _session(state, event)
    _details(state, event)
    if kind in BASKET_TYPES and event.product_id:
        _basket(state, event)
    if len(state.windows) != len(windows):
        state.windows = [{} for _ in windows]
    for window, buckets in zip(windows, state.windows, strict=True):
        index = ts // window.bucket_ms
        bucket = buckets.get(index)
        if bucket is None:
            bucket = buckets[index] = [0] * BUCKET_SLOTS
        bucket[kind] += 1
        if kind == PURCHASE:
            bucket[SPEND] += spend
            bucket[ORDERS] += new_order


def _purchase(state: UserState, event: Event) -> tuple[float, bool]:
    spend = (event.price or 0.0) * (1 if event.quantity is None else event.quantity)
    state.spend += spend
    state.last_purchase = max(state.last_purchase, event.ts_ms)
    order = event.order_id or event.event_id
    # Popped and put back: the map stays in order of last use, which `prune` relies on.
    last = state.recent_orders.pop(order, None)
    if last is None:
        state.orders += 1
    state.recent_orders[order] = event.ts_ms if last is None else max(last, event.ts_ms)
    return spend, last is None


def _session(state: UserState, event: Event) -> None:
    session = event.session_id
    if session is None:
        return
    # Popped and put back: the map stays in order of last use, which `prune` relies on.
    last = state.recent_sessions.pop(session, None)
    if last is None:
        state.sessions += 1
    state.recent_sessions[session] = event.ts_ms if last is None else max(last, event.ts_ms)


def _details(state: UserState, event: Event) -> None:
    if event.price is not None:
        state.price_sum += event.price
        state.price_count += 1
    if event.rating is not None and event.type == "review":
        state.rating_sum += event.rating
        state.rating_count += 1
    if event.category:
        _count_category(state.categories, event.category)


def _basket(state: UserState, event: Event) -> None:
    key = event.session_id or event.order_id or event.event_id
    if key != state.basket_key:
        state.basket_key = key
        state.basket, state.basket_categories, state.basket_counted = [], [], (0, 0)
    product = event.product_id or ""
    if product not in state.basket and len(state.basket) < MAX_BASKET:
        state.basket.append(product)
    category = event.category
    categories = state.basket_categories
    if category and category not in categories and len(categories) < MAX_BASKET:
        categories.append(category)
    recent = state.recent
    if product in recent:
        recent.remove(product)
    recent.append(product)
    if len(recent) > MAX_RECENT:
        del recent[0]


def _count_category(categories: dict[str, int], category: str) -> None:
    if category in categories or len(categories) < MAX_CATEGORIES:
        categories[category] = categories.get(category, 0) + 1
        return
    # Space-saving: the new category replaces the rarest and inherits its count.
    rarest = min(categories, key=lambda c: (categories[c], c))
    categories[category] = categories.pop(rarest) + 1


def prune(state: UserState, watermark: int, rules: Rules) -> None:
    """Forget what no future decision or read (at or after `watermark`) can need.

    An entry goes once it is out of reach (reads filter buckets by window, and an id older than
    the lateness belongs to an event that would be late anyway), so a stored state holds only what
    its windows and id memories still cover. A map is scanned only when its first entry is out
    of reach (the oldest: id maps are kept in order of last use, buckets in order of creation;
    one out of order waits for the next scan), or when it has grown past `PRUNE_AT` entries or
    its window's bucket count: most writes cost a lookup per map.
    """
    horizon = watermark - rules.lateness_ms
    ids = state.recent_ids
    if ids and (len(ids) > PRUNE_AT or next(iter(ids.values())) < horizon):
        state.recent_ids = {k: t for k, t in ids.items() if t >= horizon}
    memory = horizon - ID_MEMORY_MS
    sessions = state.recent_sessions
    if sessions and (len(sessions) > PRUNE_AT or next(iter(sessions.values())) < memory):
        state.recent_sessions = {k: t for k, t in sessions.items() if t >= memory}
    orders = state.recent_orders
    if orders and (len(orders) > PRUNE_AT or next(iter(orders.values())) < memory):
        state.recent_orders = {k: t for k, t in orders.items() if t >= memory}
    for window, buckets in zip(rules.windows, state.windows, strict=False):
        oldest = watermark // window.bucket_ms - window.buckets + 1
        if buckets and (len(buckets) > window.buckets or next(iter(buckets)) < oldest):
            for index in [i for i in buckets if i < oldest]:
                del buckets[index]


def window_sums(buckets: dict[int, list[int | float]], window: Window, now_ms: int) -> list[float]:
    newest = now_ms // window.bucket_ms
    oldest = newest - window.buckets + 1
    sums = [0.0] * BUCKET_SLOTS
    for index, bucket in buckets.items():
        if oldest <= index <= newest:
            for slot in range(BUCKET_SLOTS):
                sums[slot] += bucket[slot]
    return sums


Value = float | int | list[str]


def compute_features(
    state: UserState, now_ms: int, windows: Sequence[Window] = DEFAULT_WINDOWS
) -> dict[str, Value]:
    """Every feature of the catalog as of event time `now_ms`."""
    counts = state.counts
    views, carts, purchases = counts[0], counts[2], counts[4]
    out: dict[str, Value] = {"events_total": sum(counts)}
    out.update({f"{name}_total": counts[i] for i, name in enumerate(TYPE_NAMES)})
    # Behaviour per visit, whatever the user's tenure (a session-less stream counts one visit).
    visits = max(state.sessions, 1)
    out.update({f"{n}_per_session": round(counts[i] / visits, 4) for i, n in enumerate(TYPE_NAMES)})
    out.update(
        spend_total=round(state.spend, 2),
        orders_total=state.orders,
        first_seen=state.first_seen,
        last_seen=state.last_seen,
        sessions=state.sessions,
        recency_days=_days_since(state.last_purchase, now_ms),
        days_since_last_seen=_days_since(state.last_seen, now_ms),
        tenure_days=_tenure(state.first_seen, now_ms),
        frequency=state.orders,
        monetary=round(state.spend, 2),
        avg_order_value=round(state.spend / state.orders, 2) if state.orders else 0.0,
        view_to_cart=round(carts / views, 4) if views else 0.0,
        cart_to_purchase=round(min(1.0, purchases / carts), 4) if carts else 0.0,
        review_count=state.rating_count,
        mean_rating=round(state.rating_sum / state.rating_count, 3) if state.rating_count else 0.0,
        price_level=round(state.price_sum / state.price_count, 2) if state.price_count else 0.0,
        distinct_categories=len(state.categories),
        top_categories=top_categories(state.categories),
    )
    for window, buckets in zip(windows, state.windows or [{}] * len(windows), strict=True):
        sums = window_sums(buckets, window, now_ms)
        out[f"events_{window.name}"] = int(sum(sums[: len(TYPES)]))
        out.update({f"{n}_{window.name}": int(sums[i]) for i, n in enumerate(TYPE_NAMES)})
        out[f"spend_{window.name}"] = round(sums[SPEND], 2)
        out[f"orders_{window.name}"] = int(sums[ORDERS])
    return out


def top_categories(categories: dict[str, int], k: int = TOP_CATEGORIES) -> list[str]:
    return [c for c, _ in sorted(categories.items(), key=lambda item: (-item[1], item[0]))[:k]]


def _tenure(first_seen: int, now_ms: int) -> float:
    """Days since the user was first seen (0 for a user never seen)."""
    if not first_seen:
        return 0.0
    return round(min(TENURE_CAP_DAYS, max(0.0, (now_ms - first_seen) / DAY_MS)), 4)


def _days_since(ts: int, now_ms: int) -> float:
    if not ts:
        return RECENCY_CAP_DAYS
    return round(min(RECENCY_CAP_DAYS, max(0.0, (now_ms - ts) / DAY_MS)), 4)


@dataclass(frozen=True)
class FeatureDef:
    """A feature's name, type, default, and how it becomes one model input."""

    name: str
    kind: type
    default: float
    to_input: Callable[[float], float]

    @property
    def logged(self) -> bool:
        """Whether the model input is log1p of the value (counts and money)."""
        return self.to_input is _log1p


def _log1p(value: float) -> float:
    return math.log1p(max(0.0, value))


def _same(value: float) -> float:
    return float(value)


def catalog(windows: Sequence[Window] = DEFAULT_WINDOWS) -> tuple[FeatureDef, ...]:
    """The numeric features a model may use (timestamps and category names are left out)."""
    counts = ["events_total", *(f"{n}_total" for n in TYPE_NAMES), "orders_total", "sessions"]
    counts += ["frequency", "review_count", "distinct_categories", "tenure_days"]
    counts += [f"{n}_per_session" for n in TYPE_NAMES]
    for window in windows:
        counts += [f"events_{window.name}", f"orders_{window.name}"]
        counts += [f"{n}_{window.name}" for n in TYPE_NAMES]
    money = ["spend_total", "monetary", "avg_order_value", "price_level"]
    money += [f"spend_{w.name}" for w in windows]
    ratios = ["view_to_cart", "cart_to_purchase", "mean_rating"]
    return (
        *(FeatureDef(n, int, 0.0, _log1p) for n in counts),
        *(FeatureDef(n, float, 0.0, _log1p) for n in money),
        *(FeatureDef(n, float, 0.0, _same) for n in ratios),
        FeatureDef("recency_days", float, RECENCY_CAP_DAYS, _log1p),
        FeatureDef("days_since_last_seen", float, RECENCY_CAP_DAYS, _log1p),
    )


def to_vector(features: dict[str, Value], defs: Sequence[FeatureDef]) -> list[float]:
    """Model inputs in catalog order; a missing or non-numeric feature takes its default."""
    vector = []
    for definition in defs:
        value = features.get(definition.name, definition.default)
        number = value if isinstance(value, int | float) else definition.default
        vector.append(definition.to_input(number))
    return vector
