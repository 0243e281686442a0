"""The decision policy (`segments.policy`): hysteresis on the segment, the propensity band and the
cluster; the change sequence; the next timer; band edges; and the record's encoding.
"""

from __future__ import annotations

import math
from dataclasses import replace

import msgspec
import pytest

from segments.config import DAY_MS, SegmentConfig
from segments.policy import (
    NO_BAND,
    Proposal,
    Record,
    assignment,
    band_of,
    dump,
    load,
    next_due,
    settle,
)

pytestmark = pytest.mark.unit

CONFIG = SegmentConfig()
NAN = math.nan
INF = math.inf
HOUR_MS = 3_600_000
DWELL = CONFIG.dwell_ms
L = 1_764_201_600_000  # last seen: 2025-11-27T00:00:00Z
NO_DWELL = replace(CONFIG, dwell_ms=0)


def proposal(
    segment: str = "New",
    propensity: float = NAN,
    *,
    cluster: int = -1,
    distance: float = INF,
    current: float = INF,
    rfm: str = "New",
    rules: list[str] | None = None,
    version: int = 1,
) -> Proposal:
    return Proposal(
        segment=segment,
        cluster=cluster,
        cluster_distance=distance,
        current_distance=current,
        rfm=rfm,
        propensity=propensity,
        rules=rules or [],
        version=version,
    )


def settled(
    *steps: Proposal | tuple[Proposal, int], config: SegmentConfig = CONFIG
) -> tuple[Record, list[bool]]:
    """Settle a fresh record through the steps: a proposal (scored at L) or (proposal, time)."""
    record = Record()
    changes = []
    for step in steps:
        p, now = (step, L) if isinstance(step, Proposal) else step
        changes.append(settle(record, p, config, now))
    return record, changes


def test_default_policy_settings() -> None:
    assert CONFIG.confirmations == 2
    assert CONFIG.dwell_ms == DAY_MS
    assert CONFIG.bands == (0.2, 0.5)
    assert CONFIG.band_margin == 0.05
    assert CONFIG.cluster_margin == 0.1


# --- first assignment -----------------------------------------------------------------------------


def test_the_first_assignment_is_immediate() -> None:
    record, changes = settled(
        proposal("Champions", 0.7, cluster=3, distance=1.5, rfm="Champions", rules=[], version=4)
    )
    assert changes == [True]
    assert record.seq == 1
    assert (record.segment, record.band, record.cluster) == ("Champions", "high", 3)
    assert (record.rfm, record.version, record.propensity) == ("Champions", 4, 0.7)
    assert (record.candidate, record.seen, record.candidate_since) == ("", 0, 0)


def test_the_first_assignment_without_a_classifier_or_clusters() -> None:
    record, changes = settled(proposal("New"))
    assert changes == [True]
    assert (record.segment, record.band, record.cluster, record.propensity) == (
        "New",
        NO_BAND,
        -1,
        -1.0,
    )


def test_the_same_proposal_again_changes_nothing() -> None:
    same = proposal("Loyal", 0.3, cluster=1, distance=1.0, current=1.0)
    record, changes = settled(*[(same, L + i * DWELL) for i in range(4)])
    assert changes == [True, False, False, False]
    assert record.seq == 1
    assert record.candidate == ""


# --- confirmation: consecutive proposals over the dwell -------------------------------------------


def test_a_new_segment_needs_two_proposals_a_dwell_apart_by_default() -> None:
    record, changes = settled(proposal("New"), (proposal("Lost"), L + HOUR_MS))
    assert changes == [True, False]
    assert (record.segment, record.candidate, record.seen) == ("New", "Lost|unknown", 1)
    assert record.candidate_since == L + HOUR_MS
    # A second proposal inside the dwell counts, but the dwell is not over.
    assert not settle(record, proposal("Lost"), CONFIG, L + HOUR_MS + DWELL - 1)
    assert (record.segment, record.seen) == ("New", 2)
    assert settle(record, proposal("Lost"), CONFIG, L + HOUR_MS + DWELL)
    assert (record.segment, record.candidate, record.seen, record.seq) == ("Lost", "", 0, 2)
    assert record.candidate_since == 0


