"""The analytics beside the segments, without servers: the parent groups and their stable ids,
dense regions and outliers, the spend regressor, and what the engine does with them (baskets
counted once, cross-sell actions, spend labels, campaign offers and conversions)."""

from __future__ import annotations

from dataclasses import replace

import msgspec
import numpy as np
import pytest

from features.definitions import DEFAULT_WINDOWS, Rules, UserState, apply_event
from features.events import Event
from segments.config import DAY_MS, SegmentConfig
from segments.crosssell import Basket, Rule, RuleTable
from segments.density import summarise
from segments.engine import CONVERSIONS, OFFERS, Engine, Scored
from segments.hierarchy import Parents
from segments.policy import load
from segments.scoring import Params, cold_params
from segments.spend import MIN_LABELS, SpendModel, candidates

pytestmark = pytest.mark.unit

T0 = 1_764_201_600_000
LABEL = "centre"


# -- parent groups ---------------------------------------------------------------------------


def corners(shift: float = 0.0) -> np.ndarray:
    """Six centres in three well-apart pairs."""
    pairs = [(0.0, 0.0), (10.0, 0.0), (0.0, 10.0)]
    return np.array([[x + d + shift, y] for x, y in pairs for d in (0.0, 0.5)])


def test_the_tree_groups_near_centres_under_one_parent() -> None:
    tree = Parents(3).build([0, 1, 2, 3, 4, 5], corners(), lambda _: LABEL)
    assert tree.parent(0) == tree.parent(1) != tree.parent(2) == tree.parent(3)
    assert tree.parent(4) == tree.parent(5) not in {tree.parent(0), tree.parent(2)}
    assert len(tree.labels) == 3 and tree.parent(99) == -1
    assert tree.linkage.shape == (5, 4) and tree.leaves == (0, 1, 2, 3, 4, 5)


def test_parent_ids_stay_with_their_clusters_across_versions() -> None:
    parents = Parents(3)
    first = parents.build([0, 1, 2, 3, 4, 5], corners(), lambda _: LABEL)
    # The next version lists its centres in another order and a little moved.
    order = [4, 2, 0, 5, 3, 1]
    second = parents.build(order, corners(0.3)[order], lambda _: LABEL)
    assert all(second.parent(c) == first.parent(c) for c in range(6))
    # Clusters 0 and 1 join 2 and 3, and 5 leaves 4: a group keeps the id of the one it
    # shares the most clusters with, and the group left over gets an id never given before.
    moved = corners()
    moved[[0, 1]] = moved[[2, 3]] + 0.1
    moved[5] = [40.0, 40.0]
    third = parents.build([0, 1, 2, 3, 4, 5], moved, lambda _: LABEL)
    assert third.parent(0) == third.parent(2) in {first.parent(0), first.parent(2)}
    assert third.parent(4) == first.parent(4)
    assert third.parent(5) not in {first.parent(c) for c in range(6)}
    assert len(parents.issued) == 4  # one new id, none given twice


def test_fewer_than_two_clusters_make_no_tree() -> None:
    assert Parents(3).build([0], np.zeros((1, 2)), lambda _: LABEL).parent_of == {}


# -- dense regions and outliers ----------------------------------------------------------------

NAMES = ("views_per_session", "price_level", "mean_rating")


def test_users_far_from_every_dense_region_are_outliers() -> None:
    rng = np.random.default_rng(1)
    blobs = np.vstack([rng.normal(c, 0.3, size=(2_000, 3)) for c in (0.0, 5.0, -5.0)])
    density = summarise(blobs, np.ones(3), NAMES, 0.98)
    assert density.ready
    inside = density.is_outlier(blobs).mean()
    assert 0.0 < inside < 0.05, inside  # about the 2% past each region's edge
    far = np.array([[20.0, 20.0, 20.0], [2.5, 2.5, 2.5], [-30.0, 0.0, 0.0]])
    assert density.is_outlier(far).all()
    assert not density.is_outlier(np.zeros((1, 3))).any()


