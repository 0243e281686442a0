"""The decision policy (`segments.policy`): hysteresis on the segment, the propensity band and the
cluster (clear moves at once, marginal ones confirmed); rule memberships with a margin; the
change sequence; the next timer; band edges; and the record's encoding.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import msgspec
import pytest

from segments.config import DAY_MS, SegmentConfig
from segments.policy import (
    NO_BAND,
    Proposal,
    Record,
    Settled,
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
HORIZON = CONFIG.horizon_ms
L = 1_764_201_600_000  # last seen: 2025-11-27T00:00:00Z
NO_DWELL = replace(CONFIG, dwell_ms=0)


def proposal(
    rfm: str = "New",
    propensity: float = NAN,
    *,
    near: tuple[str, str] | None = None,
    cluster: int = -1,
    distance: float = INF,
    current: float = INF,
    rules: list[str] | None = None,
    rules_near: list[str] | None = None,
    version: int = 1,
) -> Proposal:
    """Scoring's word on a user: RFM segment `rfm`, which the values nudged by the segment margin
    either way still give unless `near` says otherwise (so by default a move to it is clear);
    `rules` match now, `rules_near` (by default the same) match now or nudged."""
    rules = rules or []
    return Proposal(
        cluster=cluster,
        cluster_distance=distance,
        current_distance=current,
        rfm=rfm,
        rfm_near=near or (rfm, rfm),
        propensity=propensity,
        rules=rules,
        rules_near=list(rules) if rules_near is None else rules_near,
        version=version,
    )


def edge(rfm: str, other: str, propensity: float = NAN, **kwargs: Any) -> Proposal:
    """`rfm` on the edge of `other`: nudged by the margin towards less value, the values give
    `other` (a move from `other` to `rfm` is marginal)."""
    return proposal(rfm, propensity, near=(rfm, other), **kwargs)


def settled(
    *steps: Proposal | tuple[Proposal, int], config: SegmentConfig = CONFIG
) -> tuple[Record, list[Settled]]:
    """Settle a fresh record through the steps: a proposal (scored at L) or (proposal, time)."""
    record = Record()
    results = []
    for step in steps:
        p, now = (step, L) if isinstance(step, Proposal) else step
        results.append(settle(record, p, config, now))
    return record, results


def flags(results: list[Settled]) -> list[bool]:
    return [result.changed for result in results]


def test_default_policy_settings() -> None:
    assert CONFIG.confirmations == 2
    assert CONFIG.dwell_ms == DAY_MS
    assert CONFIG.horizon_ms == 7 * DAY_MS
    assert CONFIG.keep_ms == 0
    assert CONFIG.bands == (0.2, 0.5)
    assert CONFIG.band_margin == 0.1
    assert CONFIG.segment_margin == 0.1
    assert CONFIG.cluster_margin == 0.1


# --- first assignment -----------------------------------------------------------------------------


def test_the_first_assignment_is_immediate() -> None:
    record, results = settled(
        (proposal("Champions", 0.7, cluster=3, distance=1.5, version=4), L + HOUR_MS)
    )
    assert results == [Settled(True, L + HOUR_MS, [], [])]
    assert record.seq == 1
    assert (record.segment, record.band, record.cluster) == ("Champions", "high", 3)
    assert (record.rfm, record.version, record.propensity) == ("Champions", 4, 0.7)
    assert (record.candidate, record.seen, record.candidate_since) == ("", 0, 0)


def test_the_first_assignment_is_immediate_even_on_every_edge() -> None:
    # Nothing to hold on to: the RFM segment and the band are taken as proposed.
    record, results = settled(edge("Lost", "New", 0.21))
    assert flags(results) == [True]
    assert (record.segment, record.band, record.candidate) == ("Lost", "medium", "")


def test_the_first_assignment_without_a_classifier_or_clusters() -> None:
    record, results = settled(proposal("New"))
    assert flags(results) == [True]
    assert (record.segment, record.band, record.cluster, record.propensity) == (
        "New",
        NO_BAND,
        -1,
        -1.0,
    )


def test_the_first_assignment_enters_the_matching_rules() -> None:
    record, results = settled(
        proposal("Loyal", rules=["vip", "gold"], rules_near=["vip", "gold", "churn"])
    )
    # Only the rules matching now are entered; the segment is the first of them.
    assert results == [Settled(True, L, ["vip", "gold"], [])]
    assert (record.segment, record.rfm, record.rules) == ("vip", "Loyal", ["vip", "gold"])
    assert record.seq == 3  # the segment change and one per rule entered


def test_the_same_proposal_again_changes_nothing() -> None:
    same = proposal("Loyal", 0.3, cluster=1, distance=1.0, current=1.0, rules=["vip"])
    record, results = settled(*[(same, L + i * DWELL) for i in range(4)])
    assert flags(results) == [True, False, False, False]
    assert [(r.entered, r.left) for r in results[1:]] == [([], [])] * 3
    assert record.seq == 2
    assert record.candidate == ""


# --- segment: clear moves at once, marginal ones confirmed ----------------------------------------

SEGMENT_MOVE_CASES = [
    # (RFM segments of the nudged values, taken at once)
    pytest.param(("Lost", "Lost"), True, id="clear"),
    pytest.param(("Hibernating", "At Risk"), True, id="neighbours-are-other-segments"),
    pytest.param(("Lost", "New"), False, id="current-within-the-margin-towards-less"),
    pytest.param(("New", "Lost"), False, id="current-within-the-margin-towards-more"),
]


@pytest.mark.parametrize(("near", "at_once"), SEGMENT_MOVE_CASES)
def test_a_segment_move_is_marginal_only_while_the_current_segment_is_near(
    near: tuple[str, str], at_once: bool
) -> None:
    record, results = settled(proposal("New"), (proposal("Lost", near=near), L + HOUR_MS))
    assert flags(results) == [True, at_once]
    assert record.segment == ("Lost" if at_once else "New")
    assert record.seq == 1 + at_once
    assert record.candidate == ("" if at_once else "Lost|unknown")


def test_a_marginal_segment_needs_two_proposals_a_dwell_apart_by_default() -> None:
    record, results = settled(proposal("New"), (edge("Lost", "New"), L + HOUR_MS))
    assert flags(results) == [True, False]
    assert (record.segment, record.candidate, record.seen) == ("New", "Lost|unknown", 1)
    assert record.candidate_since == L + HOUR_MS
    # A second proposal inside the dwell counts, but the dwell is not over.
    assert not settle(record, edge("Lost", "New"), CONFIG, L + HOUR_MS + DWELL - 1).changed
    assert (record.segment, record.seen) == ("New", 2)
    assert settle(record, edge("Lost", "New"), CONFIG, L + HOUR_MS + DWELL).changed
    assert (record.segment, record.candidate, record.seen, record.seq) == ("Lost", "", 0, 2)
    assert record.candidate_since == 0


def test_proposals_at_one_time_never_confirm_with_a_dwell() -> None:
    record, results = settled(proposal("New"), *[edge("Lost", "New")] * 5)
    assert flags(results) == [True] + [False] * 5
    assert (record.segment, record.seen) == ("New", 5)


def test_a_dwell_alone_is_not_enough() -> None:
    # One proposal, then nothing: at least `confirmations` scorings are needed.
    record, results = settled(proposal("New"), (edge("Lost", "New"), L))
    assert flags(results) == [True, False]
    assert next_due(record, L, L + 10 * DWELL, CONFIG) > 0  # a timer will look again
    assert settle(record, edge("Lost", "New"), CONFIG, L + 10 * DWELL).changed


@pytest.mark.parametrize("confirmations", [1, 2, 3, 5], ids=lambda n: f"confirmations={n}")
def test_without_a_dwell_the_configured_confirmations_decide(confirmations: int) -> None:
    config = replace(NO_DWELL, confirmations=confirmations)
    record, results = settled(
        proposal("New"), *[edge("At Risk", "New")] * (confirmations + 1), config=config
    )
    assert flags(results) == [True] + [False] * (confirmations - 1) + [True, False]
    assert record.segment == "At Risk"


@pytest.mark.parametrize(
    ("after", "changed"),
    [(HOUR_MS - 1, False), (HOUR_MS, True), (10 * HOUR_MS, True)],
    ids=["just-inside-the-dwell", "at-the-dwell", "well-past-the-dwell"],
)
def test_the_dwell_is_measured_from_the_first_proposal(after: int, changed: bool) -> None:
    config = replace(CONFIG, confirmations=1, dwell_ms=HOUR_MS)
    lost = edge("Lost", "New")
    record, results = settled(proposal("New"), (lost, L), (lost, L + after), config=config)
    assert flags(results) == [True, False, changed]
    assert record.segment == ("Lost" if changed else "New")


@pytest.mark.parametrize(
    "between",
    [edge("Hibernating", "New"), proposal("New")],
    ids=["another-candidate", "back-to-the-current-segment"],
)
def test_a_different_proposal_in_between_restarts_the_confirmation(between: Proposal) -> None:
    lost = edge("Lost", "New")
    record, results = settled(
        proposal("New"), (lost, L), (between, L + DWELL), (lost, L + 2 * DWELL)
    )
    assert flags(results) == [True, False, False, False]
    assert record.segment == "New"
    assert (record.candidate, record.seen, record.candidate_since) == (
        "Lost|unknown",
        1,
        L + 2 * DWELL,
    )
    assert settle(record, lost, CONFIG, L + 3 * DWELL).changed
    assert record.segment == "Lost"


def test_a_user_hovering_on_a_segment_edge_does_not_flap() -> None:
    # Each scoring proposes the other side of the edge: nothing is ever proposed twice in a row.
    hover = [edge("Lost", "New"), edge("New", "Lost")]
    record, results = settled(
        proposal("New"), *[(hover[day % 2], L + day * DWELL) for day in range(1, 9)]
    )
    assert flags(results) == [True] + [False] * 8
    assert (record.segment, record.seq) == ("New", 1)


def test_a_clear_move_overtakes_a_pending_marginal_one() -> None:
    record, _ = settled(proposal("New"), (edge("Lost", "New"), L))
    assert record.candidate == "Lost|unknown"
    result = settle(record, proposal("At Risk"), CONFIG, L + HOUR_MS)
    assert result.changed
    assert (record.segment, record.candidate, record.seen, record.candidate_since) == (
        "At Risk",
        "",
        0,
        0,
    )


def test_segment_and_band_are_confirmed_together() -> None:
    record, _ = settled(proposal("New", 0.1))
    assert not settle(record, edge("Lost", "New", 0.1), CONFIG, L).changed  # candidate Lost|low
    # The band moves as well (marginally): another candidate, so the count starts again.
    assert not settle(record, edge("Lost", "New", 0.35), CONFIG, L + DWELL).changed
    assert (record.candidate, record.seen) == ("Lost|medium", 1)
    assert settle(record, edge("Lost", "New", 0.35), CONFIG, L + 2 * DWELL).changed
    assert (record.segment, record.band, record.seq) == ("Lost", "medium", 2)


@pytest.mark.parametrize(
    ("step", "held_as"),
    [
        (edge("Lost", "New", 0.45), "Lost|medium"),  # marginal segment, clear band
        (proposal("Lost", 0.35), "Lost|medium"),  # clear segment, marginal band
    ],
    ids=["marginal-segment-holds-a-clear-band", "marginal-band-holds-a-clear-segment"],
)
def test_a_move_is_marginal_when_either_part_is(step: Proposal, held_as: str) -> None:
    record, results = settled(proposal("New", 0.1), step)
    assert flags(results) == [True, False]
    assert (record.segment, record.band, record.candidate) == ("New", "low", held_as)
    assert settle(record, step, CONFIG, L + DWELL).changed
    assert "|".join((record.segment, record.band)) == held_as


def test_rfm_rules_and_version_follow_every_proposal() -> None:
    """Rewritten: leaving a rule now moves the segment at once, so the held-back move here is a
    marginal band; what the record is made of is still the latest proposal's."""
    record, _ = settled(proposal("Loyal", 0.1, rules=["vip"], version=1))
    step = proposal("Lost", 0.35, rules=["vip", "gold"], version=2)
    assert not settle(record, step, CONFIG, L).changed
    assert (record.segment, record.band) == ("vip", "low")
    assert (record.rfm, record.rules, record.version, record.propensity) == (
        "Lost",
        ["vip", "gold"],
        2,
        0.35,
    )