def test_proposals_at_one_time_never_confirm_with_a_dwell() -> None:
    record, changes = settled(proposal("New"), *[proposal("Lost")] * 5)
    assert changes == [True] + [False] * 5
    assert (record.segment, record.seen) == ("New", 5)


def test_a_dwell_alone_is_not_enough() -> None:
    # One proposal, then nothing: at least `confirmations` scorings are needed.
    record, changes = settled(proposal("New"), (proposal("Lost"), L))
    assert changes == [True, False]
    assert next_due(record, L, L + 10 * DWELL, CONFIG) > 0  # a timer will look again
    assert settle(record, proposal("Lost"), CONFIG, L + 10 * DWELL)


@pytest.mark.parametrize("confirmations", [1, 2, 3, 5], ids=lambda n: f"confirmations={n}")
def test_without_a_dwell_the_configured_confirmations_decide(confirmations: int) -> None:
    config = replace(NO_DWELL, confirmations=confirmations)
    record, changes = settled(
        proposal("New"), *[proposal("At Risk")] * (confirmations + 1), config=config
    )
    assert changes == [True] + [False] * (confirmations - 1) + [True, False]
    assert record.segment == "At Risk"


@pytest.mark.parametrize(
    ("after", "changed"),
    [(HOUR_MS - 1, False), (HOUR_MS, True), (10 * HOUR_MS, True)],
    ids=["just-inside-the-dwell", "at-the-dwell", "well-past-the-dwell"],
)
def test_the_dwell_is_measured_from_the_first_proposal(after: int, changed: bool) -> None:
    config = replace(CONFIG, confirmations=1, dwell_ms=HOUR_MS)
    record, changes = settled(
        proposal("New"), (proposal("Lost"), L), (proposal("Lost"), L + after), config=config
    )
    assert changes == [True, False, changed]
    assert record.segment == ("Lost" if changed else "New")


@pytest.mark.parametrize(
    "between",
    ["Hibernating", "New"],
    ids=["another-candidate", "back-to-the-current-segment"],
)
def test_a_different_proposal_in_between_restarts_the_confirmation(between: str) -> None:
    record, changes = settled(
        proposal("New"),
        (proposal("Lost"), L),
        (proposal(between), L + DWELL),
        (proposal("Lost"), L + 2 * DWELL),
    )
    assert changes == [True, False, False, False]
    assert record.segment == "New"
    assert (record.candidate, record.seen, record.candidate_since) == (
        "Lost|unknown",
        1,
        L + 2 * DWELL,
    )
    assert settle(record, proposal("Lost"), CONFIG, L + 3 * DWELL)
    assert record.segment == "Lost"


def test_segment_and_band_are_confirmed_together() -> None:
    record, _ = settled(proposal("New", 0.1))
    assert not settle(record, proposal("Lost", 0.1), CONFIG, L)  # candidate Lost|low
    # The band moves as well: another candidate, so the count starts again.
    assert not settle(record, proposal("Lost", 0.3), CONFIG, L + DWELL)
    assert (record.candidate, record.seen) == ("Lost|medium", 1)
    assert settle(record, proposal("Lost", 0.3), CONFIG, L + 2 * DWELL)
    assert (record.segment, record.band, record.seq) == ("Lost", "medium", 2)


def test_rfm_rules_and_version_follow_every_proposal() -> None:
    record, _ = settled(proposal("vip", rfm="Loyal", rules=["vip"], version=1))
    settle(record, proposal("Lost", rfm="Lost", rules=[], version=2), CONFIG, L)
    # The segment waits for confirmation; what it is made of is the latest.
    assert (record.segment, record.rfm, record.rules, record.version) == ("vip", "Lost", [], 2)


# --- propensity band ------------------------------------------------------------------------------

BAND_CASES = [
    # (first score, next score, band after, changed)
    (0.10, 0.24, "low", False),
    (0.10, 0.26, "medium", True),
    (0.30, 0.16, "medium", False),
    (0.30, 0.14, "low", True),
    (0.30, 0.54, "medium", False),
    (0.30, 0.56, "high", True),
    (0.70, 0.46, "high", False),
    (0.70, 0.44, "medium", True),
    (0.10, 0.60, "high", True),
    (0.70, 0.10, "low", True),
    (0.10, 0.19, "low", False),
    (0.30, NAN, NO_BAND, True),
    (NAN, 0.51, "high", True),  # the classifier became ready: no margin from "unknown"
]