def test_the_clock_makes_nobody_an_outlier() -> None:
    """Every user's tenure moves with event time: a user newer than any the version saw (or
    the whole population, days later) behaves as usual and is not an outlier."""
    rng = np.random.default_rng(3)
    raw = np.column_stack([rng.normal(0.0, 1.0, (3_000, 2)), rng.normal(3.4, 0.05, 3_000)])
    mean, scale = raw.mean(axis=0), raw.std(axis=0)
    density = summarise((raw - mean) / scale, scale, [*NAMES[:2], "tenure_days"], 0.98)
    days_later = raw + np.array([0.0, 0.0, 0.3])
    assert density.is_outlier((days_later - mean) / scale).mean() < 0.05
    newcomer = np.array([[0.0, 0.0, 0.0]])  # log1p of a tenure of 0 days
    assert not density.is_outlier((newcomer - mean) / scale).any()
    odd = np.array([[6.0, -6.0, 3.4]])
    assert density.is_outlier((odd - mean) / scale).all()


def test_a_feature_almost_nobody_differs_on_does_not_make_outliers_alone() -> None:
    """While few have reviewed, the mean rating has a tiny spread: a rating a little off is
    judged at the least spread, not at that one (12 features, as many as the defaults)."""
    rng = np.random.default_rng(4)
    raw = np.column_stack([rng.normal(0.0, 1.0, (3_000, 11)), rng.normal(0.0, 0.02, 3_000)])
    mean, scale = raw.mean(axis=0), raw.std(axis=0)
    names = [*(f"rate_{i}" for i in range(11)), "mean_rating"]
    density = summarise((raw - mean) / scale, scale, names, 0.98)
    rated = raw.copy()
    rated[:, -1] += 0.1  # five of its standard deviations, under MIN_SCALE
    assert density.is_outlier((rated - mean) / scale).mean() < 0.05
    rated[:, -1] += 2.0
    assert density.is_outlier((rated - mean) / scale).all()


def test_no_outliers_before_there_is_a_population() -> None:
    density = summarise(np.zeros((3, 2)), np.ones(2), NAMES[:2], 0.98)
    assert not density.ready
    assert not density.is_outlier(np.ones((4, 2)) * 100).any()


# -- the spend regressor -----------------------------------------------------------------------


def test_the_regressor_learns_a_blend_of_its_candidates() -> None:
    rng = np.random.default_rng(2)
    model = SpendModel()
    assert not model.params().ready
    rows = rng.gamma(2.0, 50.0, size=(4_000, 4))
    for row in rows:
        model.learn(row.tolist(), 0.5 * row[0] + 0.5 * row[2])
    params = model.params()
    assert params.ready and model.learned == 4_000
    predicted = params.predict(rows[-500:])
    truth = 0.5 * rows[-500:, 0] + 0.5 * rows[-500:, 2]
    assert np.abs(predicted - truth).mean() < 0.25 * truth.mean()


@pytest.mark.parametrize("spent", [float("nan"), float("inf"), -1.0])
def test_a_bad_label_is_refused(spent: float) -> None:
    model = SpendModel()
    assert not model.learn([1.0, 2.0, 3.0, 4.0], spent)
    assert not model.learn([1.0, float("nan"), 3.0, 4.0], 10.0)
    assert not model.learn([1.0, 2.0], 10.0)
    assert model.learned == 0


def test_predictions_are_bounded_and_none_before_enough_labels() -> None:
    model = SpendModel()
    for _ in range(MIN_LABELS - 1):
        model.learn([10.0, 10.0, 10.0, 10.0], 10.0)
    assert np.isnan(model.params().predict(np.ones((2, 4)))).all()
    model.learn([10.0, 10.0, 10.0, 10.0], 10.0)
    huge = model.params().predict(np.full((1, 4), 1e300))
    assert np.isfinite(huge).all() and (huge >= 0).all()


