"""Unit tests for the offline association-rule reference (stream.tools.association)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream.errors import ConfigError
from stream.tools.association import (
    OfflineRule,
    fpgrowth_rules,
    pairs,
    precision_at,
    recovered,
    session_baskets,
)
from stream.tools.generate import PLANTED_RULES, generate

pytestmark = pytest.mark.unit

# Ten baskets: a in 5, b in 5, c in 4, d in 2; {a, b} in 4, {a, c} in 2, {b, c} in 1.
BASKETS = [
    ["a", "b"],
    ["a", "b"],
    ["a", "b"],
    ["a", "c"],
    ["b"],
    ["c"],
    ["c"],
    ["d"],
    ["d"],
    ["a", "b", "c"],
]


def rule(antecedent: str, consequent: str, support: float, confidence: float, lift: float) -> Any:
    """What an OfflineRule with these fields equals, its figures compared approximately."""
    approx = pytest.approx
    return (antecedent, consequent, approx(support), approx(confidence), approx(lift))


# --- fpgrowth_rules ---------------------------------------------------------


def test_rules_have_the_hand_counted_support_confidence_and_lift() -> None:
    found = fpgrowth_rules(BASKETS, min_support=0.15, min_confidence=0.3, min_lift=0.0)
    # a -> b and b -> a tie on lift and confidence: the consequent's name breaks the tie.
    assert found == [
        rule("b", "a", 0.4, 0.8, 1.6),
        rule("a", "b", 0.4, 0.8, 1.6),
        rule("c", "a", 0.2, 0.5, 1.0),
        rule("a", "c", 0.2, 0.4, 1.0),
    ]
    assert all(type(x) is float for r in found for x in r[2:])


AB, BA, AC, CA, BC, CB = ("a", "b"), ("b", "a"), ("a", "c"), ("c", "a"), ("b", "c"), ("c", "b")


@pytest.mark.parametrize(
    ("support", "confidence", "lift", "expected"),
    [
        (0.15, 0.3, 1.5, [BA, AB]),
        (0.15, 0.45, 0.0, [BA, AB, CA]),
        # {b, c} is in one basket of ten: its rules pass at a support of 0.1, not above.
        (0.1, 0.0, 0.0, [BA, AB, CA, AC, CB, BC]),
        (0.11, 0.0, 0.0, [BA, AB, CA, AC]),
        (0.5, 0.0, 0.0, []),
    ],
    ids=["min-lift", "min-confidence", "support-at-the-bound", "support-above", "no-pair"],
)
def test_every_minimum_filters_rules(
    support: float, confidence: float, lift: float, expected: list[tuple[str, str]]
) -> None:
    found = fpgrowth_rules(BASKETS, min_support=support, min_confidence=confidence, min_lift=lift)
    assert pairs(found) == expected


def test_single_item_baskets_count_in_support() -> None:
    padded = [*BASKETS, *[["e"]] * 10]
    (top, *_) = fpgrowth_rules(padded, min_support=0.1, min_confidence=0.3, min_lift=1.5)
    assert top == rule("b", "a", 0.2, 0.8, 3.2)


def test_no_baskets_or_no_pairs_give_no_rules() -> None:
    assert fpgrowth_rules([], min_support=0.1, min_confidence=0.1, min_lift=1.0) == []
    singles = [["a"], ["b"], ["a"]]
    assert fpgrowth_rules(singles, min_support=0.1, min_confidence=0.1, min_lift=1.0) == []


@pytest.mark.parametrize("min_support", [0.0, -0.1, 1.5])
def test_min_support_out_of_range_is_refused(min_support: float) -> None:
    with pytest.raises(ValueError, match="min_support"):
        fpgrowth_rules(BASKETS, min_support=min_support, min_confidence=0.1, min_lift=1.0)


def test_missing_mlxtend_names_the_evaluate_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "mlxtend.frequent_patterns", None)
    with pytest.raises(ConfigError, match=r"segstream\[evaluate\]"):
        fpgrowth_rules(BASKETS, min_support=0.1, min_confidence=0.1, min_lift=1.0)


# --- session_baskets --------------------------------------------------------


def event(etype: str, product: str | None, **fields: Any) -> dict[str, Any]:
    e: dict[str, Any] = {"user_id": "u1", "type": etype, **fields}
    if product is not None:
        e["product_id"] = product
        e["category"] = f"cat-{product[0]}"
    return e


EVENTS = [
    event("view", "x1", session_id="s1"),  # views are browsing, not a basket
    event("add_to_cart", "a1", session_id="s1"),
    event("add_to_cart", "b1", session_id="s1"),
    event("remove_from_cart", "b1", session_id="s1"),
    event("purchase", "a1", session_id="s1", order_id="o1"),  # a1 again: one item
    event("add_to_cart", "a2", session_id="s2"),
    event("add_to_cart", "c1", user_id="u2", session_id="s1"),  # same session id, other user
    event("purchase", "b2", order_id="o7"),  # no session: the order is the basket
    event("purchase", "a3", order_id="o7"),
    event("add_to_cart", "c2"),  # neither: a basket alone
    event("add_to_cart", "c3"),
    event("add_to_cart", None, session_id="s3"),  # no product: not a line
    event("search", None, session_id="s1", query="lamp"),
    event("add_to_cart", "b3", session_id="s1"),  # back to s1: same basket
]


def test_baskets_by_session_then_order_then_event() -> None:
    assert session_baskets(EVENTS) == [
        ["a1", "b1", "b3"],
        ["a2"],
        ["c1"],
        ["b2", "a3"],
        ["c2"],
        ["c3"],
    ]


def test_category_baskets_hold_distinct_categories_of_the_lines() -> None:
    assert session_baskets(EVENTS, categories=True) == [
        ["category:cat-a", "category:cat-b"],
        ["category:cat-a"],
        ["category:cat-c"],
        ["category:cat-b", "category:cat-a"],
        ["category:cat-c"],
        ["category:cat-c"],
    ]
    no_category = {"user_id": "u1", "type": "purchase", "product_id": "p", "order_id": "o"}
    assert session_baskets([no_category], categories=True) == []


def test_no_basket_lines_give_no_baskets() -> None:
    assert session_baskets([]) == []
    assert session_baskets([event("view", "a1", session_id="s1")]) == []


# --- precision_at and recovered ---------------------------------------------

P = [("a", "b"), ("c", "d"), ("e", "f"), ("g", "h")]


@pytest.mark.parametrize(
    ("streamed", "offline", "k", "expected"),
    [
        (P, P, 10, 1.0),
        (P, list(reversed(P)), 4, 1.0),  # order inside the top-k does not matter
        (P, [("b", "a"), ("c", "d")], 10, 0.5),  # fewer offline: top-2 against top-2
        (P[:1], P, 10, 1.0),  # fewer streamed: top-1 against top-1
        (P, [P[3], P[0]], 2, 0.5),
        (P, P[2:], 2, 0.0),
        ([], P, 10, 0.0),
        (P, [], 10, 0.0),
        ([], [], 10, 0.0),
    ],
    ids=["same", "reordered", "short-offline", "short-streamed", "k-2", "disjoint",
         "no-streamed", "no-offline", "none"],
)  # fmt: skip
def test_precision_at(
    streamed: list[tuple[str, str]], offline: list[tuple[str, str]], k: int, expected: float
) -> None:
    assert precision_at(streamed, offline, k) == expected


def test_precision_at_refuses_k_below_one() -> None:
    with pytest.raises(ValueError, match="k must be"):
        precision_at(P, P, 0)


def test_recovered_keeps_planted_order_and_ignores_reversed_rules() -> None:
    planted = [("a", "b"), ("x", "y"), ("c", "d")]
    assert recovered(planted, [("c", "d"), ("y", "x"), ("a", "b")]) == [("a", "b"), ("c", "d")]
    assert recovered(planted, []) == []
    assert recovered([], P) == []


def test_pairs_of_planted_and_offline_rules() -> None:
    assert pairs([OfflineRule("a", "b", 0.1, 0.5, 2.0)]) == [("a", "b")]
    assert pairs(PLANTED_RULES)[0] == (PLANTED_RULES[0].antecedent, PLANTED_RULES[0].consequent)


# --- on generated data -------------------------------------------------------


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> list[list[str]]:
    tmp = tmp_path_factory.mktemp("assoc")
    summary = generate(3000, 30, 7, tmp / "e.jsonl", tmp / "p.csv")
    lines = Path(summary.out).read_bytes().splitlines()
    return session_baskets(orjson.loads(line) for line in lines)


def test_fpgrowth_finds_every_planted_rule(generated: list[list[str]]) -> None:
    rules = fpgrowth_rules(generated, min_support=0.0005, min_confidence=0.1, min_lift=1.5)
    planted = pairs(PLANTED_RULES)
    assert recovered(planted, pairs(rules)) == planted
    # The library's figures are those counted by hand on the same baskets.
    by_pair = {(r.antecedent, r.consequent): r for r in rules}
    n = len(generated)
    for a, c in planted:
        n_a = sum(a in b for b in generated)
        n_c = sum(c in b for b in generated)
        n_ac = sum(a in b and c in b for b in generated)
        assert by_pair[a, c] == rule(a, c, n_ac / n, n_ac / n_a, n_ac * n / (n_a * n_c))
        assert by_pair[a, c].lift >= 3