@pytest.mark.parametrize(
    ("first", "then", "band", "changed"),
    BAND_CASES,
    ids=[f"{a:g}->{b:g}" for a, b, _, _ in BAND_CASES],
)
def test_the_band_crosses_an_edge_only_by_the_margin(
    first: float, then: float, band: str, changed: bool
) -> None:
    record, _ = settled(proposal(propensity=first))
    # A band move is confirmed like a segment move: twice, a dwell apart.
    assert not settle(record, proposal(propensity=then), CONFIG, L)
    assert settle(record, proposal(propensity=then), CONFIG, L + DWELL) is changed
    assert record.band == band
    assert record.seq == 1 + changed
    assert record.propensity == (-1.0 if math.isnan(then) else then)


@pytest.mark.parametrize("margin", [0.0, 0.1], ids=lambda m: f"margin={m:g}")
def test_the_band_margin_is_configurable(margin: float) -> None:
    config = replace(NO_DWELL, band_margin=margin, confirmations=1)
    record, changes = settled(proposal(propensity=0.1), proposal(propensity=0.22), config=config)
    assert changes == [True, margin == 0.0]
    assert record.band == ("medium" if margin == 0.0 else "low")


@pytest.mark.parametrize(
    ("first", "then"),
    [(0.10, 0.52), (0.70, 0.18)],
    ids=["low-then-0.52", "high-then-0.18"],
)
def test_a_score_well_past_an_edge_moves_the_band(first: float, then: float) -> None:
    # From low, 0.52 is 0.32 above the low/medium edge; from high, 0.18 is 0.32 below the
    # medium/high edge: neither hovers on an edge, yet the band stays where it was, for as long
    # as the score stays within the margin of the far edge.
    record, _ = settled(proposal(propensity=first))
    first_band = record.band
    for day in range(4):
        settle(record, proposal(propensity=then), CONFIG, L + day * DWELL)
    assert record.band != first_band


# --- cluster --------------------------------------------------------------------------------------


def clustered(cluster: int = 1, distance: float = 1.0) -> Record:
    record, _ = settled(proposal(cluster=cluster, distance=distance, current=distance))
    assert record.cluster == cluster
    return record


CLUSTER_CASES = [
    # (distance to the nearest other centre, distance to the current one, cluster after)
    (9.5, 10.0, 1),  # 0.95 of the current: not clearly nearer
    (9.0, 10.0, 1),  # exactly (1 - margin): not below
    (8.9, 10.0, 2),  # below 0.9 of the current
    (0.0, 10.0, 2),
    (5.0, INF, 2),  # the current centre is gone
]


@pytest.mark.parametrize(
    ("distance", "current", "after"),
    CLUSTER_CASES,
    ids=[f"{d:g}-vs-{c:g}" for d, c, _ in CLUSTER_CASES],
)
def test_the_cluster_switches_only_to_a_clearly_nearer_centre(
    distance: float, current: float, after: int
) -> None:
    record = clustered(1)
    changed = settle(record, proposal(cluster=2, distance=distance, current=current), CONFIG, L)
    # The cluster follows at once (no confirmation), but a cluster move alone is not published.
    assert record.cluster == after
    assert changed is False
    assert (record.seq, record.candidate) == (1, "")


@pytest.mark.parametrize("margin", [0.0, 0.5], ids=lambda m: f"margin={m:g}")
def test_the_cluster_margin_is_configurable(margin: float) -> None:
    config = replace(CONFIG, cluster_margin=margin)
    record, _ = settled(
        proposal(cluster=1, distance=1.0, current=1.0),
        proposal(cluster=2, distance=6.0, current=10.0),
        config=config,
    )
    assert record.cluster == (2 if margin == 0.0 else 1)


def test_the_cluster_is_dropped_when_clusters_are_gone_and_taken_when_they_appear() -> None:
    record = clustered(4)
    settle(record, proposal(cluster=-1), CONFIG, L)
    assert record.cluster == -1
    settle(record, proposal(cluster=7, distance=3.0, current=INF), CONFIG, L)
    assert record.cluster == 7


