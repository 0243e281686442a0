"""Unit tests for the synthetic event generator (stream.tools.generate)."""

from __future__ import annotations

import csv
import gzip
import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, replace
from itertools import pairwise
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream.tools import generate as generate_module
from stream.tools.generate import (
    CATEGORIES,
    DEFAULT_PERSONA_WEIGHTS,
    DEFAULT_START_MS,
    EVENT_TYPES,
    PERSONAS,
    PLANTED_RULES,
    GenerateSummary,
    generate,
)

pytestmark = pytest.mark.unit

DAY_MS = 86_400_000
Events = list[dict[str, Any]]
Metric = Callable[[Events], float]
COMMON_KEYS = {"event_id", "user_id", "type", "ts", "session_id", "schema_version"}
KEYS_BY_TYPE = {
    "view": COMMON_KEYS | {"product_id", "category", "price"},
    "search": COMMON_KEYS | {"query"},
    "add_to_cart": COMMON_KEYS | {"product_id", "category", "price", "quantity"},
    "remove_from_cart": COMMON_KEYS | {"product_id", "category", "price", "quantity"},
    "purchase": COMMON_KEYS | {"product_id", "category", "price", "quantity", "order_id"},
    "review": COMMON_KEYS | {"product_id", "category", "rating"},
}
REQUIRED_PERSONAS = {
    "new_visitor",
    "window_shopper",
    "bargain_hunter",
    "cart_abandoner",
    "loyal_regular",
    "high_value_vip",
    "lapsing_customer",
}


@dataclass(frozen=True)
class Dataset:
    summary: GenerateSummary
    raw: bytes
    events: Events
    personas: dict[str, str]  # user_id -> persona
    users: dict[str, Events]  # user_id -> that user's events in file order
    csv_rows: list[list[str]]
    start_ms: int
    end_ms: int


def run(tmp: Path, name: str, users: int, days: float, seed: int, **kw: Any) -> GenerateSummary:
    return generate(users, days, seed, tmp / name, tmp / f"{name}.personas.csv", **kw)


def read_csv(path: str) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.reader(fh))


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    """2000 users over 30 days: big enough for stable per-persona aggregates."""
    tmp = tmp_path_factory.mktemp("gen")
    summary = run(tmp, "events.jsonl", users=2000, days=30, seed=42)
    raw = Path(summary.out).read_bytes()
    rows = read_csv(summary.personas_path)
    events = [orjson.loads(line) for line in raw.splitlines()]
    users: dict[str, Events] = defaultdict(list)
    for e in events:
        users[e["user_id"]].append(e)
    return Dataset(
        summary=summary,
        raw=raw,
        events=events,
        personas=dict((row[0], row[1]) for row in rows[1:]),
        users=dict(users),
        csv_rows=rows,
        start_ms=DEFAULT_START_MS,
        end_ms=DEFAULT_START_MS + 30 * DAY_MS,
    )


def persona_mean(ds: Dataset, persona: str, metric: Metric) -> float:
    """Mean of metric(user_events) over the users of one persona."""
    return statistics.fmean(metric(ds.users[u]) for u, p in ds.personas.items() if p == persona)


def spend(events: Events) -> float:
    return float(sum(e["price"] * e["quantity"] for e in events if e["type"] == "purchase"))


def count(etype: str) -> Metric:
    return lambda events: sum(1 for e in events if e["type"] == etype)


# --- determinism ------------------------------------------------------------


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path: Path) -> None:
    a = run(tmp_path, "a.jsonl", users=300, days=10, seed=5)
    b = run(tmp_path, "b.jsonl", users=300, days=10, seed=5)
    c = run(tmp_path, "c.jsonl", users=300, days=10, seed=6)
    assert Path(a.out).read_bytes() == Path(b.out).read_bytes()
    assert Path(a.personas_path).read_bytes() == Path(b.personas_path).read_bytes()
    assert Path(a.out).read_bytes() != Path(c.out).read_bytes()


