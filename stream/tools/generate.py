"""Synthetic e-commerce event generator.

Produces a JSONL (optionally gzip) file of shopper events in global event-time
order, plus a CSV of the hidden persona behind every user, so segmentation can
be checked against ground truth that never leaks into the events themselves.

Each user is simulated independently from a ``random.Random`` seeded with
(seed, user index), so output depends only on the arguments and never on how
users are batched. Memory stays bounded for millions of users: users are
simulated in chunks, each chunk is sorted and spilled to a temporary run file,
and the runs are k-way merged into the output. Every run line carries a
fixed-width ``ts|user|seq`` key prefix, so the merge is a plain bytes
comparison and ties between events resolve identically for any chunk size.

Known cross-sell rules (:data:`PLANTED_RULES`) are planted in the carts so a rule miner's recovery
can be measured. They draw from a second RNG per user, so every other event is the same as
without them.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import heapq
import math
import random
import tempfile
from bisect import bisect
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice
from operator import itemgetter
from pathlib import Path
from statistics import NormalDist
from typing import IO, Any, Final, NamedTuple, Protocol

import orjson

__all__ = [
    "CATEGORIES",
    "DEFAULT_PERSONA_WEIGHTS",
    "DEFAULT_START_MS",
    "EVENT_TYPES",
    "PERSONAS",
    "PLANTED_RULES",
    "SCHEMA_VERSION",
    "GenerateSummary",
    "PlantedRule",
    "generate",
]

SCHEMA_VERSION: Final = 1
# Fixed (not the wall clock) so output depends on the arguments only; far enough in the past
# that a year of generated history is not rejected as future-dated by the service.
DEFAULT_START_MS: Final = 1_767_225_600_000  # 2026-01-01T00:00:00Z
EVENT_TYPES: Final = ("view", "search", "add_to_cart", "remove_from_cart", "purchase", "review")

_SECOND_MS: Final = 1_000
_HOUR_MS: Final = 3_600_000
_DAY_MS: Final = 86_400_000

# Median catalogue price per category; product prices scatter lognormally around it.
_CATEGORY_MEDIAN_PRICE: Final[dict[str, float]] = {
    "electronics": 180.0,
    "fashion": 45.0,
    "home": 60.0,
    "beauty": 25.0,
    "sports": 55.0,
    "books": 15.0,
    "toys": 25.0,
    "grocery": 8.0,
    "garden": 40.0,
    "automotive": 70.0,
    "jewelry": 220.0,
    "pets": 22.0,
}
CATEGORIES: Final = tuple(_CATEGORY_MEDIAN_PRICE)

_SEARCH_TERMS: Final[dict[str, tuple[str, ...]]] = {
    "electronics": ("headphones", "laptop", "usb c cable", "smartwatch", "4k tv", "phone case"),
    "fashion": ("sneakers", "denim jacket", "summer dress", "wool scarf", "leather belt"),
    "home": ("bed sheets", "desk lamp", "coffee maker", "storage boxes", "throw pillow"),
    "beauty": ("face serum", "lipstick", "shampoo", "sunscreen", "nail polish"),
    "sports": ("yoga mat", "running shoes", "dumbbells", "water bottle", "tennis racket"),
    "books": ("thriller novel", "cookbook", "sci fi", "biography", "kids books"),
    "toys": ("lego", "board game", "puzzle", "plush toy", "rc car"),
    "grocery": ("coffee beans", "olive oil", "snacks", "green tea", "pasta"),
    "garden": ("garden hose", "plant pots", "pruning shears", "seeds", "lawn chair"),
    "automotive": ("car charger", "wiper blades", "floor mats", "dash cam", "car wax"),
    "jewelry": ("gold necklace", "silver ring", "earrings", "bracelet", "watch"),
    "pets": ("dog food", "cat litter", "chew toy", "pet bed", "fish tank"),
}
_DEAL_WORDS: Final = ("sale", "discount", "cheap", "deal", "clearance")

_PRODUCTS_PER_CATEGORY: Final = 400
_CATALOG_SEED: Final = 20_261_001

# Relative likelihood of starting a session in each hour of the day (UTC),
# quiet at night and peaking in the evening.
_HOUR_WEIGHTS: Final = (
    1.0, 0.6, 0.4, 0.3, 0.3, 0.4, 0.8, 1.5, 2.2, 2.6, 2.8, 3.0,
    3.2, 3.0, 2.8, 2.8, 3.0, 3.4, 4.0, 4.6, 5.0, 4.6, 3.4, 2.0,
)  # fmt: skip

# Run-line key: 15-digit ts, 10-digit user index, 8-digit per-user sequence.
_TS_WIDTH: Final = 15
_KEY_LEN: Final = 33
_MAX_TS: Final = 10**15
_MAX_USERS: Final = 10**10
_RUN_EVENT_CAP: Final = 600_000  # spill early if long ranges make a chunk huge
_MAX_FANIN: Final = 128  # open runs at once; macOS' default file limit is 256
_WRITE_BATCH: Final = 65_536
_PROGRESS_EVERY: Final = 25_000  # events between progress callbacks


def _cumulative(weights: Iterable[float]) -> tuple[float, ...]:
    """Cumulative probabilities for ``bisect(cum, rng.random())`` sampling.

    The last bound is infinite so float rounding can never index past the end.
    """
    ws = list(weights)
    total = sum(ws)
    running = 0.0
    bounds: list[float] = []
    for w in ws[:-1]:
        running += w
        bounds.append(running / total)
    return (*bounds, math.inf)


_HOUR_CUM: Final = _cumulative(_HOUR_WEIGHTS)


def _think_time_quantiles(steps: int) -> tuple[float, ...]:
    """Quantiles of the in-session think time: lognormal, median ~25 s, capped at 15 min.

    Interpolating this table is several times cheaper than a gauss() per click.
    """
    normal = NormalDist(10.1, 0.9)
    cap = 900_000.0
    inner = (min(math.exp(normal.inv_cdf(i / steps)), cap) for i in range(1, steps))
    return (0.0, *inner, cap)


_THINK_STEPS: Final = 2048
_THINK_QUANTILES: Final = _think_time_quantiles(_THINK_STEPS)


_Product = tuple[str, str, float]  # (product_id, category, unit price)


def _build_catalog() -> tuple[tuple[_Product, ...], ...]:
    """Fixed products per category, sorted cheap-to-expensive.

    Sorting lets a persona's price taste be a simple skew over the product index,
    and a fixed catalogue keeps each product's price the same in every event.
    """
    rng = random.Random(_CATALOG_SEED)
    catalog: list[tuple[_Product, ...]] = []
    for ci, (category, median) in enumerate(_CATEGORY_MEDIAN_PRICE.items()):
        raw = sorted(median * rng.lognormvariate(0.0, 0.7) for _ in range(_PRODUCTS_PER_CATEGORY))
        catalog.append(
            tuple(
                (f"p{ci:02d}{k:04d}", category, max(0.99, round(price, 2)))
                for k, price in enumerate(raw)
            )
        )
    return tuple(catalog)


_CATALOG: Final = _build_catalog()


class PlantedRule(NamedTuple):
    """A cross-sell planted in the stream, so a rule miner's recovery can be measured.

    The first time in a session that ``antecedent`` goes into the cart, ``consequent`` follows it
    with probability ``confidence``: one more add_to_cart right after, taking no think time.
    """

    antecedent: str
    consequent: str
    confidence: float


# Antecedents are the cheapest product of a category that bargain hunters and loyal regulars
# favour, so they are in enough baskets to be found in a few thousand users; consequents sit in
# mid-catalogue, rarely carted on their own, so each rule's lift is high.
PLANTED_RULES: Final[tuple[PlantedRule, ...]] = (
    PlantedRule("p070000", "p070180", 0.6),  # grocery: ground coffee -> paper filters
    PlantedRule("p110000", "p110200", 0.5),  # pets: dog food -> chew toy
    PlantedRule("p030000", "p030220", 0.4),  # beauty: shampoo -> conditioner
    PlantedRule("p060000", "p060160", 0.5),  # toys: rc car -> battery pack
    PlantedRule("p050000", "p050240", 0.3),  # books: thriller paperback -> its sequel
)


def _catalog_index(product_id: str) -> tuple[int, int]:
    """(category index, product index) of a catalogue product id."""
    ci, k = int(product_id[1:3]), int(product_id[3:])
    if not (0 <= ci < len(_CATALOG) and 0 <= k < _PRODUCTS_PER_CATEGORY) or (
        _CATALOG[ci][k][0] != product_id
    ):
        msg = f"not a catalogue product id: {product_id!r}"
        raise ValueError(msg)
    return ci, k


# Antecedent (category, index) -> (confidence, consequent category, consequent index).
_CROSS_SELL: Final[dict[tuple[int, int], tuple[float, int, int]]] = {
    _catalog_index(r.antecedent): (r.confidence, *_catalog_index(r.consequent))
    for r in PLANTED_RULES
}


def _category_weights(**weights: float) -> tuple[float, ...]:
    """Cumulative category probabilities from relative weights (unnamed ones get 1)."""
    unknown = set(weights) - set(CATEGORIES)
    if unknown:
        msg = f"unknown categories: {sorted(unknown)}"
        raise ValueError(msg)
    return _cumulative(weights.get(c, 1.0) for c in CATEGORIES)


@dataclass(frozen=True, slots=True)
class _Profile:
    """Behavioural knobs of one persona (probabilities are per step or per session)."""

    session_gap_h: float  # median hours between sessions
    gap_sigma: float  # lognormal spread of session gaps; low means regular habits
    steps_mean: float  # mean product views per session
    p_search: float
    p_cart: float  # a viewed product goes into the cart
    p_remove: float  # a cart line is removed again, per step
    p_checkout: float  # a non-empty cart is bought at session end
    p_review: float  # a purchased line is reviewed in a later session
    max_qty: int
    price_exp: float  # >1 favours cheap products, <1 expensive ones
    category_cum: tuple[float, ...]
    rating_cum: tuple[float, ...] = _cumulative((1, 1, 2, 4, 4))
    deal_queries: bool = False
    first_seen: tuple[float, float] | None = None  # fraction of range; None: already active
    active_until: tuple[float, float] = (1.0, 1.0)  # fraction of range after which silent
    max_sessions: int = 0  # 0 means unlimited


_PROFILES: Final[dict[str, _Profile]] = {
    "new_visitor": _Profile(
        session_gap_h=20, gap_sigma=1.0, steps_mean=3.5, p_search=0.3, p_cart=0.05,
        p_remove=0.2, p_checkout=0.2, p_review=0.0, max_qty=1, price_exp=1.0,
        category_cum=_category_weights(), first_seen=(0.55, 1.0), max_sessions=3,
    ),
    "window_shopper": _Profile(
        session_gap_h=72, gap_sigma=0.9, steps_mean=4.5, p_search=0.25, p_cart=0.03,
        p_remove=0.3, p_checkout=0.08, p_review=0.05, max_qty=1, price_exp=0.8,
        category_cum=_category_weights(electronics=3, fashion=3, home=2, jewelry=2),
    ),
    "bargain_hunter": _Profile(
        session_gap_h=60, gap_sigma=0.8, steps_mean=4.0, p_search=0.5, p_cart=0.2,
        p_remove=0.1, p_checkout=0.55, p_review=0.15, max_qty=3, price_exp=4.0,
        category_cum=_category_weights(
            grocery=4, books=3, toys=3, beauty=3, pets=3, home=2, electronics=0.5, jewelry=0.2,
        ),
        rating_cum=_cumulative((2, 2, 3, 3, 2)), deal_queries=True,
    ),
    "cart_abandoner": _Profile(
        session_gap_h=60, gap_sigma=0.9, steps_mean=4.0, p_search=0.25, p_cart=0.45,
        p_remove=0.3, p_checkout=0.05, p_review=0.1, max_qty=2, price_exp=1.0,
        category_cum=_category_weights(), rating_cum=_cumulative((2, 2, 3, 3, 2)),
    ),
    "loyal_regular": _Profile(
        session_gap_h=64, gap_sigma=0.35, steps_mean=3.5, p_search=0.2, p_cart=0.35,
        p_remove=0.05, p_checkout=0.65, p_review=0.3, max_qty=2, price_exp=1.3,
        category_cum=_category_weights(grocery=3, home=2, beauty=2, pets=2, books=2, jewelry=0.3),
    ),
    "high_value_vip": _Profile(
        session_gap_h=36, gap_sigma=0.5, steps_mean=5.0, p_search=0.15, p_cart=0.35,
        p_remove=0.05, p_checkout=0.7, p_review=0.35, max_qty=3, price_exp=0.45,
        category_cum=_category_weights(
            electronics=4, jewelry=3, fashion=3, home=2, grocery=0.3, books=0.3, pets=0.3,
        ),
        rating_cum=_cumulative((1, 1, 2, 5, 8)),
    ),
    "lapsing_customer": _Profile(
        session_gap_h=48, gap_sigma=0.5, steps_mean=4.0, p_search=0.2, p_cart=0.3,
        p_remove=0.05, p_checkout=0.6, p_review=0.2, max_qty=2, price_exp=1.2,
        category_cum=_category_weights(fashion=2, home=2, beauty=2, sports=2),
        active_until=(0.3, 0.7),
    ),
}  # fmt: skip

PERSONAS: Final = tuple(_PROFILES)

DEFAULT_PERSONA_WEIGHTS: Final[Mapping[str, float]] = {
    "new_visitor": 0.15,
    "window_shopper": 0.25,
    "bargain_hunter": 0.15,
    "cart_abandoner": 0.15,
    "loyal_regular": 0.15,
    "high_value_vip": 0.05,
    "lapsing_customer": 0.10,
}


@dataclass(frozen=True)
class GenerateSummary:
    """What :func:`generate` wrote."""

    users: int
    events: int
    first_ts_ms: int
    last_ts_ms: int
    personas: dict[str, int]  # persona name -> user count
    out: str
    personas_path: str


class _WindowClosedError(Exception):
    """Raised when a user's clock passes the end of their active window."""