def test_the_candidates_start_with_the_naive_prediction() -> None:
    # monetary, tenure, days since last seen, spend over the longest window (30 days)
    values = np.array([[600.0, 60.0, 0.0, 120.0], [600.0, 60.0, 7.0, 0.0]])
    found = candidates(values, DEFAULT_WINDOWS, 30 * DAY_MS)
    assert found[0].tolist() == pytest.approx([120.0, 300.0, 300.0, 300.0])
    assert found[1, 0] == 0.0 and found[1, 2] == pytest.approx(300.0 / np.e)


# -- the engine ----------------------------------------------------------------------------


def event(kind: str, ts: int, product: str, *, session: str = "s1", price: float = 10.0) -> Event:
    return Event(
        event_id=f"{kind}-{ts}-{product}",
        user_id="u",
        type=kind,
        ts=ts,
        ts_ms=ts,
        session_id=session,
        product_id=product,
        category="books",
        price=price,
        quantity=1,
        order_id=f"o-{session}" if kind == "purchase" else None,
    )


def folded(*events: Event) -> UserState:
    state = UserState()
    for one in events:
        apply_event(state, one, Rules().windows)
    return state


def score(engine: Engine, state: UserState, now: int, params: Params | None = None) -> Scored:
    params = params or cold_params(engine.config.features)
    return engine.score(params, ["u"], [state], [now], [False])


def test_the_fold_keeps_one_basket_a_session_and_the_recent_products() -> None:
    state = folded(
        event("add_to_cart", T0, "a"),
        event("view", T0 + 1, "x"),
        event("add_to_cart", T0 + 2, "b"),
        event("purchase", T0 + 3, "a"),
    )
    assert (state.basket, state.basket_categories, state.recent) == (
        ["a", "b"],
        ["books"],
        ["b", "a"],
    )
    state.basket_counted = (2, 1)
    apply_event(state, event("add_to_cart", T0 + DAY_MS, "c", session="s2"), DEFAULT_WINDOWS)
    assert (state.basket, state.basket_counted, state.recent) == (["c"], (0, 0), ["b", "a", "c"])


def test_a_basket_is_counted_once_however_its_items_arrive() -> None:
    engine = Engine(SegmentConfig())
    state = folded(event("add_to_cart", T0, "a"), event("add_to_cart", T0 + 1, "b"))
    first = score(engine, state, T0 + 1).baskets
    assert first == [Basket((), ("a", "b"), T0 + 1), Basket((), ("category:books",), T0 + 1)]
    assert score(engine, state, T0 + 2).baskets == []  # nothing new
    apply_event(state, event("purchase", T0 + 3, "c"), DEFAULT_WINDOWS)
    assert score(engine, state, T0 + 3).baskets == [Basket(("a", "b"), ("c",), T0 + 3)]


def test_cross_sell_actions_name_the_users_recommendations() -> None:
    config = SegmentConfig(playbook={"New": ("cross_sell", "welcome")}, recommendations=2)
    engine = Engine(config)
    rules = RuleTable(
        [Rule("a", "z", 0.1, 0.5, 9.0, 10.0), Rule("a", "b", 0.1, 0.5, 8.0, 10.0)], 100.0
    )
    params = replace(cold_params(config.features), rules=rules)
    state = folded(event("add_to_cart", T0, "a"))
    [change] = score(engine, state, T0, params).changes
    assert change.payload["actions"] == ["cross_sell:z", "cross_sell:b", "welcome"]
    assert change.payload["current"]["recommendations"] == ["z", "b"]
    assert load(state.segment).recommendations == ["z", "b"]
    # Without a rule, the placeholder stays as it is.
    other = folded(event("add_to_cart", T0, "q"))
    [change] = score(engine, other, T0, params).changes
    assert change.payload["actions"] == ["cross_sell", "welcome"]