# --- evidence time (proposed_ms) ------------------------------------------------------------------


def test_a_move_taken_at_once_was_proposed_now() -> None:
    _, results = settled(proposal("New"), (proposal("Lost"), L + HOUR_MS))
    assert results[-1] == Settled(True, L + HOUR_MS, [], [])


def test_a_confirmed_move_was_proposed_when_its_candidate_was() -> None:
    lost = edge("Lost", "New")
    _, results = settled(
        proposal("New"), (lost, L + HOUR_MS), (lost, L + 2 * HOUR_MS), (lost, L + DWELL + HOUR_MS)
    )
    assert flags(results) == [True, False, False, True]
    assert [r.proposed_ms for r in results[1:]] == [L + HOUR_MS] * 3


def test_a_restarted_candidate_is_proposed_from_its_restart() -> None:
    lost = edge("Lost", "New")
    _, results = settled(
        proposal("New"),
        (lost, L),
        (edge("Hibernating", "New"), L + HOUR_MS),
        (lost, L + 2 * HOUR_MS),
        (lost, L + 2 * HOUR_MS + DWELL),
    )
    assert flags(results) == [True, False, False, False, True]
    assert [r.proposed_ms for r in results[1:]] == [
        L,
        L + HOUR_MS,
        L + 2 * HOUR_MS,
        L + 2 * HOUR_MS,
    ]


