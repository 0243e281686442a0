"""Audiences (`segments.audiences`) and how the engine keeps them: the condition language over text
and sets, the catalog's versions and refusals, enters and leaves published with the user's change
ids, the margin, removal, the sweep's check, and the tallies that count members.
"""

from __future__ import annotations

import msgspec
import numpy as np
import pytest

from features.definitions import UserState
from segments.audiences import (
    AudienceError,
    Audiences,
    Catalog,
    UnknownAudienceError,
    decode,
    encode,
)
from segments.config import DAY_MS, SegmentConfig
from segments.engine import AUDIENCE, SEGMENT, Engine, Scored
from segments.policy import Record, counted_in, dump, load
from segments.scoring import cold_params

pytestmark = pytest.mark.unit

T0 = 1_764_201_600_000
CONFIG = SegmentConfig(label_rate=0.0)
PARAMS = cold_params(CONFIG.features)


def shopper(spend: float, categories: dict[str, int] | None = None) -> UserState:
    return UserState(
        counts=[5, 1, 1, 0, 1, 0],
        orders=1,
        spend=spend,
        sessions=2,
        first_seen=T0 - 10 * DAY_MS,
        last_seen=T0,
        last_purchase=T0,
        categories=categories or {"books": 3, "toys": 1},
    )


def engine_with(*audiences: tuple[str, str]) -> Engine:
    catalog = Catalog()
    for name, condition in audiences:
        catalog = catalog.adding(name, condition)
    engine = Engine(CONFIG)
    engine.set_audiences(catalog)
    return engine


def score(
    engine: Engine, users: dict[str, UserState], now: int = T0, reassign: tuple[str, ...] = ()
) -> Scored:
    names = list(users)
    states = [users[u] for u in names]
    return engine.score(
        PARAMS, names, states, [now] * len(names), [False] * len(names), reassign=reassign
    )


def audience_changes(out: Scored) -> list[tuple[str, str, bool, str]]:
    return [
        (c.user_id, c.payload["audience"], c.payload["entered"], c.payload["reason"])
        for c in out.changes
        if c.kind == AUDIENCE
    ]


# --- the language -----------------------------------------------------------------------------


def test_conditions_read_text_sets_and_the_assignments_numbers() -> None:
    catalog = Catalog().adding("hot", "propensity > 0.5 and 'books' in top_categories")
    catalog = catalog.adding("not_lost", "segment != 'Lost' and 'vip' not in rules", rules=["vip"])
    catalog = catalog.adding("cluster_two", "cluster == 2")
    audiences = Audiences(catalog)
    records = [
        Record(segment="Champions", propensity=0.7, cluster=2),
        Record(segment="Lost", propensity=0.9, rules=["vip"]),
        Record(segment="New", propensity=-1.0),  # no propensity: no comparison holds
    ]
    states = [shopper(10), shopper(10, {"toys": 5}), shopper(10)]
    hits = audiences.evaluate({}, records, states)
    assert hits.tolist() == [[True, True, True], [False, False, False], [False, True, False]]


@pytest.mark.parametrize(
    ("condition", "message"),
    [
        ("segment > 3", "'segment' is not a number"),
        ("segment == 3", "compared with a quoted name only"),
        ("'x' in spend_30d", "'in' needs a set on its right"),
        ("top_categories == 'x'", "'top_categories' is not a number"),
        ("spend_3d > 1", "unknown feature 'spend_3d'"),
        ("propensity > 'high'", "only int and float numbers"),
        ("__import__('os')", "function call is not allowed"),
        ("segment == 'Champion'", "segment is never 'Champion' \\(did you mean 'Champions'\\?\\)"),
        ("rfm == 'champions'", "rfm is never 'champions'"),
        ("propensity_band == 'hgih'", "did you mean 'high'"),
        ("'vipp' in rules", "rules is never 'vipp'"),
        ("books in categories", "as in 'x' in categories"),
        ("spend_total > 100and orders_30d > 1", "syntax error"),
    ],
)
def test_a_bad_condition_is_refused_naming_the_problem(condition: str, message: str) -> None:
    with pytest.raises(AudienceError, match=message) as caught:
        Catalog().adding("bad", condition)
    assert str(caught.value).startswith("audience 'bad':")


# --- the catalog ------------------------------------------------------------------------------


def test_every_change_makes_a_new_version_and_round_trips_as_json() -> None:
    catalog = Catalog().adding("a", "spend_total > 1").adding("b", "orders_total >= 2")
    catalog = catalog.removing("a").adding("a", "spend_total > 5")
    assert catalog.version == 4
    assert [(a.name, a.version) for a in catalog.audiences] == [("b", 2), ("a", 4)]
    assert decode(encode(catalog)) == catalog


def test_the_catalog_refuses_a_duplicate_an_unknown_name_and_a_bad_name() -> None:
    catalog = Catalog().adding("a", "spend_total > 1")
    with pytest.raises(AudienceError, match="exists"):
        catalog.adding("a", "spend_total > 2")
    with pytest.raises(UnknownAudienceError, match="no audience 'z'"):
        catalog.removing("z")
    with pytest.raises(AudienceError, match="bad name"):
        catalog.adding("Big Spenders", "spend_total > 2")
    with pytest.raises(AudienceError, match="longer than 64"):
        catalog.adding("a" * 65, "spend_total > 2")


