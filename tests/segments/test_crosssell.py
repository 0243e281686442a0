"""Cross-sell pair counts and rules (`segments.crosssell`): the counts against a brute-force
count, baskets counted the same however their items arrive, decay and rescaling, bounded memory
on a long stream, hostile times, the round-trips, and reading the frozen table."""

from __future__ import annotations

import itertools
import json
import math
import pickle
import random
from collections import Counter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from segments.crosssell import DAY_MS, Basket, PairCounts, Rule, RuleTable, empty_rules

pytestmark = pytest.mark.unit

T0 = 1_764_201_600_000  # 2025-11-27T00:00:00Z
NEVER = 10**18  # a half-life no test outlives: every weight is 1
EVERYTHING = 10**9  # rules per antecedent: no cap


def unpruned() -> PairCounts:
    return PairCounts(max_items=10**6, partners=10**6, half_life_ms=NEVER)


def every_rule(counts: PairCounts) -> list[Rule]:
    return counts.rules(0.0, 0.0, 0.0, top=EVERYTHING).top(EVERYTHING)


def random_baskets(n: int, seed: int, universe: int = 12) -> list[tuple[str, ...]]:
    rng = random.Random(seed)
    items = [f"i{k}" for k in range(universe)]
    return [tuple(rng.sample(items, rng.randint(1, 6))) for _ in range(n)]


def learned_in_steps(counts: PairCounts, basket: tuple[str, ...], cuts: list[int], t: int) -> None:
    """Learn one basket in chunks cut at the given positions, as a growing basket would arrive."""
    bounds = [0, *sorted(set(cuts)), len(basket)]
    for start, end in itertools.pairwise(bounds):
        if end > start:
            counts.learn(Basket(basket[:start], basket[start:end], t))


def rule(a: str, b: str, lift: float, confidence: float = 0.5) -> Rule:
    return Rule(a, b, support=0.1, confidence=confidence, lift=lift, count=1.0)


# --- counts ------------------------------------------------------------------------------------


def test_the_rules_are_a_brute_force_count() -> None:
    baskets = random_baskets(400, 1)
    counts = unpruned()
    rng = random.Random(2)
    for i, basket in enumerate(baskets):
        cuts = [rng.randint(0, len(basket)) for _ in range(rng.randint(0, 2))]
        learned_in_steps(counts, basket, cuts, T0 + i * 1_000)
    n = len(baskets)
    singles = Counter(item for basket in baskets for item in basket)
    pairs = Counter(p for basket in baskets for p in itertools.permutations(basket, 2))
    got = {(r.antecedent, r.consequent): r for r in every_rule(counts)}
    assert set(got) == set(pairs)
    assert counts.baskets == pytest.approx(n, rel=1e-9)
    assert len(counts) == len(singles)
    for (a, b), n_ab in pairs.items():
        r = got[a, b]
        assert r.support == pytest.approx(n_ab / n, rel=1e-9)
        assert r.confidence == pytest.approx(n_ab / singles[a], rel=1e-9)
        assert r.lift == pytest.approx(n_ab / singles[a] / (singles[b] / n), rel=1e-9)
        assert r.count == pytest.approx(n_ab, rel=1e-9)


@given(
    basket=st.lists(st.sampled_from("abcdefgh"), min_size=1, max_size=8, unique=True),
    cuts=st.lists(st.integers(0, 8), max_size=4),
)
def test_a_basket_counts_each_pair_once_however_its_items_arrive(
    basket: list[str], cuts: list[int]
) -> None:
    other = ("a", "c", "x")  # another basket, so that the ratios are not all 1
    whole, in_steps = unpruned(), unpruned()
    for counts in (whole, in_steps):
        counts.learn(Basket((), other, T0))
    whole.learn(Basket((), tuple(basket), T0))
    learned_in_steps(in_steps, tuple(basket), [c for c in cuts if c < len(basket)], T0)
    assert in_steps.baskets == whole.baskets == 2.0
    assert len(in_steps) == len(whole)
    assert every_rule(in_steps) == every_rule(whole)


def test_the_example_of_a_growing_basket() -> None:
    whole, in_steps = unpruned(), unpruned()
    whole.learn(Basket((), ("a", "b", "c"), T0))
    in_steps.learn(Basket((), ("a", "b"), T0))
    in_steps.learn(Basket(("a", "b"), ("c",), T0 + 1))
    assert every_rule(in_steps) == every_rule(whole)
    assert [r.count for r in every_rule(whole)] == [1.0] * 6