def test_a_pending_candidate_that_becomes_clear_keeps_its_evidence_time() -> None:
    record, _ = settled(proposal("New"), (edge("Lost", "New"), L + HOUR_MS))
    result = settle(record, proposal("Lost"), CONFIG, L + 2 * HOUR_MS)
    assert result == Settled(True, L + HOUR_MS, [], [])
    assert record.candidate == ""


# --- rule segments: memberships with a margin -----------------------------------------------------

MEMBERSHIP_CASES = [
    # (rules before, (matching now, matching now or nudged), (rules after, entered, left))
    pytest.param([], (["vip"], ["vip"]), (["vip"], ["vip"], []), id="enters-when-it-matches"),
    pytest.param([], ([], ["vip"]), ([], [], []), id="near-alone-does-not-enter"),
    pytest.param(["vip"], ([], ["vip"]), (["vip"], [], []), id="stays-while-near"),
    pytest.param(["vip"], ([], []), ([], [], ["vip"]), id="leaves-when-not-even-near"),
    pytest.param(["vip"], (["vip"], ["vip"]), (["vip"], [], []), id="stays-while-it-matches"),
    pytest.param(
        ["gold"],
        (["vip"], ["vip", "gold"]),
        (["vip", "gold"], ["vip"], []),
        id="members-in-configured-order",
    ),
    pytest.param(
        ["vip", "gold"], ([], ["gold"]), (["gold"], [], ["vip"]), id="leaves-one-keeps-another"
    ),
    pytest.param(
        ["vip", "gold"], ([], []), ([], [], ["vip", "gold"]), id="leaves-all-in-record-order"
    ),
]


