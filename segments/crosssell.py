"""Cross-sell rules: how often items, and pairs of items, share a basket, decayed over event time.

The trainer keeps, in bounded memory, a decayed count of baskets, of each item and of each item's
most frequent partners, and freezes them into a small table of association rules (a -> b with
support, confidence and lift) for scoring and for other services to read.

Decay without touching every count on each update: counts are kept in the units of a reference
time, an update at time t weighing 2**((t - ref) / half_life), and are read divided by the weight
of the newest time learned. Ratios (support, confidence, lift) do not depend on the reference.
When the newest time runs far ahead of the reference, every count is rescaled to a new one.

Memory is pruned lazily: the item dict may grow a quarter past `max_items` and a partner dict to
twice `partners` before the smallest counts are dropped, so each prune is paid for by the many
updates before it. A pair is counted only while both of its items are tracked.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from operator import itemgetter
from typing import Final, NamedTuple

DAY_MS: Final = 86_400_000

# Counts are rescaled to a new reference once the newest time is this many half-lives past it:
# weights stay below 2**60, far from overflow, and the rescale (every count touched) is rare.
RESCALE_AFTER: Final = 60.0
# Exponents are clamped so that a hostile time (2**62 ms, or 0 after years of real times) gives
# a tiny or a rescaled weight instead of an OverflowError; 2**1000 is still a finite float. A time
# far ahead still ages every count before it, which is why events ahead of the clock are rejected
# on the way in (`features.events`).
MAX_EXPONENT: Final = 1_000.0
# The item dict may grow this far past max_items before the smallest counts are dropped.
ITEM_SLACK: Final = 1.25


# Items that are categories, not products: counted apart, each kind with its own baskets.
CATEGORY_ITEM: Final = "category:"


class Basket(NamedTuple):
    """One user's basket as it grew since it was last counted."""

    held: tuple[str, ...]  # items of this basket counted before (empty: a new basket)
    added: tuple[str, ...]  # items new since (distinct, none of them in held)
    time_ms: int  # event time


class Rule(NamedTuple):
    antecedent: str
    consequent: str
    support: float  # pair count / baskets
    confidence: float  # pair count / antecedent count
    lift: float  # confidence / (consequent count / baskets)
    # The pair's decayed count (in baskets, as of the newest time learned). The name shadows
    # tuple.count, which mypy reports; the engine and model read it by this name.
    count: float  # type: ignore[assignment]


def _order(rule: Rule) -> tuple[float, float, str, str]:
    """Best first: higher lift, then higher confidence, then names (deterministic)."""
    return (-rule.lift, -rule.confidence, rule.consequent, rule.antecedent)


class RuleTable:
    """Frozen rules for scoring and reading, kept only for items with at least one rule."""

    def __init__(self, rules: Iterable[Rule], baskets: float) -> None:
        by_antecedent: dict[str, list[Rule]] = {}
        for rule in rules:
            by_antecedent.setdefault(rule.antecedent, []).append(rule)
        self._rules = {a: tuple(sorted(found, key=_order)) for a, found in by_antecedent.items()}
        self.baskets = baskets
        # Asked at every scoring: counted once.
        self._count = sum(len(found) for found in self._rules.values())

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        return f"RuleTable(rules={len(self)}, baskets={self.baskets:g})"

    def of(self, item: str) -> tuple[Rule, ...]:
        """Rules with this antecedent, best first; () if none."""
        return self._rules.get(item, ())

    def top(self, n: int) -> list[Rule]:
        """All rules, best first, at most n."""
        every = (rule for found in self._rules.values() for rule in found)
        return heapq.nsmallest(n, every, key=_order)

    def recommend(self, items: Sequence[str], n: int) -> list[Rule]:
        """For a user's recent items: the best rule per consequent not in items, best first."""
        rules = self._rules
        if not any(item in rules for item in items):  # most users: none of theirs has a rule
            return []
        held = set(items)
        best: dict[str, Rule] = {}
        for item in held:
            for rule in self.of(item):
                if rule.consequent in held:
                    continue
                kept = best.get(rule.consequent)
                if kept is None or _order(rule) < _order(kept):
                    best[rule.consequent] = rule
        return heapq.nsmallest(n, best.values(), key=_order)

    def as_json(self) -> dict[str, list[dict[str, float | str]]]:
        """Antecedent -> its rules, best first (the count is support * baskets, so left out)."""
        return {
            antecedent: [
                {
                    "antecedent": r.antecedent,
                    "consequent": r.consequent,
                    "support": r.support,
                    "confidence": r.confidence,
                    "lift": r.lift,
                }
                for r in found
            ]
            for antecedent, found in self._rules.items()
        }

    @classmethod
    def from_json(
        cls, data: Mapping[str, Sequence[Mapping[str, float | str]]], baskets: float
    ) -> RuleTable:
        rules = (
            Rule(
                antecedent=str(d["antecedent"]),
                consequent=str(d["consequent"]),
                support=float(d["support"]),
                confidence=float(d["confidence"]),
                lift=float(d["lift"]),
                count=float(d["support"]) * baskets,
            )
            for found in data.values()
            for d in found
        )
        return cls(rules, baskets)