def test_a_cluster_move_is_carried_on_the_next_change() -> None:
    record = clustered(1)
    settle(record, proposal(cluster=2, distance=1.0, current=10.0), CONFIG, L)
    lost = proposal("Lost", cluster=2, distance=1.0, current=1.0)
    assert settle(record, lost, CONFIG, L) is False
    assert settle(record, lost, CONFIG, L + DWELL) is True
    assert assignment(record, "x")["cluster"] == 2


# --- sequence -------------------------------------------------------------------------------------


def test_seq_increases_by_one_exactly_on_a_change() -> None:
    steps = [
        (proposal("New", 0.1), 0),
        (proposal("New", 0.1), 1),
        (proposal("Lost", 0.1), 2),  # candidate
        (proposal("Lost", 0.1), 2),  # inside the dwell
        (proposal("Lost", 0.1), 3),  # confirmed
        (proposal("Lost", 0.3), 4),  # band up: candidate
        (proposal("Lost", 0.31, cluster=1, distance=1.0), 5),  # confirmed, cluster taken too
        (proposal("Lost", 0.18), 6),  # just under the edge: hovering
        (proposal("At Risk", 0.12), 7),  # segment and band down: candidate
        (proposal("At Risk", 0.12), 8),  # confirmed
    ]
    record = Record()
    history = []
    for p, day in steps:
        seq = record.seq
        key = (record.segment, record.band)
        changed = settle(record, p, CONFIG, L + day * DWELL)
        assert record.seq == seq + changed
        assert changed == ((record.segment, record.band) != key)
        history.append(changed)
    assert history == [True, False, False, False, True, False, True, False, False, True]
    assert (record.seq, record.segment, record.band) == (4, "At Risk", "low")


# --- next timer -----------------------------------------------------------------------------------

DUE_CASES = [
    # (now - last seen, pending label at - last seen, candidate since - last seen or None,
    #  expected due - last seen, None for no timer)
    pytest.param(0, 0, None, 7 * DAY_MS, id="seen-now"),
    pytest.param(3 * DAY_MS, 0, None, 7 * DAY_MS, id="3d"),
    pytest.param(7 * DAY_MS - 1, 0, None, 7 * DAY_MS, id="1ms-before-7d"),
    pytest.param(7 * DAY_MS, 0, None, 14 * DAY_MS, id="at-7d-next-is-14d"),
    pytest.param(15 * DAY_MS, 0, None, 30 * DAY_MS, id="15d"),
    pytest.param(59 * DAY_MS, 0, None, 60 * DAY_MS, id="59d"),
    pytest.param(60 * DAY_MS, 0, None, None, id="60d-no-timer"),
    pytest.param(0, 2 * DAY_MS, None, 7 * DAY_MS, id="threshold-before-label-horizon"),
    pytest.param(0, -3 * DAY_MS, None, 4 * DAY_MS, id="label-horizon-first"),
    pytest.param(61 * DAY_MS, 60 * DAY_MS, None, 67 * DAY_MS, id="label-horizon-only"),
    pytest.param(20 * DAY_MS, 0, 20 * DAY_MS, 21 * DAY_MS, id="dwell-end-first"),
    pytest.param(20 * DAY_MS, 0, 19 * DAY_MS + 1, 20 * DAY_MS + 1, id="dwell-ends-in-1ms"),
    pytest.param(20 * DAY_MS, 0, 10 * DAY_MS, 20 * DAY_MS + 1, id="dwell-over-look-next-ms"),
    pytest.param(29 * DAY_MS + HOUR_MS, 0, 29 * DAY_MS, 30 * DAY_MS, id="threshold-first"),
    pytest.param(100 * DAY_MS, 0, 100 * DAY_MS, 101 * DAY_MS, id="dwell-end-only"),
]


@pytest.mark.parametrize(("elapsed", "label", "since", "expected"), DUE_CASES)
def test_next_due_is_the_earliest_timer(
    elapsed: int, label: int, since: int | None, expected: int | None
) -> None:
    record = Record(
        label_ts=L + label if label else 0,
        candidate="" if since is None else "Lost|unknown",
        seen=0 if since is None else 1,
        candidate_since=0 if since is None else L + since,
    )
    due = next_due(record, L, L + elapsed, CONFIG)
    assert due == (0 if expected is None else L + expected)