@pytest.mark.parametrize(("before", "matching", "expected"), MEMBERSHIP_CASES)
def test_a_rule_is_entered_when_it_matches_and_left_beyond_the_margin(
    before: list[str],
    matching: tuple[list[str], list[str]],
    expected: tuple[list[str], list[str], list[str]],
) -> None:
    rules, rules_near = matching
    after, entered, left = expected
    segment = before[0] if before else "Loyal"
    record = Record(seq=5, segment=segment, band=NO_BAND, rules=before)
    result = settle(
        record, proposal("Loyal", rules=rules, rules_near=rules_near), CONFIG, L + HOUR_MS
    )
    assert (result.entered, result.left) == (entered, left)
    assert record.rules == after
    # The segment is the first rule the user is a member of, else the RFM segment, at once.
    assert record.segment == (after[0] if after else "Loyal")
    assert result.changed == (record.segment != segment)
    assert record.seq == 5 + result.changed + len(entered) + len(left)


def test_a_rule_that_is_no_longer_configured_is_left() -> None:
    # The record was written while "old" was configured; scoring no longer knows of it.
    record = Record(seq=4, segment="vip", band=NO_BAND, rules=["vip", "old"])
    result = settle(record, proposal("Loyal", rules=["vip"]), CONFIG, L)
    assert result == Settled(False, L, [], ["old"])
    assert (record.segment, record.rules, record.seq) == ("vip", ["vip"], 5)


def test_leaving_the_segment_rule_that_is_no_longer_configured_moves_to_the_rfm_segment() -> None:
    record = Record(seq=4, segment="old", band=NO_BAND, rules=["old"])
    result = settle(record, proposal("Loyal"), CONFIG, L)
    assert result == Settled(True, L, [], ["old"])
    assert (record.segment, record.rules, record.seq) == ("Loyal", [], 6)


def test_entering_a_rule_moves_the_segment_at_once_even_on_an_rfm_edge() -> None:
    record, results = settled(
        proposal("New"), edge("Lost", "New", rules=["vip"], rules_near=["vip"])
    )
    assert results[-1] == Settled(True, L, ["vip"], [])
    assert (record.segment, record.candidate, record.seq) == ("vip", "", 3)


def test_leaving_the_last_rule_moves_to_the_rfm_segment_at_once_even_on_its_edge() -> None:
    # The margin was spent on the membership: the RFM edge is not a reason to wait again.
    record, _ = settled(proposal("New", rules=["vip"]))
    result = settle(record, edge("Lost", "New"), CONFIG, L + HOUR_MS)
    assert result == Settled(True, L + HOUR_MS, [], ["vip"])
    assert (record.segment, record.rules, record.candidate) == ("Lost", [], "")