class _UserSim:
    """Simulates one user's sessions, producing key-prefixed JSONL lines in time order."""

    __slots__ = (
        "cart",
        "cross_sold",
        "limit",
        "lines",
        "n_orders",
        "n_sessions",
        "pending_reviews",
        "planted",
        "price_exp",
        "prof",
        "reviewed",
        "rng",
        "seed",
        "seq",
        "sid",
        "side_rng",
        "t",
        "uid",
        "uidx",
        "ukey",
    )

    def __init__(self, uidx: int, prof: _Profile, rng: random.Random, seed: int) -> None:
        self.uid = _user_id(uidx)
        self.uidx = uidx
        self.ukey = b"%010d" % uidx
        self.prof = prof
        self.rng = rng
        self.seed = seed
        # Planted cross-sells draw from their own RNG, created on first use, so the main RNG
        # (and so every other event) is the same with or without them.
        self.side_rng: random.Random | None = None
        self.lines: list[bytes] = []
        self.seq = 0
        self.t = 0
        self.limit = 0
        self.sid = ""
        self.n_sessions = 0
        self.n_orders = 0
        self.cart: list[tuple[int, int, int]] = []  # (category, product index, qty)
        # Planted cross-sell lines, apart from the cart so removals draw from it as before.
        self.planted: list[tuple[int, int, int]] = []
        self.cross_sold: set[tuple[int, int]] = set()  # antecedents decided this session
        self.pending_reviews: list[tuple[int, int]] = []  # (category, product index)
        self.reviewed: set[tuple[int, int]] = set()
        # Per-user taste jitter so members of one persona are not clones.
        self.price_exp = prof.price_exp * math.exp(0.2 * rng.gauss(0.0, 1.0))

    def run(self, start_ms: int, end_ms: int) -> list[bytes]:
        prof, rng = self.prof, self.rng
        span = end_ms - start_ms
        lo, hi = prof.active_until
        self.limit = min(end_ms, start_ms + max(1, int(span * rng.uniform(lo, hi))))
        activity = math.exp(0.35 * rng.gauss(0.0, 1.0))
        gap_ms = prof.session_gap_h * _HOUR_MS * activity
        max_sessions = rng.randint(1, prof.max_sessions) if prof.max_sessions else 0
        self.t = self._first_session_start(start_ms, span, gap_ms)
        with contextlib.suppress(_WindowClosedError):
            while not max_sessions or self.n_sessions < max_sessions:
                self._session()
                self._next_session_start(gap_ms)
        return self.lines

    def _first_session_start(self, start_ms: int, span: int, gap_ms: float) -> int:
        rng = self.rng
        if self.prof.first_seen is None:
            # Established users: we join their session process part-way through.
            t = start_ms + int(rng.random() * min(gap_ms, self.limit - start_ms))
        else:
            t = start_ms + int(span * rng.uniform(*self.prof.first_seen))
        shifted = self._diurnal(t, start_ms)
        # The first session must stay in range so every user has at least one event.
        return shifted if shifted < self.limit else min(t, self.limit - 1)

    def _next_session_start(self, gap_ms: float) -> None:
        earliest = self.t + 30 * 60 * _SECOND_MS
        gap = gap_ms * math.exp(self.prof.gap_sigma * self.rng.gauss(0.0, 1.0))
        self.t = self._diurnal(max(earliest, self.t + int(gap)), earliest)
        if self.t >= self.limit:
            raise _WindowClosedError

    def _diurnal(self, t: int, earliest: int) -> int:
        """Move ``t`` to a typical hour of its day, keeping it at or after ``earliest``."""
        rng = self.rng
        hour = bisect(_HOUR_CUM, rng.random())
        moved = t - t % _DAY_MS + hour * _HOUR_MS + int(rng.random() * _HOUR_MS)
        return moved if moved >= earliest else moved + _DAY_MS

    def _session(self) -> None:
        prof, rng = self.prof, self.rng
        self.sid = f"{self.uid}-s{self.n_sessions}"
        self.n_sessions += 1
        self.cart = []
        self.planted = []
        self.cross_sold.clear()
        self._reviews()
        cat = self._category()
        steps = 1 + int(rng.expovariate(1.0 / max(prof.steps_mean - 1.0, 0.1)))
        for _ in range(min(steps, 40)):
            if rng.random() < prof.p_search:
                cat = self._category()
                self._search(cat)
            elif rng.random() < 0.35:
                cat = self._category()  # wander off; most clicks stay in one category
            self._browse(cat)
        if self.cart and rng.random() < prof.p_checkout:
            self._purchase()

    def _browse(self, cat: int) -> None:
        prof, rng = self.prof, self.rng
        k = int(_PRODUCTS_PER_CATEGORY * rng.random() ** self.price_exp)
        k = min(k, _PRODUCTS_PER_CATEGORY - 1)
        self._product_event("view", cat, k, 0)
        cart = self.cart
        if rng.random() < prof.p_cart:
            qty = min(1 + int(rng.random() ** 2 * prof.max_qty), prof.max_qty)
            cart.append((cat, k, qty))
            self._product_event("add_to_cart", cat, k, qty)
            if (cat, k) in _CROSS_SELL:
                self._cross_sell(cat, k)
        if cart and rng.random() < prof.p_remove:
            c, pk, q = cart.pop(int(rng.random() * len(cart)))
            self._product_event("remove_from_cart", c, pk, q)

    def _cross_sell(self, cat: int, k: int) -> None:
        """Maybe add the planted consequent of antecedent (cat, k), decided once per session.

        Emitted without think time and decided by the side RNG, so the events around it keep
        their times; the line is bought with the order but never removed or reviewed, since
        either would draw from the main RNG.
        """
        if (cat, k) in self.cross_sold:
            return
        self.cross_sold.add((cat, k))
        confidence, c2, k2 = _CROSS_SELL[cat, k]
        if self.side_rng is None:
            self.side_rng = _user_rng(self.seed, self.uidx, salt=b"cross-sell")
        if self.side_rng.random() < confidence:
            self.planted.append((c2, k2, 1))
            self._product_event("add_to_cart", c2, k2, 1, think=False)

    def _category(self) -> int:
        return bisect(self.prof.category_cum, self.rng.random())

    def _emit(self, event: dict[str, Any], *, think: bool = True) -> None:
        """Append the event behind its ts|user|seq sort key, then let think time pass.

        Think time is an inverse-CDF table lookup: one uniform per click instead
        of a gauss() call, since this runs for nearly every event.
        """
        t = self.t
        key = b"%015d%s%08d" % (t, self.ukey, self.seq)
        self.lines.append(key + orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE))
        self.seq += 1
        if think:
            u = self.rng.random() * _THINK_STEPS
            i = int(u)
            lo = _THINK_QUANTILES[i]
            self.t = t = t + int(lo + (u - i) * (_THINK_QUANTILES[i + 1] - lo)) + 1
            if t >= self.limit:
                raise _WindowClosedError

    def _base(self, etype: str) -> dict[str, Any]:
        return {
            "event_id": f"{self.uid}-{self.seq}",
            "user_id": self.uid,
            "type": etype,
            "ts": self.t,
            "session_id": self.sid,
            "schema_version": SCHEMA_VERSION,
        }

    def _product_event(self, etype: str, cat: int, k: int, qty: int, *, think: bool = True) -> None:
        # Views and cart changes are most events, so build the dict in one literal.
        product_id, category, price = _CATALOG[cat][k]
        event = {
            "event_id": f"{self.uid}-{self.seq}",
            "user_id": self.uid,
            "type": etype,
            "ts": self.t,
            "session_id": self.sid,
            "schema_version": SCHEMA_VERSION,
            "product_id": product_id,
            "category": category,
            "price": price,
        }
        if qty:
            event["quantity"] = qty
        self._emit(event, think=think)

    def _search(self, cat: int) -> None:
        rng = self.rng
        terms = _SEARCH_TERMS[CATEGORIES[cat]]
        query = terms[int(rng.random() * len(terms))]
        if self.prof.deal_queries and rng.random() < 0.7:
            query = f"{query} {_DEAL_WORDS[int(rng.random() * len(_DEAL_WORDS))]}"
        event = self._base("search")
        event["query"] = query
        self._emit(event)

    def _purchase(self) -> None:
        """One purchase event per order line, all sharing the order id and timestamp."""
        order_id = f"{self.uid}-o{self.n_orders}"
        self.n_orders += 1
        order: dict[tuple[int, int], int] = {}  # a product added twice is one order line
        for cat, k, qty in self.cart:
            order[cat, k] = order.get((cat, k), 0) + qty
        # Reviews draw from the main RNG, so only the cart's own lines may be reviewed.
        reviewable = list(order)
        for cat, k, qty in self.planted:
            order[cat, k] = order.get((cat, k), 0) + qty
        for (cat, k), qty in order.items():
            event = self._base("purchase")
            event["product_id"], event["category"], event["price"] = _CATALOG[cat][k]
            event["quantity"] = qty
            event["order_id"] = order_id
            self._emit(event, think=False)
        self.pending_reviews.extend(reviewable)
        self.cart = []
        self.planted = []

    def _reviews(self) -> None:
        """Review some items bought in earlier sessions, at the start of this one."""
        prof, rng = self.prof, self.rng
        pending, self.pending_reviews = self.pending_reviews, []
        for cat, k in pending:
            if rng.random() >= prof.p_review or (cat, k) in self.reviewed:
                continue
            self.reviewed.add((cat, k))
            event = self._base("review")
            event["product_id"], event["category"], _ = _CATALOG[cat][k]
            event["rating"] = 1 + bisect(prof.rating_cum, rng.random())
            self._emit(event)


