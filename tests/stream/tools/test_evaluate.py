"""Figures `segstream evaluate` derives from what a run showed (`stream.tools.evaluate`): the
delay of purchase-driven promotions, counted from the purchase to the published change."""

from __future__ import annotations

import pytest

from stream.tools.evaluate import Observed, Seen, promotion_delays

pytestmark = pytest.mark.unit

HOUR = 3_600_000


def seen(
    user: str,
    previous: str | None,
    current: str,
    *,
    at: int,
    batch: int,
    proposed: int | None = None,
    reason: str = "activity",
) -> Seen:
    return Seen(user, at, previous, current, "", "", reason, at if proposed is None else proposed,
                batch)  # fmt: skip


def observed(*changes: Seen, purchases: dict[str, list[tuple[int, int]]]) -> Observed:
    # Batch i holds event times up to (i + 1) hours.
    run = Observed(batch_ends=[(i + 1) * HOUR for i in range(10)], purchases=purchases)
    for number, change in enumerate(changes):
        run.changes[f"c{number}"] = change
    return run


def test_a_promotion_in_the_batch_of_the_purchase_has_no_delay_in_batches() -> None:
    run = observed(
        seen("a", "New", "Champions", at=2 * HOUR, batch=1),
        purchases={"a": [(2 * HOUR - 600_000, 1)]},
    )
    assert promotion_delays(run) == {
        "promotions": 1,
        "median_ms": 600_000,
        "p90_ms": 600_000.0,
        "median_batches": 0,
        "p90_batches": 0.0,
        "within_one_batch": 1.0,
    }


def test_a_confirmed_promotion_counts_from_the_purchase_that_proposed_it() -> None:
    """Proposed in batch 1 right after a purchase, confirmed in batch 4: three batches late."""
    run = observed(
        seen("a", "Promising", "Potential Loyalist", at=5 * HOUR, batch=4, proposed=2 * HOUR),
        purchases={"a": [(2 * HOUR - 60_000, 1), (5 * HOUR - 60_000, 4)]},
    )
    delays = promotion_delays(run)
    assert (delays["promotions"], delays["median_batches"]) == (1, 3)
    assert delays["median_ms"] == 3 * HOUR + 60_000
    assert delays["within_one_batch"] == 0.0


@pytest.mark.parametrize(
    ("change", "purchases"),
    [
        (seen("a", "Champions", "At Risk", at=2 * HOUR, batch=1), [(2 * HOUR - 1, 1)]),
        (seen("a", None, "Champions", at=2 * HOUR, batch=1), [(2 * HOUR - 1, 1)]),
        (seen("a", "New", "Champions", at=2 * HOUR, batch=1, reason="timer"), [(1, 0)]),
        (seen("a", "New", "Champions", at=3 * HOUR, batch=2), [(HOUR - 1, 0)]),
        (seen("a", "New", "Champions", at=2 * HOUR, batch=1), []),
    ],
    ids=["a-demotion", "a-first-assignment", "by-timer", "purchase-batches-before", "no-purchase"],
)
def test_other_changes_are_not_purchase_driven_promotions(
    change: Seen, purchases: list[tuple[int, int]]
) -> None:
    assert promotion_delays(observed(change, purchases={"a": purchases})) == {"promotions": 0}


def test_a_rule_segment_ranks_above_every_rfm_segment() -> None:
    run = observed(
        seen("a", "Champions", "vip", at=2 * HOUR, batch=1),
        seen("b", "vip", "Champions", at=2 * HOUR, batch=1),
        purchases={"a": [(2 * HOUR - 1, 1)], "b": [(2 * HOUR - 1, 1)]},
    )
    assert promotion_delays(run)["promotions"] == 1