def test_a_membership_alone_is_not_a_segment_change() -> None:
    record, _ = settled(proposal("Loyal", rules=["vip"]))
    result = settle(
        record, proposal("Loyal", rules=["gold"], rules_near=["vip", "gold"]), CONFIG, L
    )
    assert result == Settled(False, L, ["gold"], [])
    assert (record.segment, record.rules, record.seq) == ("vip", ["vip", "gold"], 3)


def test_a_user_hovering_on_a_rule_edge_enters_once() -> None:
    matching = proposal("Loyal", rules=["vip"])
    nearly = proposal("Loyal", rules_near=["vip"])
    record, results = settled(
        proposal("Loyal"), *[(matching if day % 2 else nearly, L + day * DWELL) for day in range(8)]
    )
    # Entered on the first scoring that matches; never left while the values stay near.
    memberships = [(r.entered, r.left) for r in results[1:]]
    assert memberships == [([], []), (["vip"], []), *[([], [])] * 6]
    assert (record.rules, record.segment, record.seq) == (["vip"], "vip", 3)


# --- propensity band ------------------------------------------------------------------------------

BAND_CASES = [
    # (first score, next score, band after, how: "stays", "at-once" or "confirmed")
    (0.10, 0.19, "low", "stays"),  # no other band proposed
    (0.10, 0.29, "low", "stays"),  # not the margin past the edge
    (0.10, 0.35, "medium", "confirmed"),  # past the margin, not twice
    (0.10, 0.45, "medium", "at-once"),  # twice the margin past
    (0.10, 0.55, "medium", "at-once"),  # high, but not the margin past its edge
    (0.10, 0.75, "high", "at-once"),
    (0.30, 0.11, "medium", "stays"),
    (0.30, 0.05, "low", "confirmed"),  # low is narrower than twice the margin
    (0.30, 0.59, "medium", "stays"),
    (0.30, 0.65, "high", "confirmed"),
    (0.30, 0.75, "high", "at-once"),
    (0.70, 0.41, "high", "stays"),
    (0.70, 0.35, "medium", "confirmed"),
    (0.70, 0.25, "medium", "at-once"),
    (0.70, 0.15, "medium", "at-once"),  # low, but not the margin past its edge
    (0.30, NAN, NO_BAND, "at-once"),  # the classifier is gone
    (NAN, 0.51, "high", "at-once"),  # the classifier became ready: no margin from "unknown"
]


@pytest.mark.parametrize(
    ("first", "then", "band", "how"),
    BAND_CASES,
    ids=[f"{a:g}->{b:g}-{how}" for a, b, _, how in BAND_CASES],
)
def test_the_band_leaves_by_the_margin_and_at_once_by_twice_the_margin(
    first: float, then: float, band: str, how: str
) -> None:
    """Rewritten: the margin is now 0.1, and a band move clear by twice the margin is taken at
    once; only a marginal one is confirmed like a segment move (twice, a dwell apart)."""
    record, _ = settled(proposal(propensity=first))
    before = record.band
    results = [settle(record, proposal(propensity=then), CONFIG, L + i * DWELL) for i in (0, 1)]
    expected = {"stays": [False, False], "at-once": [True, False], "confirmed": [False, True]}
    assert flags(results) == expected[how]
    assert (before, record.band) == (band_of(first, CONFIG.bands), band)
    assert record.seq == 1 + (how != "stays")
    assert record.propensity == (-1.0 if math.isnan(then) else then)
    assert record.candidate == ""


@pytest.mark.parametrize(
    ("margin", "how"),
    [(0.0, "at-once"), (0.05, "confirmed"), (0.1, "stays")],
    ids=lambda v: f"margin={v:g}" if isinstance(v, float) else v,
)
def test_the_band_margin_is_configurable(margin: float, how: str) -> None:
    # From low, 0.27 is 0.07 past the edge: more than 0.05 but not twice it; less than 0.1.
    config = replace(CONFIG, band_margin=margin)
    record, results = settled(proposal(propensity=0.1), proposal(propensity=0.27), config=config)
    assert flags(results) == [True, how == "at-once"]
    assert record.band == ("medium" if how == "at-once" else "low")
    assert record.candidate == ("New|medium" if how == "confirmed" else "")


@pytest.mark.parametrize(
    ("first", "then"),
    [(0.10, 0.52), (0.70, 0.18)],
    ids=["low-then-0.52", "high-then-0.18"],
)
def test_a_score_well_past_an_edge_moves_the_band(first: float, then: float) -> None:
    """Rewritten: such a move is no longer confirmed, it is taken on the first scoring. From low,
    0.52 is 0.32 above the low/medium edge; from high, 0.18 is 0.32 below the medium/high edge:
    neither hovers on an edge, so the band lands in medium at once (not in the far band, whose
    edge the score is within the margin of)."""
    record, _ = settled(proposal(propensity=first))
    assert settle(record, proposal(propensity=then), CONFIG, L).changed
    assert record.band == "medium"