def test_names_the_settings_know_are_accepted_in_quotes() -> None:
    catalog = Catalog().adding("vips", "'vip' in rules or segment == 'vip'", rules=["vip"])
    catalog = catalog.adding("lost", "rfm == 'Lost' and propensity_band != 'unknown'")
    assert [a.name for a in catalog.audiences] == ["vips", "lost"]
    # Categories are whatever the events bring: any quoted name is taken.
    assert Catalog().adding("x", "'anything at all' in categories").version == 1


# --- the engine -------------------------------------------------------------------------------


def test_entering_audiences_is_published_after_the_segment_change_with_the_next_ids() -> None:
    engine = engine_with(("big", "spend_total > 100"), ("readers", "'books' in top_categories"))
    users = {"u1": shopper(150), "u2": shopper(50, {"toys": 2})}
    out = score(engine, users)
    assert audience_changes(out) == [
        ("u1", "big", True, "first_seen"),
        ("u1", "readers", True, "first_seen"),
    ]
    u1 = [c for c in out.changes if c.user_id == "u1"]
    assert [c.kind for c in u1] == [SEGMENT, AUDIENCE, AUDIENCE]
    assert [c.change_id for c in u1] == ["u1:0:1", "u1:0:2", "u1:0:3"]
    assert u1[1].payload["audience_version"] == 1
    assert u1[2].payload["audience_version"] == 2
    assert load(users["u1"].segment).audiences == ["big", "readers"]
    assert load(users["u1"].segment).seq == 3
    assert ("audience:big", 1) in out.tallies["u1"]
    assert load(users["u2"].segment).audiences == []


def test_a_member_leaves_only_past_the_margin_and_the_leave_is_published() -> None:
    engine = engine_with(("big", "spend_total > 100"))
    user = shopper(150)
    score(engine, {"u": user})
    user.spend = 95.0  # fails, but holds with the value nudged up by 10%: still a member
    assert audience_changes(score(engine, {"u": user}, T0 + 1)) == []
    user.spend = 80.0
    out = score(engine, {"u": user}, T0 + 2)
    assert audience_changes(out) == [("u", "big", False, "activity")]
    assert out.tallies["u"] == [("audience:big", -1)]
    assert load(user.segment).audiences == []


def test_a_removed_audience_is_left_with_reason_removed() -> None:
    catalog = Catalog().adding("big", "spend_total > 100")
    engine = Engine(CONFIG)
    engine.set_audiences(catalog)
    user = shopper(150)
    score(engine, {"u": user})
    engine.set_audiences(catalog.removing("big"))
    out = score(engine, {"u": user}, T0 + 1, reassign=("u",))
    assert audience_changes(out) == [("u", "big", False, "removed")]
    assert out.changes[0].payload["audience_version"] == 2


def test_a_swept_user_gets_its_audiences_with_reason_backfill_and_nothing_else() -> None:
    engine = Engine(CONFIG)
    user = shopper(150)
    score(engine, {"u": user})
    before = load(user.segment)
    engine.set_audiences(Catalog().adding("big", "spend_total > 100"))
    assert engine.moving(PARAMS, ["u"], [user], [T0 + 1]) == ["u"]
    out = score(engine, {"u": user}, T0 + 1, reassign=("u",))
    assert audience_changes(out) == [("u", "big", True, "backfill")]
    after = load(user.segment)
    assert (after.segment, after.band, after.scored) == (before.segment, before.band, before.scored)
    assert engine.moving(PARAMS, ["u"], [user], [T0 + 1]) == []  # nothing left to do


def test_members_is_what_scoring_would_decide() -> None:
    engine = engine_with(("big", "spend_total > 100"), ("readers", "'books' in top_categories"))
    users = [shopper(150), shopper(50), shopper(150, {"toys": 1})]
    predicted = engine.members(users, [T0] * 3)
    score(engine, {f"u{i}": s for i, s in enumerate(users)})
    assert predicted == [load(s.segment).audiences for s in users]
    assert predicted == [["big", "readers"], ["readers"], ["big"]]


def test_an_erased_member_is_uncounted_from_its_audiences() -> None:
    record = Record(segment="New", cluster=-1, audiences=["big", "readers"])
    assert counted_in(record) == [("segment:New", 1), ("audience:big", 1), ("audience:readers", 1)]


def test_conditions_of_constants_only_still_evaluate_per_user() -> None:
    audiences = Audiences(Catalog().adding("everyone", "1 > 0"))
    hits = audiences.evaluate({}, [Record(), Record()], [shopper(1), shopper(2)])
    assert hits.shape == (2, 1)
    assert np.all(hits)


def test_a_record_stored_before_audiences_loads_with_none() -> None:
    fields = msgspec.msgpack.decode(dump(Record(seq=2, segment="New")))
    old = msgspec.msgpack.encode(fields[:-1])  # the record without its last field
    assert load(old) == Record(seq=2, segment="New")