def _user_id(uidx: int) -> str:
    return f"u{uidx:07d}"


def _user_rng(seed: int, uidx: int, *, salt: bytes = b"") -> random.Random:
    """An RNG per (seed, user) so a user's stream never depends on chunking.

    A ``salt`` gives an independent side RNG of the same user.
    """
    digest = hashlib.blake2b(f"{seed}/{uidx}".encode(), digest_size=16, salt=salt).digest()
    return random.Random(int.from_bytes(digest, "big"))


def _persona_picker(weights: Mapping[str, float]) -> Callable[[random.Random], str]:
    unknown = set(weights) - set(PERSONAS)
    if unknown:
        msg = f"persona_weights has unknown personas: {sorted(unknown)}"
        raise ValueError(msg)
    names = [p for p in PERSONAS if weights.get(p, 0.0) > 0.0]
    if any(w < 0 or not math.isfinite(w) for w in weights.values()) or not names:
        msg = "persona_weights must be finite, non-negative and not all zero"
        raise ValueError(msg)
    cum = _cumulative(weights[p] for p in names)

    def pick(rng: random.Random) -> str:
        return names[bisect(cum, rng.random())]

    return pick


@dataclass
class _Totals:
    events: int = 0
    first_ts: int = _MAX_TS
    last_ts: int = -1
    personas: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PERSONAS, 0))

    def add(self, persona: str, lines: list[bytes]) -> None:
        self.events += len(lines)
        self.personas[persona] += 1
        # A user's lines are already in time order.
        self.first_ts = min(self.first_ts, int(lines[0][:_TS_WIDTH]))
        self.last_ts = max(self.last_ts, int(lines[-1][:_TS_WIDTH]))