@pytest.mark.parametrize(
    ("first", "nearer", "farther"),
    [(0.10, 0.45, 0.65), (0.70, 0.15, 0.05)],
    ids=["up-from-low-0.45-then-0.65", "down-from-high-0.15-then-0.05"],
)
def test_a_score_further_past_the_edge_leaves_the_band_no_later(
    first: float, nearer: float, farther: float
) -> None:
    """A stronger signal must not be acted on later than a weaker one. From low, 0.45 leaves at
    once (to medium, even at twice the margin), so 0.65, further from low, must leave at once
    too; likewise from high, 0.15 and 0.05."""
    for then in (nearer, farther):
        record, results = settled(proposal(propensity=first), proposal(propensity=then))
        assert results[-1].changed, f"{first:g} -> {then:g} held back"
        assert record.band != band_of(first, CONFIG.bands)


def test_a_score_hovering_on_a_band_edge_does_not_flap() -> None:
    scores = [0.15, 0.25, 0.12, 0.28, 0.18, 0.22]
    record, results = settled(
        proposal(propensity=0.1),
        *[(proposal(propensity=p), L + i * DWELL) for i, p in enumerate(scores)],
    )
    assert flags(results) == [True] + [False] * len(scores)
    assert (record.band, record.seq, record.candidate) == ("low", 1, "")


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
    result = settle(record, proposal(cluster=2, distance=distance, current=current), CONFIG, L)
    # The cluster follows at once (no confirmation), but a cluster move alone is not published.
    assert record.cluster == after
    assert result == Settled(False, L, [], [])
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
    lost = edge("Lost", "New", cluster=2, distance=1.0, current=1.0)
    assert settle(record, lost, CONFIG, L).changed is False
    assert settle(record, lost, CONFIG, L + DWELL).changed is True
    assert assignment(record, "x")["cluster"] == 2


# --- sequence -------------------------------------------------------------------------------------


def test_seq_counts_every_published_change() -> None:
    """Rewritten: besides a (segment, band) change, each rule segment entered or left is a change
    event of its own and takes a sequence number."""
    steps = [
        # (proposal, day, expected (changed, entered, left))
        (proposal("New", 0.1), 0, (True, [], [])),
        (proposal("New", 0.1), 1, (False, [], [])),
        (proposal("New", 0.1, rules=["vip"]), 2, (True, ["vip"], [])),  # segment vip at once
        (proposal("Lost", 0.1, rules_near=["vip"]), 3, (False, [], [])),  # still near vip
        (
            proposal("Lost", 0.1, rules=["gold"], rules_near=["vip", "gold"]),
            4,
            (False, ["gold"], []),
        ),
        (proposal("Lost", 0.1), 5, (True, [], ["vip", "gold"])),  # both left: back to RFM
        (edge("New", "Lost", 0.1), 6, (False, [], [])),  # marginal: candidate
        (edge("New", "Lost", 0.1), 6, (False, [], [])),  # inside the dwell
        (edge("New", "Lost", 0.1), 7, (True, [], [])),  # confirmed
        (proposal("New", 0.35, cluster=1, distance=1.0), 8, (False, [], [])),  # band: marginal
        (proposal("New", 0.45), 9, (True, [], [])),  # band clear: at once
        (proposal("New", 0.25, rules=["vip"]), 10, (True, ["vip"], [])),  # band kept: medium
    ]
    record = Record()
    for p, day, expected in steps:
        seq = record.seq
        key = (record.segment, record.band)
        result = settle(record, p, CONFIG, L + day * DWELL)
        assert (result.changed, result.entered, result.left) == expected, day
        assert record.seq == seq + result.changed + len(result.entered) + len(result.left)
        assert result.changed == ((record.segment, record.band) != key)
    assert (record.seq, record.segment, record.band, record.rules) == (11, "vip", "medium", ["vip"])


# --- next timer -----------------------------------------------------------------------------------