def test_no_baskets_no_rules() -> None:
    assert len(PairCounts().rules(0.0, 0.0, 0.0)) == 0
    assert PairCounts().baskets == 0.0
    held_only = PairCounts()  # pairs but never a new basket: nothing to divide by
    held_only.learn(Basket(("a",), ("b",), T0))
    assert len(held_only.rules(0.0, 0.0, 0.0)) == 0
    assert empty_rules().top(5) == []
    assert empty_rules().recommend(["a"], 5) == []


def test_the_minimums_filter_and_top_caps_each_antecedent() -> None:
    counts = unpruned()
    for i, basket in enumerate(random_baskets(300, 3)):
        counts.learn(Basket((), basket, T0 + i))
    everything = every_rule(counts)
    table = counts.rules(min_support=0.05, min_confidence=0.3, min_lift=1.1, top=EVERYTHING)
    expected = [r for r in everything if r.support >= 0.05 and r.confidence >= 0.3]
    expected = [r for r in expected if r.lift >= 1.1]
    assert 0 < len(table) == len(expected) < len(everything)
    assert table.top(EVERYTHING) == expected
    capped = counts.rules(0.0, 0.0, 0.0, top=2)
    for item in {r.antecedent for r in everything}:
        best = [r for r in everything if r.antecedent == item][:2]
        assert capped.of(item) == tuple(best)


# --- decay -------------------------------------------------------------------------------------


def test_a_pair_learned_one_half_life_earlier_weighs_half() -> None:
    counts = PairCounts(half_life_ms=30 * DAY_MS)
    counts.learn(Basket((), ("a", "b"), T0))
    counts.learn(Basket((), ("c", "d"), T0 + 30 * DAY_MS))
    table = counts.rules(0.0, 0.0, 0.0)
    assert counts.baskets == pytest.approx(1.5, rel=1e-12)
    assert table.of("a")[0].count == pytest.approx(0.5, rel=1e-12)
    assert table.of("c")[0].count == pytest.approx(1.0, rel=1e-12)
    assert table.of("a")[0].support == pytest.approx(0.5 / 1.5, rel=1e-12)
    assert table.of("a")[0].confidence == pytest.approx(1.0, rel=1e-12)


def test_an_out_of_order_time_weighs_less() -> None:
    counts = PairCounts(half_life_ms=DAY_MS)
    counts.learn(Basket((), ("a", "b"), T0))
    counts.learn(Basket((), ("c", "d"), T0 - 2 * DAY_MS))
    assert counts.baskets == pytest.approx(1.25, rel=1e-12)
    assert counts.rules(0.0, 0.0, 0.0).of("c")[0].count == pytest.approx(0.25, rel=1e-12)


def test_counts_survive_rescaling_across_hundreds_of_half_lives() -> None:
    half_life = 1_000
    counts = PairCounts(half_life_ms=half_life)
    steps = 500  # past the rescale point several times
    for k in range(steps):
        counts.learn(Basket((), ("a", "b") if k % 2 else ("a", "c"), T0 + k * half_life))
    # The basket learned k half-lives before the last weighs 2**-k.
    expected_b = sum(2.0**-k for k in range(0, steps, 2))  # the last step (499) was ("a", "b")
    expected = sum(2.0**-k for k in range(steps))
    assert counts.baskets == pytest.approx(expected, rel=1e-9)
    table = counts.rules(0.0, 0.0, 0.0)
    assert table.of("b")[0].count == pytest.approx(expected_b, rel=1e-9)
    # a is in every basket: both its rules have lift 1, and b (the more recent) the confidence.
    assert [r.consequent for r in table.of("a")] == ["b", "c"]
    assert table.of("a")[0].confidence == pytest.approx(expected_b / expected, rel=1e-9)


@pytest.mark.parametrize("hostile", [2**62, 0, -(2**62)], ids=["far-future", "zero", "far-past"])
def test_hostile_times_neither_overflow_nor_leave_nan_in_the_table(hostile: int) -> None:
    counts = PairCounts(half_life_ms=DAY_MS)
    counts.learn(Basket((), ("a", "b"), T0))
    counts.learn(Basket((), ("a", "c"), hostile))
    counts.learn(Basket(("a", "c"), ("b",), hostile))
    counts.learn(Basket((), ("b", "c"), T0 + DAY_MS))
    assert math.isfinite(counts.baskets)
    assert counts.baskets >= 0.0
    table = counts.rules(0.0, 0.0, 0.0)
    for r in table.top(EVERYTHING):
        assert all(math.isfinite(v) for v in (r.support, r.confidence, r.lift, r.count))
        assert 0.0 <= r.confidence <= 1.0
    json.dumps(table.as_json(), allow_nan=False)