def test_an_offer_converts_once_on_a_purchase_within_the_horizon() -> None:
    config = SegmentConfig(playbook={"New": ("welcome",)}, label_rate=0.0)
    engine = Engine(config)
    state = folded(event("view", T0, "a"))
    out = score(engine, state, T0)
    assert out.tallies["u"] == [("segment:New", 1), (f"{OFFERS}New|welcome", 1)]
    record = load(state.segment)
    assert (record.offer_ts, record.offer) == (T0, ["New"])
    apply_event(state, event("purchase", T0 + DAY_MS, "a"), DEFAULT_WINDOWS)
    out = score(engine, state, T0 + DAY_MS)
    assert (f"{CONVERSIONS}New|welcome", 1) in out.tallies["u"]
    apply_event(state, event("purchase", T0 + 2 * DAY_MS, "b", session="s2"), DEFAULT_WINDOWS)
    later = score(engine, state, T0 + 2 * DAY_MS).tallies.get("u", [])
    assert not [t for t in later if t[0].startswith(CONVERSIONS)]


def test_an_offer_without_a_purchase_closes_at_the_horizon() -> None:
    config = SegmentConfig(playbook={"New": ("welcome",)}, label_rate=0.0)
    engine = Engine(config)
    state = folded(event("view", T0, "a"))
    score(engine, state, T0)
    end = T0 + config.horizon_ms
    score(engine, state, end + 1)
    assert load(state.segment).offer == []
    apply_event(state, event("purchase", end + 2, "a"), DEFAULT_WINDOWS)
    tallies = score(engine, state, end + 2).tallies.get("u", [])
    assert not [t for t in tallies if t[0].startswith(CONVERSIONS)]


def test_a_spend_label_is_what_the_user_spent_inside_the_horizon() -> None:
    config = SegmentConfig()
    engine = Engine(config)
    state = folded(event("purchase", T0, "a", price=20.0))
    score(engine, state, T0)
    record = load(state.segment)
    assert (record.spend_ts, record.spend_from) == (T0, 20.0)
    *inputs, given = np.frombuffer(record.spend_x, dtype=np.float32).tolist()
    assert len(inputs) == 4 and given == -1.0  # no prediction yet
    apply_event(
        state, event("purchase", T0 + DAY_MS, "b", session="s2", price=30.0), DEFAULT_WINDOWS
    )
    score(engine, state, T0 + DAY_MS)
    end = T0 + config.spend_horizon_ms
    late = event("purchase", end + DAY_MS, "c", session="s3", price=1000.0)
    apply_event(state, late, DEFAULT_WINDOWS)
    [label] = score(engine, state, end + DAY_MS).spend_labels
    assert (label.spent, label.predicted, label.checked) == (30.0, -1.0, -1.0)
    assert label.baseline == pytest.approx(20.0)  # the naive prediction at the snapshot
    assert len(label.inputs) == 4
    assert load(state.segment).spend_ts == end + DAY_MS  # a fresh snapshot


def test_records_of_older_versions_load_with_the_new_fields_empty() -> None:
    old = msgspec.msgpack.encode(list(msgspec.msgpack.decode(b"\x90")))  # an empty array
    record = load(old)
    assert (record.parent, record.outlier, record.spend, record.offer) == (-1, False, -1.0, [])


def test_a_purchase_inside_the_horizon_converts_though_a_later_one_in_the_moment_is_past_it() -> (
    None
):
    config = SegmentConfig(playbook={"New": ("welcome",)}, label_rate=0.0)
    engine = Engine(config)
    state = folded(event("view", T0, "a"))
    score(engine, state, T0)
    end = T0 + config.horizon_ms
    apply_event(state, event("purchase", end - 1, "a", session="s2"), DEFAULT_WINDOWS)
    apply_event(state, event("purchase", end + 1, "b", session="s3"), DEFAULT_WINDOWS)
    tallies = score(engine, state, end + 2).tallies.get("u", [])
    assert (f"{CONVERSIONS}New|welcome", 1) in tallies