DUE_CASES = [
    # (now - last seen, pending label at - last seen, candidate since - last seen or None,
    #  expected due - last seen). With keep_ms 0 a user once seen is re-scored a horizon on.
    pytest.param(0, 0, None, 7 * DAY_MS, id="seen-now"),
    pytest.param(3 * DAY_MS, 0, None, 7 * DAY_MS, id="3d"),
    pytest.param(7 * DAY_MS - 1, 0, None, 7 * DAY_MS, id="1ms-before-7d"),
    pytest.param(7 * DAY_MS, 0, None, 14 * DAY_MS, id="at-7d-next-is-14d"),
    pytest.param(15 * DAY_MS, 0, None, 22 * DAY_MS, id="15d-rescore-before-30d"),
    pytest.param(25 * DAY_MS, 0, None, 30 * DAY_MS, id="25d-30d-before-rescore"),
    pytest.param(59 * DAY_MS, 0, None, 60 * DAY_MS, id="59d"),
    pytest.param(60 * DAY_MS, 0, None, 67 * DAY_MS, id="60d-rescore-only"),
    pytest.param(0, 2 * DAY_MS, None, 7 * DAY_MS, id="threshold-before-label-horizon"),
    pytest.param(0, -3 * DAY_MS, None, 4 * DAY_MS, id="label-horizon-first"),
    pytest.param(61 * DAY_MS, 60 * DAY_MS, None, 67 * DAY_MS, id="label-horizon-before-rescore"),
    pytest.param(20 * DAY_MS, 0, 20 * DAY_MS, 21 * DAY_MS, id="dwell-end-first"),
    pytest.param(20 * DAY_MS, 0, 19 * DAY_MS + 1, 20 * DAY_MS + 1, id="dwell-ends-in-1ms"),
    pytest.param(20 * DAY_MS, 0, 10 * DAY_MS, 20 * DAY_MS + 1, id="dwell-over-look-next-ms"),
    pytest.param(29 * DAY_MS + HOUR_MS, 0, 29 * DAY_MS, 30 * DAY_MS, id="threshold-first"),
    pytest.param(100 * DAY_MS, 0, 100 * DAY_MS, 101 * DAY_MS, id="dwell-end-before-rescore"),
]


@pytest.mark.parametrize(("elapsed", "label", "since", "expected"), DUE_CASES)
def test_next_due_is_the_earliest_timer(
    elapsed: int, label: int, since: int | None, expected: int
) -> None:
    """Rewritten: the horizon re-score timer now joins the thresholds, the label's end and the
    dwell's end, so 15d and 60d (formerly 30d and no timer) are due a horizon on."""
    record = Record(
        label_ts=L + label if label else 0,
        candidate="" if since is None else "Lost|unknown",
        seen=0 if since is None else 1,
        candidate_since=0 if since is None else L + since,
    )
    assert next_due(record, L, L + elapsed, CONFIG) == L + expected


KEEP_CASES = [
    # (keep_ms, now - last seen, expected due - last seen, 0 for none)
    pytest.param(0, 365 * DAY_MS, 372 * DAY_MS, id="kept-for-ever"),
    pytest.param(30 * DAY_MS, 15 * DAY_MS, 22 * DAY_MS, id="kept-rescore-first"),
    pytest.param(30 * DAY_MS, 30 * DAY_MS - 1, 30 * DAY_MS, id="1ms-before-expiry-threshold-first"),
    pytest.param(30 * DAY_MS, 30 * DAY_MS, 60 * DAY_MS, id="expired-threshold-only"),
    pytest.param(30 * DAY_MS, 60 * DAY_MS, 0, id="expired-no-timer"),
    pytest.param(90 * DAY_MS, 70 * DAY_MS, 77 * DAY_MS, id="kept-past-the-last-threshold"),
    pytest.param(90 * DAY_MS, 90 * DAY_MS, 0, id="expired-past-the-last-threshold"),
]


@pytest.mark.parametrize(("keep", "elapsed", "expected"), KEEP_CASES)
def test_the_horizon_rescore_lasts_while_the_state_is_kept(
    keep: int, elapsed: int, expected: int
) -> None:
    config = replace(CONFIG, keep_ms=keep)
    due = next_due(Record(), L, L + elapsed, config)
    assert due == (L + expected if expected else 0)