def test_output_does_not_depend_on_chunk_size(tmp_path: Path) -> None:
    # One user per chunk gives 500 runs, more than the merge opens at once, so
    # the multi-pass merge is exercised as well.
    small = run(tmp_path, "small.jsonl", users=500, days=7, seed=3, chunk_users=7)
    default = run(tmp_path, "default.jsonl", users=500, days=7, seed=3)
    single = run(tmp_path, "single.jsonl", users=500, days=7, seed=3, chunk_users=1)
    expected = Path(default.out).read_bytes()
    assert Path(small.out).read_bytes() == expected
    assert Path(single.out).read_bytes() == expected
    assert small == replace(default, out=small.out, personas_path=small.personas_path)


def test_temporary_run_files_are_removed(tmp_path: Path) -> None:
    run(tmp_path, "e.jsonl", users=50, days=3, seed=1, chunk_users=5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.jsonl", "e.jsonl.personas.csv"]


# --- event contract ---------------------------------------------------------


def test_every_event_has_exactly_the_keys_of_its_type(dataset: Dataset) -> None:
    for e in dataset.events:
        assert e["type"] in EVENT_TYPES
        assert set(e) == KEYS_BY_TYPE[e["type"]], e


def test_field_types_and_value_ranges(dataset: Dataset) -> None:
    for e in dataset.events:
        for key in ("event_id", "user_id", "session_id", "product_id", "category", "query"):
            if key in e:
                assert isinstance(e[key], str)
                assert e[key]
        assert type(e["ts"]) is int
        assert e["schema_version"] == 1
        if "price" in e:
            assert isinstance(e["price"], float)
            assert e["price"] >= 0
            assert round(e["price"], 2) == e["price"]
        if "quantity" in e:
            assert type(e["quantity"]) is int
            assert e["quantity"] >= 1
        if "rating" in e:
            assert type(e["rating"]) is int
            assert 1 <= e["rating"] <= 5
        if "category" in e:
            assert e["category"] in CATEGORIES


def test_event_ids_unique_and_times_in_range_and_sorted(dataset: Dataset) -> None:
    ids = [e["event_id"] for e in dataset.events]
    assert len(set(ids)) == len(ids)
    ts = [e["ts"] for e in dataset.events]
    assert all(dataset.start_ms <= t < dataset.end_ms for t in ts)
    assert all(a <= b for a, b in pairwise(ts))


def test_personas_never_leak_into_events(dataset: Dataset) -> None:
    assert b"persona" not in dataset.raw
    for name in PERSONAS:
        assert name.encode() not in dataset.raw


def test_sessions_are_bursts_separated_by_quiet_gaps(dataset: Dataset) -> None:
    owner: dict[str, str] = {}
    for user_events in dataset.users.values():
        for prev, cur in pairwise(user_events):
            gap = cur["ts"] - prev["ts"]
            if cur["session_id"] == prev["session_id"]:
                assert gap <= 15 * 60_000
            else:
                assert gap >= 30 * 60_000
        for e in user_events:
            assert owner.setdefault(e["session_id"], e["user_id"]) == e["user_id"]
    sessions_per_user = len(owner) / len(dataset.personas)
    assert 3 < sessions_per_user < 20


def test_order_lines_share_order_and_time_and_order_ids_are_unique(dataset: Dataset) -> None:
    orders: dict[str, set[tuple[str, int, str]]] = defaultdict(set)
    products: dict[str, list[str]] = defaultdict(list)
    for e in dataset.events:
        if e["type"] == "purchase":
            orders[e["order_id"]].add((e["user_id"], e["ts"], e["session_id"]))
            products[e["order_id"]].append(e["product_id"])
    assert orders
    assert all(len(keys) == 1 for keys in orders.values())
    assert all(len(set(lines)) == len(lines) for lines in products.values())
    assert max(len(lines) for lines in products.values()) > 1


def test_reviews_follow_purchases_of_the_same_product(dataset: Dataset) -> None:
    for user_events in dataset.users.values():
        bought: dict[str, int] = {}
        reviewed: set[str] = set()
        for e in user_events:
            if e["type"] == "purchase":
                bought.setdefault(e["product_id"], e["ts"])
            elif e["type"] == "review":
                assert bought.get(e["product_id"], math.inf) < e["ts"]
                assert e["product_id"] not in reviewed
                reviewed.add(e["product_id"])
    assert any(e["type"] == "review" for e in dataset.events)


def test_each_product_has_one_category_and_price(dataset: Dataset) -> None:
    seen: dict[str, tuple[str, float]] = {}
    for e in dataset.events:
        if "price" in e:
            assert seen.setdefault(e["product_id"], (e["category"], e["price"])) == (
                e["category"],
                e["price"],
            )


# --- persona file and summary ----------------------------------------------


def test_personas_csv_has_one_row_per_user(dataset: Dataset) -> None:
    assert dataset.csv_rows[0] == ["user_id", "persona"]
    ids = [row[0] for row in dataset.csv_rows[1:]]
    assert len(ids) == len(set(ids)) == 2000
    assert set(dataset.personas.values()) <= set(PERSONAS)
    assert {e["user_id"] for e in dataset.events} == set(ids)


def test_summary_matches_files(dataset: Dataset) -> None:
    s = dataset.summary
    assert s.users == 2000
    assert s.events == len(dataset.events)
    assert s.first_ts_ms == dataset.events[0]["ts"]
    assert s.last_ts_ms == dataset.events[-1]["ts"]
    from_csv = Counter(dataset.personas.values())
    assert s.personas == {p: from_csv[p] for p in PERSONAS}
    assert sum(s.personas.values()) == 2000


def test_personas_cover_required_set_and_default_mix(dataset: Dataset) -> None:
    assert set(PERSONAS) >= REQUIRED_PERSONAS
    assert set(DEFAULT_PERSONA_WEIGHTS) >= REQUIRED_PERSONAS
    counts = dataset.summary.personas
    for persona, weight in DEFAULT_PERSONA_WEIGHTS.items():
        assert abs(counts[persona] / 2000 - weight) < 0.04, persona


def test_average_events_per_user_is_realistic(dataset: Dataset) -> None:
    assert 20 <= dataset.summary.events / dataset.summary.users <= 60


# --- persona separation -----------------------------------------------------


def test_vip_spends_far_more_than_loyal(dataset: Dataset) -> None:
    vip = persona_mean(dataset, "high_value_vip", spend)
    loyal = persona_mean(dataset, "loyal_regular", spend)
    assert vip > 3 * loyal > 0


def test_loyal_buys_much_more_than_window_shoppers(dataset: Dataset) -> None:
    loyal = persona_mean(dataset, "loyal_regular", count("purchase"))
    window = persona_mean(dataset, "window_shopper", count("purchase"))
    assert loyal > 5 * window
    assert persona_mean(dataset, "window_shopper", count("view")) > 10


def test_cart_abandoners_add_much_more_than_they_buy(dataset: Dataset) -> None:
    def carts_per_purchase(persona: str) -> float:
        adds = persona_mean(dataset, persona, count("add_to_cart"))
        return adds / max(persona_mean(dataset, persona, count("purchase")), 1e-9)

    assert carts_per_purchase("cart_abandoner") > 10
    assert carts_per_purchase("cart_abandoner") > 4 * carts_per_purchase("loyal_regular")
    assert persona_mean(dataset, "cart_abandoner", count("remove_from_cart")) > persona_mean(
        dataset, "loyal_regular", count("remove_from_cart")
    )


def test_bargain_hunters_view_cheap_items_and_search_for_deals(dataset: Dataset) -> None:
    def mean_view_price(events: Events) -> float:
        prices = [e["price"] for e in events if e["type"] == "view"]
        return statistics.fmean(prices) if prices else 0.0

    bargain = persona_mean(dataset, "bargain_hunter", mean_view_price)
    assert bargain < 0.5 * persona_mean(dataset, "loyal_regular", mean_view_price)
    assert bargain < 0.2 * persona_mean(dataset, "high_value_vip", mean_view_price)
    queries = [
        e["query"]
        for e in dataset.events
        if e["type"] == "search" and dataset.personas[e["user_id"]] == "bargain_hunter"
    ]
    deals = sum(any(w in q for w in ("sale", "discount", "deal", "cheap")) for q in queries)
    assert deals > 0.4 * len(queries)


def test_lapsing_customers_go_quiet_early(dataset: Dataset) -> None:
    span = dataset.end_ms - dataset.start_ms

    def last_ts(events: Events) -> float:
        return float(events[-1]["ts"])

    lapsing = persona_mean(dataset, "lapsing_customer", last_ts)
    loyal = persona_mean(dataset, "loyal_regular", last_ts)
    assert lapsing < loyal - 0.25 * span
    for user, persona in dataset.personas.items():
        if persona == "lapsing_customer":
            assert dataset.users[user][-1]["ts"] < dataset.start_ms + 0.7 * span
    assert persona_mean(dataset, "lapsing_customer", count("purchase")) > 1


def test_new_visitors_appear_late_and_rarely_buy(dataset: Dataset) -> None:
    def first_ts(events: Events) -> float:
        return float(events[0]["ts"])

    span = dataset.end_ms - dataset.start_ms
    new = persona_mean(dataset, "new_visitor", first_ts)
    for other in PERSONAS:
        if other != "new_visitor":
            assert new > persona_mean(dataset, other, first_ts) + 0.4 * span, other
    assert persona_mean(dataset, "new_visitor", len) < 15
    assert persona_mean(dataset, "new_visitor", count("purchase")) < 0.2


def test_vip_is_the_most_active_persona(dataset: Dataset) -> None:
    vip = persona_mean(dataset, "high_value_vip", len)
    assert all(vip > persona_mean(dataset, p, len) for p in PERSONAS if p != "high_value_vip")


# --- planted cross-sell rules ------------------------------------------------


def session_items(events: Events) -> dict[tuple[str, str], set[str]]:
    """(user, session) -> products carted or bought in it."""
    baskets: dict[tuple[str, str], set[str]] = defaultdict(set)
    for e in events:
        if e["type"] in ("add_to_cart", "purchase"):
            baskets[e["user_id"], e["session_id"]].add(e["product_id"])
    return baskets


def read_events(summary: GenerateSummary) -> Events:
    return [orjson.loads(line) for line in Path(summary.out).read_bytes().splitlines()]


def test_planted_rules_hold_with_their_confidence_and_a_high_lift(tmp_path: Path) -> None:
    baskets = list(session_items(read_events(run(tmp_path, "e.jsonl", 5000, 30, seed=1))).values())
    for rule in PLANTED_RULES:
        with_a = [b for b in baskets if rule.antecedent in b]
        assert len(with_a) >= 100, rule
        confidence = sum(rule.consequent in b for b in with_a) / len(with_a)
        # 3.5 binomial standard errors: measured, not planted, so it scatters around the setting.
        tolerance = 3.5 * math.sqrt(rule.confidence * (1 - rule.confidence) / len(with_a))
        assert abs(confidence - rule.confidence) <= tolerance, (rule, confidence)
        consequent_share = sum(rule.consequent in b for b in baskets) / len(baskets)
        assert confidence / consequent_share >= 3, rule


def extra_lines(plain: Events, planted: Events) -> Events:
    """The events of ``planted`` left over once ``plain`` is matched in order, per user.

    Compared on everything but the event id (it carries a per-user sequence) and the quantity
    (a planted line merges into an order line of the same product).
    """

    def key(e: dict[str, Any]) -> tuple[Any, ...]:
        return tuple(
            e.get(k)
            for k in (
                "user_id",
                "ts",
                "type",
                "product_id",
                "session_id",
                "order_id",
                "query",
                "rating",
                "price",
            )
        )

    def by_user(events: Events) -> dict[str, Events]:
        users: dict[str, Events] = defaultdict(list)
        for e in events:
            users[e["user_id"]].append(e)
        return users

    plain_users, planted_users = by_user(plain), by_user(planted)
    assert plain_users.keys() == planted_users.keys()
    extras: Events = []
    for user, expected in plain_users.items():
        i = 0
        for e in planted_users[user]:
            if i < len(expected) and key(e) == key(expected[i]):
                i += 1
            else:
                extras.append(e)
        assert i == len(expected), user
    return extras


def test_planting_adds_cart_and_order_lines_and_changes_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_rules = run(tmp_path, "planted.jsonl", users=1500, days=20, seed=3)
    monkeypatch.setattr(generate_module, "_CROSS_SELL", {})
    without = run(tmp_path, "plain.jsonl", users=1500, days=20, seed=3)
    assert Path(with_rules.personas_path).read_bytes() == Path(without.personas_path).read_bytes()
    extras = extra_lines(read_events(without), read_events(with_rules))
    consequents = {r.consequent for r in PLANTED_RULES}
    assert {e["type"] for e in extras} == {"add_to_cart", "purchase"}
    assert all(e["product_id"] in consequents for e in extras)


# --- options and validation -------------------------------------------------


def test_gzip_output_holds_the_same_events(tmp_path: Path) -> None:
    plain = run(tmp_path, "e.jsonl", users=100, days=5, seed=9)
    gz = run(tmp_path, "e.jsonl.gz", users=100, days=5, seed=9)
    again = run(tmp_path, "again.jsonl.gz", users=100, days=5, seed=9)
    compressed = Path(gz.out).read_bytes()
    assert compressed[:2] == b"\x1f\x8b"
    assert gzip.decompress(compressed) == Path(plain.out).read_bytes()
    assert Path(again.out).read_bytes() == compressed


def test_start_ms_and_fractional_days(tmp_path: Path) -> None:
    start = 1_700_000_000_123
    s = run(tmp_path, "e.jsonl", users=200, days=0.5, seed=2, start_ms=start)
    ts = [orjson.loads(line)["ts"] for line in Path(s.out).read_bytes().splitlines()]
    assert len(ts) == s.events >= 200
    assert start <= s.first_ts_ms == min(ts)
    assert s.last_ts_ms == max(ts) < start + DAY_MS // 2


def test_default_start_is_fixed_not_wall_clock(dataset: Dataset) -> None:
    assert DEFAULT_START_MS == 1_767_225_600_000  # 2026-01-01T00:00:00Z
    assert dataset.summary.first_ts_ms < DEFAULT_START_MS + DAY_MS


def test_progress_reports_increasing_counts_ending_at_total(tmp_path: Path) -> None:
    seen: list[int] = []
    s = run(tmp_path, "e.jsonl", users=2000, days=10, seed=4, progress=seen.append)
    assert len(seen) > 1
    assert seen == sorted(seen)
    assert seen[-1] == s.events


def test_persona_weights_override_the_mix(tmp_path: Path) -> None:
    s = run(tmp_path, "e.jsonl", users=50, days=3, seed=1, persona_weights={"high_value_vip": 1})
    assert s.personas["high_value_vip"] == 50
    with pytest.raises(ValueError, match="persona_weights"):
        run(tmp_path, "x.jsonl", users=5, days=1, seed=1, persona_weights={"nobody": 1.0})


@pytest.mark.parametrize(
    ("kwargs", "argument"),
    [
        ({"users": 0}, "users"),
        ({"users": -3}, "users"),
        ({"days": 0}, "days"),
        ({"days": -1.0}, "days"),
        ({"days": math.nan}, "days"),
        ({"days": math.inf}, "days"),
        ({"chunk_users": 0}, "chunk_users"),
        ({"start_ms": -1}, "start_ms"),
    ],
)
def test_invalid_arguments_raise_value_error(
    tmp_path: Path, kwargs: dict[str, Any], argument: str
) -> None:
    args: dict[str, Any] = {"users": 10, "days": 1.0, "seed": 1} | kwargs
    with pytest.raises(ValueError, match=argument):
        run(tmp_path, "e.jsonl", **args)
    assert not (tmp_path / "e.jsonl").exists()
