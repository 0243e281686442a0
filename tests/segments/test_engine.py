"""The scoring engine (`segments.engine.Engine`) over `UserState`s: first assignments and the change
payload, idempotence, recency timers with confirmation, timers equal to `policy.next_due`, rule
segments, resolution of propensity snapshots, samples for the trainer, and a round trip through a
`Model` trained on the engine's own samples.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace
from datetime import UTC, datetime

import msgspec
import numpy as np
import numpy.typing as npt
import pytest

from features.definitions import UserState
from segments.config import DAY_MS, SegmentConfig
from segments.engine import MEMBERSHIP, SEGMENT, Change, Engine, Scored
from segments.model import Model
from segments.policy import NO_BAND, Record, load, next_due
from segments.rules import parse_rules
from segments.scoring import Params, cold_params

pytestmark = pytest.mark.unit

T0 = 1_764_201_600_000  # 2025-11-27T00:00:00Z
HOUR_MS = 3_600_000
VIEWS, SEARCHES, CARTS, PURCHASES = 0, 1, 2, 4
PAYLOAD_KEYS = {
    "schema_version",
    "change_id",
    "type",
    "user_id",
    "previous",
    "current",
    "reason",
    "model_version",
    "event_time",
    "event_time_ms",
    "features",
    "actions",
}
ASSIGNMENT_KEYS = {
    "segment",
    "cluster",
    "cluster_label",
    "rfm",
    "propensity",
    "propensity_band",
    "rules",
}
QUIET = SegmentConfig(label_rate=0.0)  # no snapshots (samples only with a learn_share)


def state(
    *,
    views: int = 3,
    purchases: int = 0,
    spend: float = 0.0,
    last_seen: int = T0,
    last_purchase: int = 0,
    orders: int | None = None,
) -> UserState:
    counts = [views, 1, 1, 0, purchases, 0]  # views, searches, carts, removals, purchases
    return UserState(
        counts=counts,
        orders=purchases if orders is None else orders,
        spend=spend,
        sessions=2,
        first_seen=last_seen - 30 * DAY_MS if last_seen else 0,
        last_seen=last_seen,
        last_purchase=last_purchase,
    )


def run(
    engine: Engine,
    params: Params,
    users: dict[str, UserState],
    now: int,
    *,
    timer: bool = False,
    learn_share: float = 0.0,
) -> Scored:
    names = list(users)
    return engine.score(
        params,
        names,
        [users[u] for u in names],
        [now] * len(names),
        [timer] * len(names),
        learn_share=learn_share,
    )


def segment_changes(out: Scored) -> list[Change]:
    return [c for c in out.changes if c.kind == SEGMENT]


def record_of(user_state: UserState) -> Record:
    return load(user_state.segment)


def cold(config: SegmentConfig) -> Params:
    return cold_params(config.features)


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def users_of_every_kind() -> dict[str, UserState]:
    return {
        "browser": state(views=12),
        "buyer": state(views=8, purchases=2, spend=90.0, last_purchase=T0 - DAY_MS),
        "away-10d": state(last_seen=T0 - 10 * DAY_MS),
        "away-40d": state(last_seen=T0 - 40 * DAY_MS),
        "never-seen": state(views=0, last_seen=0),
    }


# --- first assignment and the change payload ------------------------------------------------------


def test_every_user_gets_a_first_assignment() -> None:
    config = SegmentConfig()
    engine = Engine(config)
    users = users_of_every_kind()
    out = run(engine, cold(config), users, T0)
    assert [c.user_id for c in out.changes] == list(users)
    # Cold params: no clusters, no classifier, no quantiles (F = M = 1), so RFM from recency.
    expected = {
        "browser": "New",
        "buyer": "New",
        "away-10d": "Promising",
        "away-40d": "Hibernating",
        "never-seen": "Lost",
    }
    for change in out.changes:
        user = change.user_id
        assert change.change_id == f"{user}:0:1"
        assert change.previous is None
        assert change.current == expected[user]
        assert change.time_ms == T0
        payload = change.payload
        assert set(payload) == PAYLOAD_KEYS
        assert payload["change_id"] == f"{user}:0:1"
        assert payload["user_id"] == user
        assert payload["previous"] is None
        assert payload["reason"] == "first_seen"
        assert payload["model_version"] == 0
        assert payload["event_time_ms"] == T0
        assert payload["event_time"] == datetime(2025, 11, 27, tzinfo=UTC).isoformat()
        assert payload["current"] == {
            "segment": expected[user],
            "cluster": None,
            "cluster_label": None,
            "rfm": expected[user],
            "propensity": None,
            "propensity_band": NO_BAND,
            "rules": [],
            "parent": None,
            "outlier": False,
            "predicted_spend": None,
            "recommendations": [],
        }
        assert payload["actions"] == list(config.playbook[expected[user]])
        assert record_of(users[user]).seq == 1


def test_the_payload_features_are_the_columns_as_of_the_event_time() -> None:
    engine = Engine(QUIET)
    users = {"buyer": state(views=8, purchases=2, spend=90.0, last_purchase=T0 - DAY_MS)}
    out = run(engine, cold(QUIET), users, T0 + 2 * DAY_MS)
    features = out.changes[0].payload["features"]
    assert list(features) == list(engine.columns.names)
    assert set(features) >= {*QUIET.features, "frequency", "monetary"}
    assert features["views_per_session"] == 8 / 2  # two sessions
    assert features["purchases_per_session"] == 2 / 2
    assert features["sessions"] == 2
    assert features["avg_order_value"] == 45.0
    assert features["days_since_last_seen"] == 2.0
    assert features["tenure_days"] == 32.0
    assert features["frequency"] == 2
    assert features["monetary"] == 90.0
    json.dumps(out.changes[0].payload)  # plain JSON types only


def test_an_empty_batch_decides_nothing() -> None:
    out = Engine(QUIET).score(cold(QUIET), [], [], [], [])
    assert out == Scored()


# --- idempotence ----------------------------------------------------------------------------------


def test_scoring_the_same_states_again_at_the_same_time_changes_nothing() -> None:
    config = SegmentConfig()
    engine = Engine(config)
    users = users_of_every_kind()
    first = run(engine, cold(config), users, T0)
    records = {u: record_of(s) for u, s in users.items()}
    again = run(engine, cold(config), users, T0)
    assert first.changes
    assert again.changes == []
    assert again.due == first.due
    assert {u: record_of(s) for u, s in users.items()} == records


# --- timers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("timer", [True, False], ids=["timer", "activity"])
def test_a_move_at_the_edge_waits_for_confirmation(timer: bool) -> None:
    """At 7 days quiet R drops from 5 to 4 (New -> Promising); nudged by the margin (6.4 days)
    the user is still New, so the move is marginal: taken after two scorings a day apart."""
    engine = Engine(QUIET)
    params = cold(QUIET)
    users = {"u": state(last_seen=T0)}
    run(engine, params, users, T0)
    assert record_of(users["u"]).segment == "New"

    edge = T0 + 7 * DAY_MS
    proposed = run(engine, params, users, edge, timer=timer)
    record = record_of(users["u"])
    assert proposed.changes == []
    assert (record.segment, record.candidate, record.seen) == ("New", "Promising|unknown", 1)
    assert record.rfm == "Promising"
    assert record.candidate_since == edge
    # The next look is when the dwell is over.
    assert proposed.due == {"u": edge + QUIET.dwell_ms}
    assert run(engine, params, users, edge + HOUR_MS, timer=timer).changes == []

    confirm_at = proposed.due["u"]
    confirmed = run(engine, params, users, confirm_at, timer=timer)
    [change] = confirmed.changes
    assert change.change_id == "u:0:2"
    assert (change.previous, change.current) == ("New", "Promising")
    assert change.proposed_ms == edge
    assert change.payload["reason"] == ("timer" if timer else "activity")
    assert change.payload["previous"]["segment"] == "New"
    assert change.payload["current"]["segment"] == "Promising"
    assert change.payload["event_time_ms"] == confirm_at
    assert change.payload["actions"] == list(QUIET.playbook["Promising"])
    record = record_of(users["u"])
    assert (record.seq, record.since, record.candidate) == (2, confirm_at, "")
    assert confirmed.due == {"u": T0 + 14 * DAY_MS}


def test_a_move_well_past_the_edge_is_taken_at_once() -> None:
    """Seen again only after 15 days, R is 3 however the margin nudges it: no confirmation."""
    engine = Engine(QUIET)
    params = cold(QUIET)
    users = {"u": state(last_seen=T0)}
    run(engine, params, users, T0)
    later = T0 + 15 * DAY_MS
    [change] = run(engine, params, users, later, timer=True).changes
    assert (change.previous, change.current) == ("New", "About to Sleep")
    assert change.proposed_ms == later
    assert record_of(users["u"]).candidate == ""


def test_due_is_the_next_recency_threshold_or_the_horizon() -> None:
    """Without labels or candidates: the next recency threshold, but no later than a horizon
    from now, so that no propensity is older than the horizon."""
    engine = Engine(QUIET)
    users = users_of_every_kind()
    out = run(engine, cold(QUIET), users, T0)
    assert out.due == {
        "browser": T0 + 7 * DAY_MS,
        "buyer": T0 + 7 * DAY_MS,
        "away-10d": T0 - 10 * DAY_MS + 14 * DAY_MS,
        "away-40d": T0 + QUIET.horizon_ms,  # before the 60-day threshold at T0 + 20 days
        "never-seen": 0,
    }


def test_quiet_users_are_rescored_until_their_state_expires() -> None:
    config = SegmentConfig(label_rate=0.0, keep_ms=90 * DAY_MS)
    engine = Engine(config)
    users = {"recent": state(last_seen=T0 - 70 * DAY_MS), "old": state(last_seen=T0 - 91 * DAY_MS)}
    out = run(engine, cold(config), users, T0, timer=True)
    assert out.due == {"recent": T0 + config.horizon_ms, "old": 0}


@pytest.mark.parametrize(
    "config",
    [SegmentConfig(), SegmentConfig(label_rate=1.0, horizon_ms=2 * DAY_MS)],
    ids=["default", "every-user-labelled"],
)
def test_due_equals_policy_next_due(config: SegmentConfig) -> None:
    engine = Engine(config)
    users = {f"user-{i}": state(views=i, last_seen=T0 - i * 5 * DAY_MS) for i in range(20)}
    for now, timer in ((T0, False), (T0 + 16 * DAY_MS, True), (T0 + 17 * DAY_MS, True)):
        out = run(engine, cold(config), users, now, timer=timer)
        assert set(out.due) == set(users)
        for user, s in users.items():
            record = record_of(s)
            assert out.due[user] == record.due == next_due(record, s.last_seen, now, config)
    if config.label_rate == 1.0:
        assert all(record_of(s).label_ts for s in users.values())
    assert any(out.due[u] > 0 for u in users)


# --- rules ----------------------------------------------------------------------------------------

VIP = SegmentConfig(
    rules=parse_rules("vip: spend_total > 500 and orders_total >= 3"), label_rate=0.0
)


def test_a_rule_segment_takes_precedence_over_rfm() -> None:
    engine = Engine(VIP)
    users = {
        "vip": state(purchases=4, spend=800.0, last_purchase=T0),
        "few-orders": state(purchases=2, spend=800.0, last_purchase=T0),
        "low-spend": state(purchases=5, spend=400.0, last_purchase=T0),
        "at-the-edge": state(purchases=3, spend=500.0, last_purchase=T0),
    }
    out = run(engine, cold(VIP), users, T0)
    current = {c.user_id: c.payload["current"] for c in segment_changes(out)}
    actions = {c.user_id: c.payload["actions"] for c in segment_changes(out)}
    assert current["vip"]["segment"] == "vip"
    assert current["vip"]["rules"] == ["vip"]
    assert current["vip"]["rfm"] == "New"
    assert actions["vip"] == list(VIP.playbook["vip"])
    for user in ("few-orders", "low-spend", "at-the-edge"):
        assert current[user]["segment"] == "New", user
        assert current[user]["rules"] == [], user
    assert {"spend_total", "orders_total"} <= set(engine.columns.names)


def test_rules_on_features_outside_the_model_are_read_too() -> None:
    config = SegmentConfig(rules=parse_rules("searcher: searches_7d >= 0 and frequency >= 1"))
    engine = Engine(config)
    assert "searches_7d" in engine.columns.names
    assert "searches_7d" not in config.features
    users = {"a": state(purchases=1, spend=5.0, last_purchase=T0), "b": state()}
    out = run(engine, cold(config), users, T0)
    assert [c.current for c in segment_changes(out)] == ["searcher", "New"]


def test_entering_a_rule_segment_is_published_at_once_with_a_membership() -> None:
    engine = Engine(VIP)
    users = {"u": state(purchases=1, spend=100.0, last_purchase=T0)}
    run(engine, cold(VIP), users, T0)
    users["u"] = msgspec.structs.replace(users["u"], orders=3, spend=900.0)
    out = run(engine, cold(VIP), users, T0 + HOUR_MS)
    segment, membership = out.changes
    assert (segment.previous, segment.current, segment.change_id) == ("New", "vip", "u:0:2")
    assert segment.payload["reason"] == "activity"
    assert segment.payload["current"]["rules"] == ["vip"]
    assert membership.kind == MEMBERSHIP
    assert membership.change_id == "u:0:3"
    payload = membership.payload
    assert (payload["type"], payload["segment"], payload["entered"]) == ("membership", "vip", True)
    assert payload["actions"] == list(VIP.playbook["vip"])
    assert record_of(users["u"]).seq == 3


def test_a_member_leaves_a_rule_segment_only_past_the_margin() -> None:
    """vip needs spend over 500: at 480 the rule fails, but nudged up by the margin (528) it
    holds, so the user stays; at 450 (495 nudged) the user leaves."""
    engine = Engine(VIP)
    users = {"u": state(purchases=3, spend=900.0, last_purchase=T0)}
    run(engine, cold(VIP), users, T0)
    assert record_of(users["u"]).rules == ["vip"]
    users["u"] = msgspec.structs.replace(users["u"], spend=480.0)
    assert run(engine, cold(VIP), users, T0 + HOUR_MS).changes == []
    assert record_of(users["u"]).segment == "vip"
    users["u"] = msgspec.structs.replace(users["u"], spend=450.0)
    segment, membership = run(engine, cold(VIP), users, T0 + 2 * HOUR_MS).changes
    assert (segment.previous, segment.current) == ("vip", "New")
    assert (membership.kind, membership.previous, membership.current) == (MEMBERSHIP, "vip", "vip")
    assert membership.payload["entered"] is False
    assert membership.payload["actions"] == []
    assert record_of(users["u"]).rules == []


def test_a_rule_left_out_of_the_settings_is_left() -> None:
    engine = Engine(VIP)
    users = {"u": state(purchases=3, spend=900.0, last_purchase=T0)}
    run(engine, cold(VIP), users, T0)
    plain = SegmentConfig(label_rate=0.0)
    out = run(Engine(plain), cold(plain), users, T0 + HOUR_MS)
    assert [(c.kind, c.current) for c in out.changes] == [(SEGMENT, "New"), (MEMBERSHIP, "vip")]


# --- propensity snapshots -------------------------------------------------------------------------

LABELS = SegmentConfig(label_rate=1.0, horizon_ms=3 * DAY_MS)


def snapshot_inputs(engine: Engine, user_state: UserState, now: int) -> npt.NDArray[np.float32]:
    """The model inputs of one user as the snapshot stores them (float32)."""
    raw = np.array([engine.columns.row(user_state, now)], dtype=np.float64)
    inputs: npt.NDArray[np.float32] = engine.inputs(raw)[0].astype(np.float32)
    return inputs


def buy(user_state: UserState, at: int, amount: float = 30.0) -> UserState:
    counts = list(user_state.counts)
    counts[PURCHASES] += 1
    return msgspec.structs.replace(
        user_state,
        counts=counts,
        orders=user_state.orders + 1,
        spend=user_state.spend + amount,
        last_seen=at,
        last_purchase=at,
    )


def test_a_snapshot_is_taken_at_scoring_and_sets_a_timer_at_the_horizon() -> None:
    engine = Engine(LABELS)
    users = {"u": state(views=3)}
    out = run(engine, cold(LABELS), users, T0)
    record = record_of(users["u"])
    assert record.label_ts == T0
    assert record.label_p == -1.0  # no classifier yet
    expected = snapshot_inputs(engine, state(views=3), T0)
    np.testing.assert_array_equal(np.frombuffer(record.label_x, dtype=np.float32), expected)
    views = QUIET.features.index("views_per_session")
    assert expected[views] == np.float32(math.log1p(3 / 2))
    assert out.due == {"u": T0 + 3 * DAY_MS}
    assert out.labels == []


def test_a_purchase_within_the_horizon_resolves_the_snapshot_positive_at_its_end() -> None:
    """Held until the horizon is over, so positives reach the classifier in snapshot order with
    the negatives of the same time."""
    engine = Engine(LABELS)
    users = {"u": state(views=3)}
    run(engine, cold(LABELS), users, T0)
    expected = snapshot_inputs(engine, state(views=3), T0)
    bought_at = T0 + 2 * DAY_MS
    users["u"] = buy(users["u"], bought_at)
    assert run(engine, cold(LABELS), users, bought_at).labels == []
    assert record_of(users["u"]).label_hit
    end = T0 + LABELS.horizon_ms
    out = run(engine, cold(LABELS), users, end, timer=True)
    [label] = out.labels
    assert (label.bought, label.propensity, label.time_ms) == (True, -1.0, end)
    np.testing.assert_array_equal(np.array(label.inputs, dtype=np.float32), expected)
    assert record_of(users["u"]).label_ts == end  # a fresh snapshot (label_rate 1)
    assert not record_of(users["u"]).label_hit


def test_a_purchase_at_the_horizon_still_counts() -> None:
    engine = Engine(LABELS)
    users = {"u": state(views=3)}
    run(engine, cold(LABELS), users, T0)
    users["u"] = buy(users["u"], T0 + LABELS.horizon_ms)
    out = run(engine, cold(LABELS), users, T0 + LABELS.horizon_ms)
    assert [label.bought for label in out.labels] == [True]


def test_no_purchase_within_the_horizon_resolves_the_snapshot_negative() -> None:
    engine = Engine(LABELS)
    users = {"u": state(views=3)}
    run(engine, cold(LABELS), users, T0)
    expected = snapshot_inputs(engine, state(views=3), T0)
    end = T0 + LABELS.horizon_ms
    before = run(engine, cold(LABELS), users, end - 1, timer=True)
    assert before.labels == []
    assert record_of(users["u"]).label_ts == T0
    out = run(engine, cold(LABELS), users, end, timer=True)
    [label] = out.labels
    assert (label.bought, label.propensity) == (False, -1.0)
    np.testing.assert_array_equal(np.array(label.inputs, dtype=np.float32), expected)


@pytest.mark.parametrize(
    "purchase_at",
    [T0, T0 - DAY_MS, T0 + 3 * DAY_MS + 1],
    ids=["same-ms-as-snapshot", "before-snapshot", "after-horizon"],
)
def test_a_purchase_outside_the_horizon_is_negative(purchase_at: int) -> None:
    engine = Engine(LABELS)
    first = state(views=3)
    if purchase_at <= T0:
        first = buy(first, purchase_at)
        first = msgspec.structs.replace(first, last_seen=T0)
    users = {"u": first}
    run(engine, cold(LABELS), users, T0)
    now = max(purchase_at, T0 + LABELS.horizon_ms)
    if purchase_at > T0:
        users["u"] = buy(users["u"], purchase_at)
    out = run(engine, cold(LABELS), users, now)
    assert [label.bought for label in out.labels] == [False]


def test_the_snapshot_keeps_the_score_given_then() -> None:
    params = replace(cold(LABELS), propensity_ready=True, intercept=0.4)
    engine = Engine(LABELS)
    users = {"u": state(views=3)}
    out = run(engine, params, users, T0)
    assert record_of(users["u"]).label_p == pytest.approx(sigmoid(0.4))
    assert out.changes[0].payload["current"]["propensity"] == round(sigmoid(0.4), 4)
    assert out.changes[0].payload["current"]["propensity_band"] == "high"
    users["u"] = buy(users["u"], T0 + DAY_MS)
    run(engine, replace(params, intercept=-3.0), users, T0 + DAY_MS)
    later = run(engine, replace(params, intercept=-3.0), users, T0 + LABELS.horizon_ms)
    [label] = later.labels
    assert label.bought is True
    assert label.propensity == pytest.approx(sigmoid(0.4))


def test_without_label_sampling_no_snapshot_is_taken() -> None:
    engine = Engine(QUIET)
    users = users_of_every_kind()
    run(engine, cold(QUIET), users, T0)
    assert all(record_of(s).label_ts == 0 for s in users.values())


# --- samples for the trainer ----------------------------------------------------------------------


def test_every_user_is_sampled_at_a_learn_share_of_one() -> None:
    config = SegmentConfig(label_rate=0.0)
    engine = Engine(config)
    users = users_of_every_kind()
    out = run(engine, cold(config), users, T0, learn_share=1.0)
    assert len(out.samples) == len(users)
    for sample, (user, s) in zip(out.samples, users.items(), strict=True):
        assert sample.user == user
        assert len(sample.inputs) == len(config.features)
        np.testing.assert_allclose(sample.inputs, snapshot_inputs(engine, s, T0), rtol=1e-6)
        assert (sample.frequency, sample.monetary) == (float(s.orders), round(s.spend, 2))
    assert run(engine, cold(config), users, T0).samples == []


def test_sampling_is_a_deterministic_share_of_users() -> None:
    config = SegmentConfig(label_rate=0.0)
    users = [f"user-{i}" for i in range(2_000)]

    def sampled() -> list[list[float]]:
        states = [state(views=i % 50) for i in range(len(users))]
        out = Engine(config).score(
            cold(config), users, states, [T0] * len(users), [False] * len(users), learn_share=0.3
        )
        return [sample.inputs for sample in out.samples]

    first = sampled()
    assert 0.25 * len(users) < len(first) < 0.35 * len(users)
    assert sampled() == first  # a hash of user and time, not a random draw


def test_label_snapshots_are_a_fair_share_of_users() -> None:
    config = SegmentConfig(label_rate=0.2)
    users = [f"user-{i}" for i in range(10_000)]
    states = [state(views=1) for _ in users]
    Engine(config).score(cold(config), users, states, [T0] * len(users), [False] * len(users))
    labelled = sum(bool(record_of(s).label_ts) for s in states)
    # 10,000 draws at 0.2: 2,000 expected, standard deviation 40.
    assert 1_880 <= labelled <= 2_120, labelled


# --- with a trained model -------------------------------------------------------------------------


def personas(n: int, seed: int) -> tuple[list[str], list[UserState], list[int]]:
    rng = np.random.default_rng(seed)
    names, states, kinds = [], [], []
    for i in range(n):
        kind = i % 3
        jitter = int(rng.integers(0, 3))
        if kind == 0:  # browsers: many views, never buy
            s = state(views=60 + jitter)
        elif kind == 1:  # buyers: several orders, high spend
            s = state(views=15 + jitter, purchases=6, spend=600.0 + 10 * jitter, last_purchase=T0)
        else:  # dormant: a few views long ago
            s = state(views=1 + jitter, last_seen=T0 - (80 + jitter) * DAY_MS)
        names.append(f"{seed}-{i}")
        states.append(s)
        kinds.append(kind)
    return names, states, kinds


def test_a_model_trained_on_the_engines_samples_assigns_clusters() -> None:
    config = SegmentConfig(k=3, warmup=60, label_rate=0.0)
    engine = Engine(config)
    model = Model(config)
    users, states, _ = personas(150, seed=1)
    out = engine.score(cold(config), users, states, [T0] * 150, [False] * 150, learn_share=1.0)
    for sample in out.samples:
        model.learn(sample.user, sample.inputs, sample.frequency, sample.monetary)
    params = model.params()
    assert params.clusters_ready
    assert len(params.frequency_edges) == 4

    users, states, kinds = personas(60, seed=2)
    out = engine.score(params, users, states, [T0] * 60, [False] * 60)
    clusters = [record_of(s).cluster for s in states]
    assert all(c.kind == SEGMENT for c in out.changes)
    assert set(clusters) <= set(params.cluster_ids.tolist())
    by_kind = [{c for c, k in zip(clusters, kinds, strict=True) if k == kind} for kind in range(3)]
    assert all(len(group) == 1 for group in by_kind), by_kind
    assert len(set.union(*by_kind)) == 3
    for change in out.changes:
        current = change.payload["current"]
        assert current["cluster"] == record_of(states[users.index(change.user_id)]).cluster
        assert current["cluster_label"] == params.label_of(current["cluster"])
        assert current["propensity_band"] == NO_BAND
        assert change.payload["model_version"] == 1


def test_a_swept_user_follows_the_clusters_and_nothing_else() -> None:
    """`reassign` (a sweep after the clusters were placed anew): the cluster moves to the
    nearest centre and its tallies with it; the segment, band, version, timer and sequence stay,
    no change is published and no sample taken, whatever the learn share."""
    engine = Engine(QUIET)
    users = {"u": state(views=5, purchases=1, spend=50.0, last_purchase=T0)}
    run(engine, cold(QUIET), users, T0)
    before = record_of(users["u"])
    assert before.cluster == -1
    later = T0 + HOUR_MS
    inputs = engine.inputs(engine.columns.matrix([users["u"]], [later]))[0]
    params = replace(
        cold(QUIET),
        version=5,
        centers=np.array([inputs + 50.0, inputs]),
        cluster_ids=np.array([9, 4], dtype=np.int64),
        cluster_labels=("far", "near"),
    )
    out = engine.score(
        params, ["u"], [users["u"]], [later], [True], learn_share=1.0, reassign={"u"}
    )
    after = record_of(users["u"])
    assert after.cluster == 4
    assert out.tallies == {"u": [("cluster:4", 1)]}
    assert (out.changes, out.samples, out.labels) == ([], [], [])
    assert out.due == {"u": before.due}
    kept = (after.segment, after.band, after.version, after.due, after.seq, after.scored)
    assert kept == (before.segment, before.band, before.version, before.due, before.seq,
                    before.scored)  # fmt: skip