def _spill(lines: list[bytes], tmpdir: Path, runs: list[Path]) -> None:
    lines.sort()
    path = tmpdir / f"run{len(runs):06d}"
    with path.open("wb") as fh:
        fh.writelines(lines)
    runs.append(path)
    lines.clear()


@dataclass(frozen=True)
class _Plan:
    users: int
    seed: int
    start_ms: int
    end_ms: int  # exclusive
    chunk_users: int
    pick: Callable[[random.Random], str]


def _simulate_all(
    plan: _Plan,
    tmpdir: Path,
    personas_fh: IO[str],
    progress: Callable[[int], None] | None,
) -> tuple[list[Path], list[bytes], _Totals]:
    """Simulate every user, spilling sorted runs; returns runs, the sorted tail and totals."""
    runs: list[Path] = []
    buf: list[bytes] = []
    totals = _Totals()
    in_buf = 0
    next_report = _PROGRESS_EVERY
    for uidx in range(plan.users):
        rng = _user_rng(plan.seed, uidx)
        persona = plan.pick(rng)
        sim = _UserSim(uidx, _PROFILES[persona], rng, plan.seed)
        lines = sim.run(plan.start_ms, plan.end_ms)
        personas_fh.write(f"{_user_id(uidx)},{persona}\n")
        totals.add(persona, lines)
        buf.extend(lines)
        in_buf += 1
        if in_buf >= plan.chunk_users or len(buf) >= _RUN_EVENT_CAP:
            _spill(buf, tmpdir, runs)
            in_buf = 0
        if progress is not None and totals.events >= next_report:
            progress(totals.events)
            next_report = totals.events + _PROGRESS_EVERY
    buf.sort()
    return runs, buf, totals