def test_next_due_follows_the_configured_thresholds_horizon_and_dwell() -> None:
    config = replace(CONFIG, recency_days=(1.0, 2.5), horizon_ms=12 * HOUR_MS, dwell_ms=1_000)
    assert next_due(Record(), L, L, config) == L + DAY_MS
    assert next_due(Record(), L, L + DAY_MS, config) == L + 5 * DAY_MS // 2
    assert next_due(Record(label_ts=L), L, L, config) == L + 12 * HOUR_MS
    assert next_due(Record(candidate="x|low", candidate_since=L), L, L, config) == L + 1_000


def test_next_due_is_zero_without_any_timer() -> None:
    assert next_due(Record(), 0, L, CONFIG) == 0  # never seen: no recency to track
    assert next_due(Record(), L, L + 365 * DAY_MS, CONFIG) == 0


def test_the_timer_after_a_proposal_confirms_a_quiet_user() -> None:
    record, _ = settled(proposal("New"), (proposal("Lost"), L + 15 * DAY_MS))
    due = next_due(record, L, L + 15 * DAY_MS, CONFIG)
    assert due == L + 15 * DAY_MS + DWELL
    assert settle(record, proposal("Lost"), CONFIG, due)


# --- bands, the record, the change object ---------------------------------------------------------

BAND_OF_CASES = [
    (0.0, "low"),
    (0.1999, "low"),
    (0.2, "medium"),
    (0.35, "medium"),
    (0.4999, "medium"),
    (0.5, "high"),
    (1.0, "high"),
    (NAN, NO_BAND),
]


@pytest.mark.parametrize(("p", "band"), BAND_OF_CASES, ids=[f"{p:g}" for p, _ in BAND_OF_CASES])
def test_band_of_default_edges(p: float, band: str) -> None:
    assert band_of(p, (0.2, 0.5)) == band


def test_band_of_custom_edges() -> None:
    edges = (0.3, 0.7)
    assert [band_of(p, edges) for p in (0.29, 0.3, 0.69, 0.7)] == [
        "low",
        "medium",
        "medium",
        "high",
    ]


def test_a_record_survives_its_encoding() -> None:
    record, _ = settled(
        proposal("vip", 0.42, cluster=3, distance=1.0, rfm="Loyal", rules=["vip"], version=9)
    )
    record.label_x = b"\x00\x01\x02"
    record.label_ts, record.due = L, L + DAY_MS
    assert load(dump(record)) == record
    assert load(b"") == Record()


# The record layout of commit e809358 (before the dwell): array_like encodes fields by position.
COMMITTED_LAYOUT = [
    3,  # seq
    "Loyal",  # segment
    2,  # cluster
    "Loyal",  # rfm
    "low",  # band
    0.1,  # propensity
    ["vip"],  # rules
    5,  # version
    L - DAY_MS,  # since
    "",  # candidate
    0,  # seen
    L + DAY_MS,  # due
    L,  # label_ts
    0.25,  # label_p
    b"\x00" * 8,  # label_x
    5,  # label_version
]


def test_a_record_stored_before_the_dwell_field_still_loads() -> None:
    record = load(msgspec.msgpack.encode(COMMITTED_LAYOUT))
    assert (record.seq, record.segment, record.cluster, record.band) == (3, "Loyal", 2, "low")
    assert (record.due, record.label_ts, record.label_p) == (L + DAY_MS, L, 0.25)
    assert (record.label_x, record.label_version) == (b"\x00" * 8, 5)


def test_assignment_shows_missing_parts_as_null() -> None:
    record, _ = settled(proposal("New"))
    assert assignment(record, "") == {
        "segment": "New",
        "cluster": None,
        "cluster_label": None,
        "rfm": "New",
        "propensity": None,
        "propensity_band": NO_BAND,
        "rules": [],
    }
    record, _ = settled(
        proposal("vip", 0.123456, cluster=0, distance=1.0, rfm="Loyal", rules=["vip"])
    )
    assert assignment(record, "high spend_total") == {
        "segment": "vip",
        "cluster": 0,
        "cluster_label": "high spend_total",
        "rfm": "Loyal",
        "propensity": 0.1235,
        "propensity_band": "low",
        "rules": ["vip"],
    }