def test_a_quiet_user_is_rescored_every_horizon_until_the_state_expires() -> None:
    config = replace(CONFIG, keep_ms=30 * DAY_MS)
    now, timeline = L, []
    while due := next_due(Record(), L, now, config):
        timeline.append((due - L) // DAY_MS)
        now = due
    assert timeline == [7, 14, 21, 28, 30, 60]


def test_a_quiet_user_kept_for_ever_is_rescored_at_least_every_horizon() -> None:
    now, timeline = L, []
    for _ in range(12):
        due = next_due(Record(), L, now, CONFIG)
        assert now < due <= now + HORIZON
        timeline.append((due - L) // DAY_MS)
        now = due
    # The recency thresholds (7, 14, 30, 60 days) where they come first, else a horizon on.
    assert timeline == [7, 14, 21, 28, 30, 37, 44, 51, 58, 60, 67, 74]


def test_next_due_follows_the_configured_thresholds_horizon_and_dwell() -> None:
    """Rewritten: the horizon (3 days here) is also a re-score timer, so it is kept longer than
    the first threshold to let each timer show."""
    config = replace(CONFIG, recency_days=(1.0, 2.5), horizon_ms=3 * DAY_MS, dwell_ms=1_000)
    assert next_due(Record(), L, L, config) == L + DAY_MS
    assert next_due(Record(), L, L + DAY_MS, config) == L + 5 * DAY_MS // 2
    assert next_due(Record(), L, L + 5 * DAY_MS // 2, config) == L + 11 * DAY_MS // 2
    assert next_due(Record(label_ts=L - 5 * DAY_MS // 2), L, L, config) == L + DAY_MS // 2
    assert next_due(Record(candidate="x|low", candidate_since=L), L, L, config) == L + 1_000


def test_next_due_is_zero_without_any_timer() -> None:
    """Rewritten: a user once seen now always has the horizon re-score unless its state expired."""
    assert next_due(Record(), 0, L, CONFIG) == 0  # never seen: no recency to track
    assert next_due(Record(), L, L + 365 * DAY_MS, replace(CONFIG, keep_ms=90 * DAY_MS)) == 0


def test_a_user_never_seen_has_only_the_label_and_dwell_timers() -> None:
    pending = Record(label_ts=L, candidate="Lost|unknown", seen=1, candidate_since=L)
    assert next_due(pending, 0, L, CONFIG) == L + DWELL
    assert next_due(Record(label_ts=L), 0, L, CONFIG) == L + HORIZON


def test_the_timer_after_a_proposal_confirms_a_quiet_user() -> None:
    record, _ = settled(proposal("New"), (edge("Lost", "New"), L + 15 * DAY_MS))
    due = next_due(record, L, L + 15 * DAY_MS, CONFIG)
    assert due == L + 15 * DAY_MS + DWELL
    result = settle(record, edge("Lost", "New"), CONFIG, due)
    assert result == Settled(True, L + 15 * DAY_MS, [], [])


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
    record, _ = settled(proposal("Loyal", 0.42, cluster=3, distance=1.0, rules=["vip"], version=9))
    record.label_x = b"\x00\x01\x02"
    record.label_ts, record.due, record.label_hit = L, L + DAY_MS, True
    record.candidate, record.seen, record.candidate_since = "Lost|low", 1, L
    assert load(dump(record)) == record
    assert load(b"") == Record()


def test_new_fields_are_encoded_last() -> None:
    """`candidate_since`, `label_hit`, `scored`, `audiences`, then the analytics: appended, so
    older records still load."""
    record = Record(candidate_since=L, label_hit=True, scored=L + 1, audiences=["a"], offer=["x"])
    encoded = msgspec.msgpack.decode(dump(record))
    added = len(Record.__struct_fields__) - len(COMMITTED_LAYOUT)
    assert encoded[len(COMMITTED_LAYOUT) :][:4] == [L, True, L + 1, ["a"]]
    assert encoded[-1] == ["x"]
    assert len(encoded) == len(COMMITTED_LAYOUT) + added
    assert load(msgspec.msgpack.encode(encoded[: len(COMMITTED_LAYOUT) + 4])).offer == []


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
    assert (record.candidate_since, record.label_hit) == (0, False)


def test_a_record_stored_before_the_label_hit_field_still_loads() -> None:
    stored = [*COMMITTED_LAYOUT[:9], "Lost|low", 1, *COMMITTED_LAYOUT[11:], L - HOUR_MS]
    record = load(msgspec.msgpack.encode(stored))
    assert (record.candidate, record.seen, record.candidate_since) == ("Lost|low", 1, L - HOUR_MS)
    assert (record.label_ts, record.label_hit) == (L, False)


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
        "parent": None,
        "outlier": False,
        "predicted_spend": None,
        "recommendations": [],
    }
    record, _ = settled(proposal("Loyal", 0.123456, cluster=0, distance=1.0, rules=["vip"]))
    assert assignment(record, "high spend_total") == {
        "segment": "vip",
        "cluster": 0,
        "cluster_label": "high spend_total",
        "rfm": "Loyal",
        "propensity": 0.1235,
        "propensity_band": "low",
        "rules": ["vip"],
        "parent": None,
        "outlier": False,
        "predicted_spend": None,
        "recommendations": [],
    }