def _reduce_runs(runs: list[Path], tmpdir: Path, fanin: int) -> list[Path]:
    """Merge runs in groups until at most ``fanin`` remain (key prefixes are kept)."""
    serial = 0
    while len(runs) > fanin:
        merged: list[Path] = []
        for i in range(0, len(runs), fanin):
            group = runs[i : i + fanin]
            path = tmpdir / f"merge{serial:06d}"
            serial += 1
            with contextlib.ExitStack() as stack, path.open("wb") as out_fh:
                files = [stack.enter_context(p.open("rb")) for p in group]
                out_fh.writelines(heapq.merge(*files))
            for p in group:
                p.unlink()
            merged.append(path)
        runs = merged
    return runs


class _LineWriter(Protocol):
    def writelines(self, lines: Iterable[bytes], /) -> None: ...


@contextlib.contextmanager
def _open_output(path: Path) -> Iterator[_LineWriter]:
    """Binary writer; gzip when the name ends in .gz, with a fixed header for byte-stable output."""
    with path.open("wb") as raw:
        if path.name.endswith(".gz"):
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6) as gz:
                yield gz
        else:
            yield raw


def _write_merged(out_fh: _LineWriter, sources: list[Iterable[bytes]]) -> None:
    stripped = map(itemgetter(slice(_KEY_LEN, None)), heapq.merge(*sources))
    while batch := list(islice(stripped, _WRITE_BATCH)):
        out_fh.writelines(batch)