# --- bounded memory ----------------------------------------------------------------------------


def test_memory_stays_bounded_on_a_long_stream() -> None:
    max_items, partners = 5_000, 20
    counts = PairCounts(max_items=max_items, partners=partners, half_life_ms=30 * DAY_MS)
    rng = np.random.default_rng(4)
    sizes = rng.integers(1, 6, size=200_000).tolist()
    picks = rng.integers(0, 50_000, size=sum(sizes)).tolist()
    start = 0
    for i, size in enumerate(sizes):
        items = tuple(dict.fromkeys(f"i{k}" for k in picks[start : start + size]))
        start += size
        if i % 20 == 0:  # a pair that keeps coming back must survive the pruning
            items = tuple(dict.fromkeys(("p", "q", *items)))
        counts.learn(Basket((), items, T0 + i * 10_000))
        assert len(counts) <= max_items * 1.25
    assert all(len(p) <= 2 * partners for p in counts._pairs.values())
    # Without a minimum support, an item seen once beside p would top p's rules by lift.
    table = counts.rules(0.01, 0.0, 2.0)
    assert [r.consequent for r in table.of("p")] == ["q"]
    assert table.of("p")[0].confidence == pytest.approx(1.0, rel=0.05)
    for r in table.top(EVERYTHING):
        assert 0.0 < r.support <= 1.0
        assert 0.0 < r.confidence <= 1.0


# --- round-trips -------------------------------------------------------------------------------


def test_pair_counts_and_rule_tables_pickle() -> None:
    counts = unpruned()
    for i, basket in enumerate(random_baskets(100, 5)):
        counts.learn(Basket((), basket, T0 + i))
    copy = pickle.loads(pickle.dumps(counts))
    for c in (counts, copy):
        c.learn(Basket(("i1",), ("i2", "i3"), T0 + 1_000))
    assert every_rule(copy) == every_rule(counts)
    table = counts.rules(0.0, 0.0, 0.0)
    table_copy = pickle.loads(pickle.dumps(table))
    assert table_copy.top(EVERYTHING) == table.top(EVERYTHING)
    assert table_copy.baskets == table.baskets


def test_as_json_round_trips() -> None:
    counts = PairCounts(half_life_ms=7 * DAY_MS)
    for i, basket in enumerate(random_baskets(200, 6)):
        counts.learn(Basket((), basket, T0 + i * 3_600_000))
    table = counts.rules(0.01, 0.1, 1.0, top=5)
    data = json.loads(json.dumps(table.as_json(), allow_nan=False))
    assert set(data) == {r.antecedent for r in table.top(EVERYTHING)}
    assert set(data["i0"][0]) == {"antecedent", "consequent", "support", "confidence", "lift"}
    back = RuleTable.from_json(data, table.baskets)
    assert len(back) == len(table)
    for before, after in zip(table.top(EVERYTHING), back.top(EVERYTHING), strict=True):
        assert after._replace(count=before.count) == before
        assert after.count == pytest.approx(before.count, rel=1e-12)


# --- reading -----------------------------------------------------------------------------------


def test_best_first_is_lift_then_confidence_then_name() -> None:
    table = RuleTable(
        [rule("a", "z", 2.0), rule("a", "y", 3.0), rule("a", "x", 2.0, 0.9), rule("a", "w", 2.0)],
        baskets=10.0,
    )
    assert [r.consequent for r in table.of("a")] == ["y", "x", "w", "z"]
    assert table.of("nothing") == ()
    assert len(table) == 4


def test_recommend_skips_held_items_and_keeps_the_best_rule_per_consequent() -> None:
    table = RuleTable(
        [
            rule("a", "b", 5.0),  # b is held: never recommended
            rule("a", "c", 2.0),
            rule("b", "c", 4.0),  # the better rule to c
            rule("b", "d", 3.0),
            rule("e", "f", 9.0),  # e is not held
            rule("a", "g", 1.5),
        ],
        baskets=10.0,
    )
    got = table.recommend(["a", "b", "a"], n=10)
    assert [(r.antecedent, r.consequent) for r in got] == [("b", "c"), ("b", "d"), ("a", "g")]
    assert table.recommend(["a", "b"], n=2) == got[:2]
    assert table.recommend(["zzz"], n=3) == []
    assert table.top(2) == [rule("e", "f", 9.0), rule("a", "b", 5.0)]
