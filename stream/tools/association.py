"""The offline reference for cross-sell rules: FP-growth (mlxtend) over the same baskets.

`segstream evaluate` compares the rules the service counted in a stream with the pair rules a kept
library mines from the whole file at once, and checks which rules the generator planted
(:data:`stream.tools.generate.PLANTED_RULES`) were found. Baskets are cut as the service cuts
them (see :func:`session_baskets`), and rules are ranked as the service ranks them, so the two
lists compare like for like.

mlxtend (and pandas behind it) is imported only when rules are mined: the service never needs
it; `pip install 'segstream[evaluate]'` brings it.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any, Final, NamedTuple, Protocol

import numpy as np

from stream.errors import ConfigError

__all__ = [
    "BASKET_TYPES",
    "CATEGORY_ITEM",
    "OfflineRule",
    "fpgrowth_rules",
    "pairs",
    "precision_at",
    "recovered",
    "session_baskets",
]

# What a user meant to buy, not what they browsed (as features.definitions.BASKET_TYPES).
BASKET_TYPES: Final = frozenset({"add_to_cart", "purchase"})
# Prefix of a category item, as the service names them (segments.engine.CATEGORY_ITEM).
CATEGORY_ITEM: Final = "category:"
# Columns of mlxtend's rule frame that _rule reads, in its order.
_RULE_COLUMNS: Final = (
    "antecedents",
    "consequents",
    "antecedent support",
    "consequent support",
    "support",
    "confidence",
)


class OfflineRule(NamedTuple):
    antecedent: str
    consequent: str
    support: float  # baskets holding both / baskets
    confidence: float  # baskets holding both / baskets holding the antecedent
    lift: float  # confidence / share of baskets holding the consequent


class _Pair(Protocol):
    @property
    def antecedent(self) -> str: ...

    @property
    def consequent(self) -> str: ...


def session_baskets(
    events: Iterable[Mapping[str, Any]], *, categories: bool = False
) -> list[list[str]]:
    """Baskets as the service counts them, in the order they first appear.

    A basket is one user's session (``session_id``); an event without one falls into its order
    (``order_id``), and one without either is a basket alone. It holds the distinct products of
    its add_to_cart and purchase events in first-seen order, or with ``categories`` the distinct
    categories of those lines as ``category:<name>``. Only lines with a product count, as in the
    service; baskets left empty are dropped, single-item ones kept (they count in support).

    Unlike the service, a basket is not capped in size: this is the reference.
    """
    baskets: dict[Hashable, dict[str, None]] = {}  # a dict keeps first-seen order, distinct
    for index, event in enumerate(events):
        if event.get("type") not in BASKET_TYPES or not event.get("product_id"):
            continue
        item = _item(event, categories=categories)
        if item is None:
            continue
        baskets.setdefault(_basket_key(index, event), {})[item] = None
    return [list(items) for items in baskets.values()]


def _basket_key(index: int, event: Mapping[str, Any]) -> Hashable:
    user = event.get("user_id")
    if session := event.get("session_id"):
        return ("session", user, session)
    if order := event.get("order_id"):
        return ("order", user, order)
    return ("event", index)


def _item(event: Mapping[str, Any], *, categories: bool) -> str | None:
    if not categories:
        return str(event["product_id"])
    category = event.get("category")
    return f"{CATEGORY_ITEM}{category}" if category else None


def fpgrowth_rules(
    baskets: Sequence[Sequence[str]],
    *,
    min_support: float,
    min_confidence: float,
    min_lift: float,
) -> list[OfflineRule]:
    """Rules a -> b between single items that pass all three minimums, best first.

    Best first as the service ranks them: higher lift, then higher confidence, then consequent
    and antecedent names. Raises ValueError for a ``min_support`` outside (0, 1], ConfigError if
    mlxtend is not installed.
    """
    if not 0.0 < min_support <= 1.0:
        msg = f"min_support must be in (0, 1], got {min_support!r}"
        raise ValueError(msg)
    fpgrowth, association_rules = _mlxtend()
    onehot = _onehot(baskets, min_support)
    if onehot is None:
        return []
    itemsets = fpgrowth(onehot, min_support=min_support, use_colnames=True, max_len=2)
    if not (itemsets["itemsets"].map(len) == 2).any():
        return []  # association_rules has nothing to pair
    found = association_rules(
        itemsets,
        num_itemsets=len(baskets),
        metric="confidence",
        min_threshold=min_confidence,
        return_metrics=list(_RULE_COLUMNS[2:]),
    )
    rows = zip(*(found[column] for column in _RULE_COLUMNS), strict=True)
    rules = [rule for row in rows if (rule := _rule(row)).lift >= min_lift]
    rules.sort(key=lambda r: (-r.lift, -r.confidence, r.consequent, r.antecedent))
    return rules


def _rule(row: tuple[Any, ...]) -> OfflineRule:
    (antecedent,), (consequent,), antecedent_support, consequent_support, support, confidence = row
    # Lift from the supports in a form symmetric in a and b, so a -> b and b -> a tie exactly and
    # the ranking falls to confidence rather than to float rounding.
    lift = support / (antecedent_support * consequent_support)
    return OfflineRule(antecedent, consequent, float(support), float(confidence), float(lift))


def _mlxtend() -> tuple[Any, Any]:
    try:
        from mlxtend.frequent_patterns import (  # type: ignore[import-untyped]
            association_rules,
            fpgrowth,
        )
    except ImportError:
        msg = "offline association rules need mlxtend: pip install 'segstream[evaluate]'"
        raise ConfigError(msg) from None
    return fpgrowth, association_rules


def _onehot(baskets: Sequence[Sequence[str]], min_support: float) -> Any:
    """A sparse basket x item DataFrame of the items frequent enough to be in a rule, or None.

    Rarer items can be in no frequent itemset, so dropping them changes no rule; it keeps the
    frame narrow, which matters because mlxtend densifies it once to count item supports.
    """
    import pandas as pd  # type: ignore[import-untyped]
    from scipy import sparse

    counts: dict[str, int] = {}
    for basket in baskets:
        for item in set(basket):
            counts[item] = counts.get(item, 0) + 1
    # The same test as mlxtend's, so no item it would keep is dropped by float rounding.
    columns = sorted(item for item, n in counts.items() if n / len(baskets) >= min_support)
    if not columns:
        return None
    position = {item: i for i, item in enumerate(columns)}
    rows: list[int] = []
    cols: list[int] = []
    for row, basket in enumerate(baskets):
        for col in {position[item] for item in basket if item in position}:
            rows.append(row)
            cols.append(col)
    matrix = sparse.csr_matrix(
        (np.ones(len(rows), dtype=bool), (rows, cols)), shape=(len(baskets), len(columns))
    )
    return pd.DataFrame.sparse.from_spmatrix(matrix, columns=columns)


def pairs(rules: Iterable[_Pair]) -> list[tuple[str, str]]:
    """(antecedent, consequent) of each rule, in order: for :func:`precision_at` and
    :func:`recovered`, from the service's rules, offline ones or planted ones alike."""
    return [(r.antecedent, r.consequent) for r in rules]


def precision_at(
    streamed: Sequence[tuple[str, str]], offline: Sequence[tuple[str, str]], k: int = 10
) -> float:
    """Share of the streamed top-n pairs that are in the offline top-n (both best first).

    n is k, or the length of the shorter list when either holds fewer than k pairs, so neither
    side is blamed for the other having few rules; when either list is empty it is 0.0.
    Raises ValueError if k < 1.
    """
    if k < 1:
        msg = f"k must be >= 1, got {k!r}"
        raise ValueError(msg)
    n = min(k, len(streamed), len(offline))
    if n == 0:
        return 0.0
    reference = set(offline[:n])
    return sum(pair in reference for pair in streamed[:n]) / n


def recovered(
    planted: Iterable[tuple[str, str]], streamed: Sequence[tuple[str, str]]
) -> list[tuple[str, str]]:
    """The planted (antecedent, consequent) pairs found among the streamed ones, in planted
    order (a rule found reversed, consequent -> antecedent, does not count)."""
    found = set(streamed)
    return [pair for pair in planted if pair in found]