def _validate(users: int, days: float, chunk_users: int, start_ms: int) -> None:
    if not 1 <= users < _MAX_USERS:
        msg = f"users must be between 1 and {_MAX_USERS - 1}, got {users!r}"
        raise ValueError(msg)
    if not (days > 0 and math.isfinite(days)):
        msg = f"days must be a positive finite number, got {days!r}"
        raise ValueError(msg)
    if chunk_users < 1:
        msg = f"chunk_users must be >= 1, got {chunk_users!r}"
        raise ValueError(msg)
    if start_ms < 0 or start_ms + days * _DAY_MS >= _MAX_TS:
        msg = f"start_ms must be >= 0 and keep the range below {_MAX_TS}, got {start_ms!r}"
        raise ValueError(msg)


def generate(
    users: int,
    days: float,
    seed: int,
    out: str | Path,
    personas_path: str | Path,
    *,
    start_ms: int | None = None,
    chunk_users: int = 20_000,
    progress: Callable[[int], None] | None = None,
    persona_weights: Mapping[str, float] | None = None,
) -> GenerateSummary:
    """Write ``users`` synthetic shoppers' events over ``days`` days to ``out``.

    ``out`` is JSONL (gzip if it ends in ``.gz``) in non-decreasing ``ts`` order;
    ``personas_path`` gets a ``user_id,persona`` CSV. Output is byte-identical for
    identical arguments, whatever ``chunk_users`` is.

    ``progress`` gets a non-decreasing event count: every ~25k events while users
    are simulated and spilled to sorted temporary runs (the bulk of the work),
    then once more with the final total after the runs are merged into ``out``.
    ``persona_weights`` overrides :data:`DEFAULT_PERSONA_WEIGHTS` (relative
    weights; personas left out get none).

    Raises ValueError naming the offending argument.
    """
    start = DEFAULT_START_MS if start_ms is None else start_ms
    _validate(users, days, chunk_users, start)
    weights = DEFAULT_PERSONA_WEIGHTS if persona_weights is None else persona_weights
    plan = _Plan(
        users=users,
        seed=seed,
        start_ms=start,
        end_ms=start + math.ceil(days * _DAY_MS),
        chunk_users=chunk_users,
        pick=_persona_picker(weights),
    )
    out_path, csv_path = Path(out), Path(personas_path)
    for parent in (out_path.parent, csv_path.parent):
        parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".segstream-gen-", dir=out_path.parent) as tmp:
        tmpdir = Path(tmp)
        with csv_path.open("w", encoding="utf-8", newline="") as csv_fh:
            csv_fh.write("user_id,persona\n")
            runs, tail, totals = _simulate_all(plan, tmpdir, csv_fh, progress)
        runs = _reduce_runs(runs, tmpdir, _MAX_FANIN - 1)
        with contextlib.ExitStack() as stack, _open_output(out_path) as out_fh:
            sources: list[Iterable[bytes]] = [stack.enter_context(p.open("rb")) for p in runs]
            _write_merged(out_fh, [*sources, tail])
    if progress is not None:
        progress(totals.events)
    return GenerateSummary(
        users=users,
        events=totals.events,
        first_ts_ms=totals.first_ts,
        last_ts_ms=totals.last_ts,
        personas=dict(totals.personas),
        out=str(out_path),
        personas_path=str(csv_path),
    )
