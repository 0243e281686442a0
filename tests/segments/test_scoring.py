"""Vectorized scoring (`segments.scoring.score`) on hand-made `Params`, against brute force and
values worked out by hand: nearest centres, propensity, and R, F, M scores with segment names.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from segments.config import SegmentConfig
from segments.scoring import RFM_GRID, RFM_SEGMENTS, Z_CLIP, Params, cold_params, score

pytestmark = pytest.mark.unit

NAMES = ("events_total", "spend_total", "sessions", "view_to_cart")
RECENCY = SegmentConfig().recency_days  # (7, 14, 30, 60)
F_EDGES = np.array([1.0, 2.0, 4.0, 8.0])
M_EDGES = np.array([10.0, 20.0, 40.0, 80.0])
# A value of each score for the edges above: recency days for R, orders for F, spend for M.
DAYS_FOR_R = {5: 0.0, 4: 10.0, 3: 20.0, 2: 45.0, 1: 100.0}
ORDERS_FOR_F = {1: 1.0, 2: 2.0, 3: 3.0, 4: 5.0, 5: 9.0}
SPEND_FOR_M = {1: 5.0, 2: 15.0, 3: 30.0, 4: 50.0, 5: 100.0}


def params(**fields: Any) -> Params:
    return dataclasses.replace(cold_params(NAMES), **fields)


def rfm_rows(*rows: tuple[float, float, float]) -> npt.NDArray[np.float64]:
    return np.array(rows, dtype=np.float64).reshape(len(rows), 3)


def inputs_of(n: int) -> npt.NDArray[np.float64]:
    return np.zeros((n, len(NAMES)))


def test_recency_thresholds_are_the_configured_defaults() -> None:
    assert RECENCY == (7.0, 14.0, 30.0, 60.0)


# --- nearest centre -------------------------------------------------------------------------------


def test_nearest_centre_is_the_brute_force_argmin() -> None:
    rng = np.random.default_rng(0)
    centers = rng.normal(0.0, 2.0, size=(6, len(NAMES)))
    p = params(
        mean=np.array([1.0, -2.0, 0.5, 3.0]),
        scale=np.array([2.0, 0.5, 1.0, 4.0]),
        centers=centers,
        cluster_ids=np.array([4, 0, 9, 2, 7, 1], dtype=np.int64),
        cluster_labels=tuple(f"c{i}" for i in range(6)),
    )
    raw = rng.normal(0.0, 5.0, size=(500, len(NAMES)))
    scores = score(p, raw, rfm_rows(*[(1.0, 0.0, 0.0)] * 500), RECENCY)
    z = (raw - p.mean) / p.scale
    brute = np.array(
        [
            [sum((z[i, j] - c[j]) ** 2 for j in range(len(NAMES))) for c in centers]
            for i in range(500)
        ]
    )
    np.testing.assert_allclose(scores.standardized, z)
    np.testing.assert_allclose(scores.distances, brute, rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(scores.nearest, brute.argmin(axis=1))
    assert scores.nearest.dtype == np.int64
    assert len(set(scores.nearest.tolist())) == 6  # the draw reaches every centre


def test_a_point_on_a_centre_is_nearest_to_it_at_distance_zero() -> None:
    centers = np.array([[0.0, 0.0, 0.0, 0.0], [3.0, 0.0, 0.0, 0.0], [0.0, 0.0, 3.0, 3.0]])
    p = params(centers=centers, cluster_ids=np.array([5, 6, 7]), cluster_labels=("a", "b", "c"))
    scores = score(p, centers[[2, 0, 1]], rfm_rows(*[(1.0, 0.0, 0.0)] * 3), RECENCY)
    assert scores.nearest.tolist() == [2, 0, 1]
    np.testing.assert_allclose(scores.distances[[0, 1, 2], [2, 0, 1]], 0.0, atol=1e-12)
    np.testing.assert_allclose(scores.distances[0], [18.0, 27.0, 0.0])


def test_without_clusters_nobody_has_a_nearest_centre() -> None:
    p = cold_params(NAMES)
    assert not p.clusters_ready
    scores = score(p, inputs_of(3), rfm_rows(*[(1.0, 0.0, 0.0)] * 3), RECENCY)
    assert scores.nearest.tolist() == [-1, -1, -1]
    assert scores.distances.shape == (3, 0)


def test_an_empty_batch_scores_to_empty_arrays() -> None:
    p = params(centers=np.ones((2, len(NAMES))), cluster_ids=np.array([0, 1]))
    scores = score(p, inputs_of(0), rfm_rows(), RECENCY)
    assert len(scores.nearest) == 0
    assert len(scores.propensity) == 0
    assert scores.rfm == []


def test_label_of_a_stable_id() -> None:
    p = params(
        centers=np.zeros((2, len(NAMES))),
        cluster_ids=np.array([3, 8]),
        cluster_labels=("high spend_total", "low sessions"),
    )
    assert p.label_of(8) == "low sessions"
    assert p.label_of(3) == "high spend_total"
    assert p.label_of(0) == ""


# --- propensity -----------------------------------------------------------------------------------


def test_propensity_is_the_sigmoid_of_the_classifiers_standardized_dot_product() -> None:
    """The classifier standardizes with statistics of its own (not the clusters' ones)."""
    weights = np.array([0.8, -1.5, 0.3, 2.0])
    p = params(
        mean=np.array([9.0, 9.0, 9.0, 9.0]),
        scale=np.array([9.0, 9.0, 9.0, 9.0]),
        propensity_mean=np.array([1.0, 2.0, 3.0, 4.0]),
        propensity_scale=np.array([2.0, 1.0, 0.5, 4.0]),
        weights=weights,
        intercept=-0.25,
        propensity_ready=True,
    )
    raw = np.array([[1.0, 2.0, 3.0, 4.0], [3.0, 0.0, 3.5, 8.0], [-1.0, 5.0, 2.0, 0.0]])
    scores = score(p, raw, rfm_rows(*[(1.0, 0.0, 0.0)] * 3), RECENCY)
    expected = []
    for row in raw:
        z = [(row[j] - p.propensity_mean[j]) / p.propensity_scale[j] for j in range(len(NAMES))]
        margin = sum(zj * wj for zj, wj in zip(z, weights, strict=True)) - 0.25
        expected.append(1.0 / (1.0 + math.exp(-margin)))
    np.testing.assert_allclose(scores.propensity, expected, rtol=1e-12)
    # Row 0 sits on the mean: only the intercept is left.
    assert scores.propensity[0] == pytest.approx(1.0 / (1.0 + math.exp(0.25)))


def test_inputs_far_outside_what_the_classifier_learned_count_as_its_edge() -> None:
    """Standardized inputs are clipped to +-Z_CLIP: 1e6 scores like Z_CLIP deviations."""
    p = params(weights=np.array([1.0, 0.0, 0.0, 0.0]), propensity_ready=True)
    raw = np.array([[1e6, 0, 0, 0], [-1e6, 0, 0, 0], [Z_CLIP, 0, 0, 0]], dtype=np.float64)
    scores = score(p, raw, rfm_rows(*[(1.0, 0.0, 0.0)] * 3), RECENCY)
    edge = 1.0 / (1.0 + math.exp(-Z_CLIP))
    np.testing.assert_allclose(scores.propensity, [edge, 1.0 - edge, edge], rtol=1e-12)


def test_a_feature_the_classifier_never_saw_vary_counts_nothing() -> None:
    p = params(
        weights=np.array([3.0, 0.0, 0.0, 0.0]),
        propensity_scale=np.array([np.inf, 1.0, 1.0, 1.0]),
        propensity_ready=True,
    )
    raw = np.array([[5.0, 0, 0, 0], [-5.0, 0, 0, 0]], dtype=np.float64)
    scores = score(p, raw, rfm_rows(*[(1.0, 0.0, 0.0)] * 2), RECENCY)
    np.testing.assert_allclose(scores.propensity, [0.5, 0.5])


def test_propensity_is_nan_until_the_classifier_is_ready() -> None:
    p = params(weights=np.array([1.0, 1.0, 1.0, 1.0]), intercept=2.0, propensity_ready=False)
    scores = score(p, np.ones((4, len(NAMES))), rfm_rows(*[(1.0, 0.0, 0.0)] * 4), RECENCY)
    assert np.isnan(scores.propensity).all()
    assert scores.propensity.shape == (4,)


class _Classifier:
    """A non-linear classifier stand-in: P(True) is the first standardized input, clipped."""

    def __init__(self) -> None:
        self.seen: list[dict[str, float]] = []

    def predict_proba_one(self, x: dict[str, float]) -> dict[bool, float]:
        self.seen.append(x)
        p = min(1.0, max(0.0, x["events_total"]))
        return {True: p, False: 1.0 - p}


def test_a_non_linear_classifier_scores_each_standardized_row() -> None:
    classifier = _Classifier()
    p = params(
        propensity_mean=np.array([1.0, 0.0, 0.0, 0.0]),
        propensity_scale=np.array([10.0, 1.0, 1.0, 1.0]),
        classifier=classifier,
        propensity_ready=True,
    )
    raw = np.array([[4.0, 1, 2, 3], [1.0, 0, 0, 0], [50.0, 0, 0, 0]], dtype=np.float64)
    scores = score(p, raw, rfm_rows(*[(1.0, 0.0, 0.0)] * 3), RECENCY)
    np.testing.assert_allclose(scores.propensity, [0.3, 0.0, 1.0])
    assert classifier.seen[0] == pytest.approx(
        {"events_total": 0.3, "spend_total": 1.0, "sessions": 2.0, "view_to_cart": 3.0}
    )


# --- RFM ------------------------------------------------------------------------------------------

RECENCY_CASES = [
    (0.0, 5),
    (3.5, 5),
    (6.9999, 5),
    (7.0, 4),
    (7.0001, 4),
    (13.9999, 4),
    (14.0, 3),
    (14.0001, 3),
    (29.9999, 3),
    (30.0, 2),
    (30.0001, 2),
    (59.9999, 2),
    (60.0, 1),
    (60.0001, 1),
    (365.0, 1),
]


@pytest.mark.parametrize(
    ("days", "expected"), RECENCY_CASES, ids=[f"{d:g}d-R{r}" for d, r in RECENCY_CASES]
)
def test_recency_thresholds_give_r(days: float, expected: int) -> None:
    scores = score(cold_params(NAMES), inputs_of(1), rfm_rows((days, 0.0, 0.0)), RECENCY)
    assert scores.rfm_codes[0] // 100 == expected
    assert scores.rfm[0] == RFM_GRID[expected][0]  # a non-buyer: F = M = 1


def test_custom_recency_thresholds() -> None:
    days = [0.0, 0.99, 1.0, 2.0, 3.0, 4.0, 9.0]
    scores = score(
        cold_params(NAMES), inputs_of(7), rfm_rows(*[(d, 0.0, 0.0) for d in days]), (1, 2, 3, 4)
    )
    assert (scores.rfm_codes // 100).tolist() == [5, 5, 4, 3, 2, 1, 1]


QUINTILE_CASES = [
    (0.5, 1),
    (1.0, 1),
    (1.5, 2),
    (2.0, 2),
    (3.0, 3),
    (4.0, 3),
    (4.5, 4),
    (8.0, 4),
    (8.5, 5),
    (1000.0, 5),
]


@pytest.mark.parametrize(
    ("orders", "expected"), QUINTILE_CASES, ids=[f"{v:g}-F{f}" for v, f in QUINTILE_CASES]
)
def test_frequency_quintile_by_edges(orders: float, expected: int) -> None:
    p = params(frequency_edges=F_EDGES, monetary_edges=M_EDGES)
    scores = score(p, inputs_of(1), rfm_rows((1.0, orders, 5.0)), RECENCY)
    assert scores.rfm_codes[0] == 500 + expected * 10 + 1


@pytest.mark.parametrize(
    ("spend", "expected"),
    [(v * 10.0, m) for v, m in QUINTILE_CASES],  # M_EDGES are F_EDGES x 10
    ids=[f"{v * 10:g}-M{m}" for v, m in QUINTILE_CASES],
)
def test_monetary_quintile_by_edges(spend: float, expected: int) -> None:
    p = params(frequency_edges=F_EDGES, monetary_edges=M_EDGES)
    scores = score(p, inputs_of(1), rfm_rows((1.0, 1.0, spend)), RECENCY)
    assert scores.rfm_codes[0] == 500 + 10 + expected


def test_a_non_buyer_has_f_and_m_of_one() -> None:
    # Edges below zero would put a zero at the top quintile: only the "bought" mask keeps it at 1.
    low = np.array([-4.0, -3.0, -2.0, -1.0])
    p = params(frequency_edges=low, monetary_edges=low)
    scores = score(p, inputs_of(2), rfm_rows((1.0, 0.0, 0.0), (1.0, 3.0, 3.0)), RECENCY)
    assert scores.rfm_codes.tolist() == [511, 555]
    assert scores.rfm == ["New", "Champions"]


def test_before_the_quantiles_are_learned_every_user_has_f_and_m_of_one() -> None:
    scores = score(
        cold_params(NAMES),
        inputs_of(3),
        rfm_rows((1.0, 50.0, 9e4), (20.0, 3.0, 9.0), (1, 0, 0)),
        RECENCY,
    )
    assert scores.rfm_codes.tolist() == [511, 311, 511]


def every_rfm() -> tuple[list[tuple[int, int, int]], npt.NDArray[np.float64]]:
    combos = [(r, f, m) for r in range(1, 6) for f in range(1, 6) for m in range(1, 6)]
    values = rfm_rows(*[(DAYS_FOR_R[r], ORDERS_FOR_F[f], SPEND_FOR_M[m]) for r, f, m in combos])
    return combos, values


def test_names_follow_the_grid_by_r_and_the_rounded_mean_of_f_and_m() -> None:
    combos, values = every_rfm()
    p = params(frequency_edges=F_EDGES, monetary_edges=M_EDGES)
    scores = score(p, inputs_of(len(combos)), values, RECENCY)
    assert scores.rfm_codes.tolist() == [r * 100 + f * 10 + m for r, f, m in combos]
    # (f + m) / 2 rounded half up, in integers: (f + m + 1) // 2.
    assert scores.rfm == [RFM_GRID[r][(f + m + 1) // 2 - 1] for r, f, m in combos]


@pytest.mark.parametrize(
    ("r", "f", "m", "name"),
    [
        (5, 1, 1, "New"),
        (5, 1, 2, "Potential Loyalist"),  # (1 + 2) / 2 = 1.5 rounds up to 2
        (5, 5, 4, "Champions"),
        (4, 1, 1, "Promising"),
        (4, 4, 3, "Loyal"),
        (3, 1, 2, "About to Sleep"),
        (3, 3, 3, "Need Attention"),
        (2, 2, 1, "Hibernating"),
        (2, 3, 4, "At Risk"),
        (2, 5, 5, "Can't Lose"),
        (1, 1, 1, "Lost"),
    ],
    ids=lambda v: str(v).replace(" ", "_").replace("'", "") if isinstance(v, str) else None,
)
def test_hand_picked_segment_names(r: int, f: int, m: int, name: str) -> None:
    p = params(frequency_edges=F_EDGES, monetary_edges=M_EDGES)
    values = rfm_rows((DAYS_FOR_R[r], ORDERS_FOR_F[f], SPEND_FOR_M[m]))
    assert score(p, inputs_of(1), values, RECENCY).rfm == [name]


def test_every_rfm_segment_name_is_reachable() -> None:
    combos, values = every_rfm()
    p = params(frequency_edges=F_EDGES, monetary_edges=M_EDGES)
    reached = set(score(p, inputs_of(len(combos)), values, RECENCY).rfm)
    assert len(RFM_SEGMENTS) == 11
    assert reached == set(RFM_SEGMENTS)
    assert set(RFM_SEGMENTS) <= set(SegmentConfig().playbook)