def empty_rules() -> RuleTable:
    return RuleTable((), 0.0)


class PairCounts:
    """The trainer's side: decayed counts of baskets, items and item pairs (plain attributes, so
    it pickles with the model)."""

    def __init__(
        self, max_items: int = 5_000, partners: int = 20, half_life_ms: int = 30 * DAY_MS
    ) -> None:
        self._max_items = max_items
        self._partners = partners
        self._half_life_ms = half_life_ms
        self._ref = 0  # the reference time the counts are kept in units of
        self._newest: int | None = None
        self._baskets = 0.0
        self._items: dict[str, float] = {}
        # item -> partner -> count of baskets holding both; keys always a subset of _items.
        self._pairs: dict[str, dict[str, float]] = {}

    def __len__(self) -> int:
        return len(self._items)

    @property
    def baskets(self) -> float:
        """Decayed basket count as of the newest time learned."""
        return self._baskets / self._newest_weight()

    def learn(self, basket: Basket) -> None:
        w = self._weight(basket.time_ms)
        if not basket.held:
            self._baskets += w
        items, pairs, added = self._items, self._pairs, basket.added
        for a in added:
            items[a] = items.get(a, 0.0) + w
        held = [b for b in basket.held if b in items]  # a dropped item's pairs are not counted
        members = held + list(added)
        for a in added:
            partners = pairs.get(a)
            if partners is None:
                partners = pairs[a] = {}
            for b in members:
                if b != a:
                    partners[b] = partners.get(b, 0.0) + w
        for b in held:
            partners = pairs.setdefault(b, {})
            for a in added:
                partners[a] = partners.get(a, 0.0) + w
        self._prune(members)

    def rules(
        self, min_support: float, min_confidence: float, min_lift: float, top: int = 10
    ) -> RuleTable:
        """Freeze the rules a -> b that pass all three minimums, at most `top` per antecedent."""
        n = self._baskets
        if not n > 0.0 or not math.isfinite(n):
            return empty_rules()
        scale = self._newest_weight()
        need = min_support * n  # a pair count below it fails the support: not looked at
        kept: list[Rule] = []
        for a, partners in self._pairs.items():
            found = [
                rule
                for b, n_ab in partners.items()
                if n_ab >= need
                and (rule := self._rule(a, b, n_ab, n, scale)) is not None
                and rule.support >= min_support
                and rule.confidence >= min_confidence
                and rule.lift >= min_lift
            ]
            kept.extend(heapq.nsmallest(top, found, key=_order))
        return RuleTable(kept, n / scale)

    def _rule(self, a: str, b: str, n_ab: float, n: float, scale: float) -> Rule | None:
        """The rule a -> b from counts in reference units; None if a count is gone or zero."""
        n_a, n_b = self._items.get(a, 0.0), self._items.get(b, 0.0)
        if not (n_a > 0.0 and n_b > 0.0):
            return None
        # A pair outliving a prune of one of its items may count more than the item's fresh count.
        n_ab = min(n_ab, n_a, n_b)
        confidence = n_ab / n_a
        lift = confidence * n / n_b  # confidence / (n_b / n), without underflow to zero
        if not (n_ab > 0.0 and math.isfinite(lift)):
            return None
        return Rule(a, b, n_ab / n, confidence, lift, n_ab / scale)

    def _exponent(self, time_ms: int) -> float:
        e = (time_ms - self._ref) / self._half_life_ms
        return min(max(e, -MAX_EXPONENT), MAX_EXPONENT)

    def _newest_weight(self) -> float:
        return 1.0 if self._newest is None else math.exp2(self._exponent(self._newest))

    def _weight(self, time_ms: int) -> float:
        """The weight of an update at time_ms, rescaling first if it moves the newest time far."""
        if self._newest is None:
            self._ref = self._newest = time_ms
        exponent = self._exponent(time_ms)
        if time_ms > self._newest:
            self._newest = time_ms
            if exponent > RESCALE_AFTER:
                self._rescale(time_ms)
                exponent = 0.0  # time_ms is the reference now
        return math.exp2(exponent)

    def _rescale(self, ref: int) -> None:
        factor = math.exp2(-self._exponent(ref))
        self._baskets *= factor
        self._items = {item: count * factor for item, count in self._items.items()}
        for partners in self._pairs.values():
            for b in partners:
                partners[b] *= factor
        self._ref = ref

    def _prune(self, touched: Sequence[str]) -> None:
        """Drop the smallest counts once a dict has grown well past its bound."""
        limit = 2 * self._partners
        for item in touched:
            partners = self._pairs.get(item, {})
            if len(partners) > limit:
                largest = heapq.nlargest(self._partners, partners.items(), key=itemgetter(1))
                partners.clear()
                partners.update(largest)
        if len(self._items) > self._max_items * ITEM_SLACK:
            largest = heapq.nlargest(self._max_items, self._items.items(), key=itemgetter(1))
            self._items = dict(largest)
            self._pairs = {a: p for a, p in self._pairs.items() if a in self._items}
