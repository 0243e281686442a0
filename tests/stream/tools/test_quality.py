"""Evaluation metrics against scikit-learn and hand-worked cases."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import orjson
import pytest
from sklearn import metrics
from sklearn.decomposition import PCA

from stream.tools.quality import (
    Change,
    Evaluation,
    adjusted_rand_index,
    flapping_rate,
    log_loss,
    normalized_mutual_info,
    overall_purity,
    pca_2d,
    precision_recall_f1,
    purity_per_class,
    roc_auc,
    sizes_over_time,
    transitions,
)

pytestmark = pytest.mark.unit

SEEDS = range(8)


def _random_labelings(seed: int) -> tuple[list[str], list[int]]:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 400))
    truth = [f"persona-{i}" for i in rng.integers(0, int(rng.integers(2, 7)), n)]
    labels = [int(i) for i in rng.integers(0, int(rng.integers(2, 9)), n)]
    return truth, labels


def _outcomes(seed: int, levels: int | None = None) -> tuple[list[int], list[float]]:
    """Outcomes correlated with the scores; `levels` quantises the scores to force ties."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(30, 300))
    p = rng.uniform(0.01, 0.99, n)
    if levels is not None:
        p = np.round(p * levels) / levels
        p = np.clip(p, 0.01, 0.99)
    y = (rng.uniform(size=n) < p).astype(int)
    return y.tolist(), p.tolist()


# --- clustering ------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
def test_ari_matches_sklearn_on_random_labelings(seed: int) -> None:
    truth, labels = _random_labelings(seed)
    expected = metrics.adjusted_rand_score(truth, labels)
    assert adjusted_rand_index(truth, labels) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_nmi_matches_sklearn_on_random_labelings(seed: int) -> None:
    truth, labels = _random_labelings(seed)
    expected = metrics.normalized_mutual_info_score(truth, labels)
    assert normalized_mutual_info(truth, labels) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", SEEDS)
def test_ari_and_nmi_match_sklearn_on_informative_labelings(seed: int) -> None:
    # Random labelings score near zero; this checks the formulas away from zero too.
    rng = np.random.default_rng(seed)
    personas = rng.integers(0, 4, 300)
    noisy = np.where(rng.uniform(size=300) < 0.3, rng.integers(0, 5, 300), personas)
    truth, labels = [f"p{i}" for i in personas], noisy.tolist()
    ari, nmi = adjusted_rand_index(truth, labels), normalized_mutual_info(truth, labels)
    assert 0.2 < ari < 0.95
    assert ari == pytest.approx(metrics.adjusted_rand_score(truth, labels), abs=1e-12)
    assert nmi == pytest.approx(metrics.normalized_mutual_info_score(truth, labels), abs=1e-12)


def test_perfect_and_permuted_labelings_score_one() -> None:
    truth = ["browser", "buyer", "deal-hunter", "buyer", "browser", "deal-hunter", "buyer"]
    same = [0, 1, 2, 1, 0, 2, 1]
    permuted = [7, 3, 5, 3, 7, 5, 3]
    for labels in (same, permuted):
        assert adjusted_rand_index(truth, labels) == pytest.approx(1.0)
        assert normalized_mutual_info(truth, labels) == pytest.approx(1.0)
        assert overall_purity(truth, labels) == 1.0


@pytest.mark.parametrize(
    ("truth", "labels"),
    [
        ([], []),
        (["a"], [0]),
        (["a", "a", "a"], [0, 0, 0]),
        (["a", "a", "a"], [0, 1, 2]),
        (["a", "b", "c"], [0, 0, 0]),
        (["a", "b", "c"], [4, 5, 6]),
        (["a", "a", "b", "b"], [0, 1, 0, 1]),
    ],
)
def test_degenerate_labelings_agree_with_sklearn(truth: list[str], labels: list[int]) -> None:
    assert adjusted_rand_index(truth, labels) == pytest.approx(
        metrics.adjusted_rand_score(truth, labels), abs=1e-12
    )
    assert normalized_mutual_info(truth, labels) == pytest.approx(
        metrics.normalized_mutual_info_score(truth, labels), abs=1e-12
    )


def test_ari_is_negative_for_anti_correlated_labelings() -> None:
    truth, labels = ["a", "a", "b", "b"], [0, 1, 0, 1]
    assert adjusted_rand_index(truth, labels) == pytest.approx(-0.5)


def test_length_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        adjusted_rand_index(["a", "b"], [0])


def test_purity_by_hand() -> None:
    truth = ["a", "a", "a", "b", "b", "c"]
    labels = [0, 0, 1, 1, 1, 2]
    assert purity_per_class(truth, labels) == pytest.approx({"a": 2 / 3, "b": 1.0, "c": 1.0})
    # Cluster 0: majority a (2); cluster 1: majority b (2 of 3); cluster 2: c (1).
    assert overall_purity(truth, labels) == pytest.approx(5 / 6)


def test_purity_of_one_big_cluster_is_the_largest_persona_share() -> None:
    truth = ["a", "a", "a", "b"]
    assert overall_purity(truth, [0, 0, 0, 0]) == pytest.approx(0.75)
    assert purity_per_class(truth, [0, 0, 0, 0]) == {"a": 1.0, "b": 1.0}


def test_purity_of_no_users() -> None:
    assert purity_per_class([], []) == {}
    assert math.isnan(overall_purity([], []))


# --- propensity ------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("levels", [None, 4])
def test_auc_matches_sklearn(seed: int, levels: int | None) -> None:
    y, p = _outcomes(seed, levels)
    assert roc_auc(y, p) == pytest.approx(metrics.roc_auc_score(y, p), abs=1e-12)


def test_auc_averages_ties_by_hand() -> None:
    # Pairs (positive, negative): (.5, .5) half, (.5, .2) won, (.8, .5) won, (.8, .2) won.
    assert roc_auc([0, 1, 0, 1], [0.5, 0.5, 0.2, 0.8]) == pytest.approx(3.5 / 4)
    assert roc_auc([0, 1, 0, 1], [0.3, 0.3, 0.3, 0.3]) == pytest.approx(0.5)
    assert roc_auc([1, 1, 0, 0], [0.1, 0.2, 0.8, 0.9]) == 0.0


def test_auc_with_one_class_is_nan() -> None:
    assert math.isnan(roc_auc([1, 1, 1], [0.2, 0.5, 0.9]))
    assert math.isnan(roc_auc([], []))


def test_outcomes_must_be_binary() -> None:
    with pytest.raises(ValueError, match="0 or 1"):
        roc_auc([0, 2], [0.1, 0.2])
    with pytest.raises(ValueError, match="equal length"):
        log_loss([0, 1], [0.1])


@pytest.mark.parametrize("seed", SEEDS)
def test_log_loss_matches_sklearn(seed: int) -> None:
    y, p = _outcomes(seed)
    assert log_loss(y, p) == pytest.approx(metrics.log_loss(y, p, labels=[0, 1]), rel=1e-12)


def test_log_loss_clips_confident_misses() -> None:
    assert log_loss([1, 0], [0.0, 1.0]) == pytest.approx(-math.log(1e-15), rel=1e-6)
    assert log_loss([1, 0], [1.0, 0.0]) == pytest.approx(0.0, abs=1e-12)
    assert log_loss([1], [0.0], eps=1e-3) == pytest.approx(-math.log(1e-3))
    assert math.isnan(log_loss([], []))


@pytest.mark.parametrize("seed", SEEDS)
def test_precision_recall_f1_match_sklearn(seed: int) -> None:
    y, p = _outcomes(seed)
    predicted = [int(v >= 0.5) for v in p]
    expected = (
        metrics.precision_score(y, predicted, zero_division=0.0),
        metrics.recall_score(y, predicted, zero_division=0.0),
        metrics.f1_score(y, predicted, zero_division=0.0),
    )
    assert precision_recall_f1(y, p) == pytest.approx(expected, abs=1e-12)


def test_precision_recall_f1_by_hand() -> None:
    y = [1, 1, 1, 0, 0]
    p = [0.9, 0.5, 0.2, 0.7, 0.1]  # 0.5 sits on the threshold and counts as positive
    # Predicted positives: 0.9 (hit), 0.5 (hit), 0.7 (false alarm); one positive missed.
    assert precision_recall_f1(y, p) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    assert precision_recall_f1(y, p, threshold=0.8) == pytest.approx((1.0, 1 / 3, 0.5))


def test_precision_recall_f1_undefined_are_zero() -> None:
    assert precision_recall_f1([0, 0], [0.1, 0.2]) == (0.0, 0.0, 0.0)
    assert precision_recall_f1([1, 1], [0.1, 0.2]) == (0.0, 0.0, 0.0)
    assert precision_recall_f1([], []) == (0.0, 0.0, 0.0)


# --- segment changes -------------------------------------------------------------------------


def test_transitions_count_first_assignments_as_new() -> None:
    changes = [
        Change("u1", 0, None, "browser"),
        Change("u2", 1, None, "browser"),
        Change("u1", 5, "browser", "buyer"),
        Change("u2", 6, "browser", "buyer"),
        Change("u1", 9, "buyer", "browser"),
    ]
    assert transitions(iter(changes)) == {
        ("(new)", "browser"): 2,
        ("browser", "buyer"): 2,
        ("buyer", "browser"): 1,
    }
    assert transitions([]) == {}


def test_flapping_counts_reversals_inside_the_window_only() -> None:
    changes = [
        # u1 flaps: browser -> buyer, back 400 ms later (inside a 1 s window).
        Change("u1", 0, None, "browser"),
        Change("u1", 1_000, "browser", "buyer"),
        Change("u1", 1_400, "buyer", "browser"),
        # u2 reverses too, but 5 s later: outside the window.
        Change("u2", 0, None, "browser"),
        Change("u2", 2_000, "browser", "buyer"),
        Change("u2", 7_000, "buyer", "browser"),
    ]
    # Four moves with a previous segment; one of them (u1 at 1000) is reversed in time.
    assert flapping_rate(changes, window_ms=1_000) == pytest.approx(1 / 4)
    assert flapping_rate(changes, window_ms=10_000) == pytest.approx(2 / 4)


def test_flapping_window_is_inclusive_and_order_of_input_does_not_matter() -> None:
    changes = [
        Change("u1", 1_500, "b", "a"),
        Change("u1", 500, "a", "b"),
    ]
    assert flapping_rate(changes, window_ms=1_000) == pytest.approx(0.5)
    assert flapping_rate(changes, window_ms=999) == 0.0


def test_a_first_assignment_is_not_a_flap() -> None:
    # None -> a then a -> b: the first change has nothing to flap back to, the second is kept.
    changes = [Change("u1", 0, None, "a"), Change("u1", 10, "a", "b")]
    assert flapping_rate(changes, window_ms=1_000) == 0.0
    assert flapping_rate([Change("u1", 0, None, "a")], window_ms=1_000) == 0.0
    assert flapping_rate([], window_ms=1_000) == 0.0


def test_moving_on_is_not_a_flap() -> None:
    # a -> b -> c: the move away from b goes elsewhere, not back to a.
    changes = [Change("u1", 0, "a", "b"), Change("u1", 10, "b", "c")]
    assert flapping_rate(changes, window_ms=1_000) == 0.0


def test_sizes_over_time_by_hand() -> None:
    changes = [
        Change("u2", 5, None, "a"),
        Change("u1", 0, None, "a"),
        Change("u1", 12, "a", "b"),
        Change("u2", 25, "a", "c"),
    ]
    times, series = sizes_over_time(changes, step_ms=10)
    assert times == [0, 10, 20, 25]
    assert series == {"a": [1, 2, 1, 0], "b": [0, 0, 1, 1], "c": [0, 0, 0, 1]}


def test_sizes_over_time_does_not_repeat_a_last_sample_on_the_grid() -> None:
    changes = [Change("u1", 100, None, "a"), Change("u2", 120, None, "b")]
    times, series = sizes_over_time(changes, step_ms=10)
    assert times == [100, 110, 120]
    assert series == {"a": [1, 1, 1], "b": [0, 0, 1]}


def test_sizes_over_time_edges() -> None:
    assert sizes_over_time([], step_ms=10) == ([], {})
    assert sizes_over_time([Change("u1", 7, None, "a")], step_ms=10) == ([7], {"a": [1]})
    with pytest.raises(ValueError, match="positive"):
        sizes_over_time([Change("u1", 7, None, "a")], step_ms=0)


# --- projection ------------------------------------------------------------------------------


def test_pca_matches_sklearn_up_to_sign() -> None:
    rng = np.random.default_rng(3)
    z = rng.normal(size=(200, 6)) @ rng.normal(size=(6, 6))
    ours, theirs = pca_2d(z), PCA(n_components=2).fit_transform(z)
    assert ours.shape == (200, 2)
    for column in range(2):
        sign = np.sign(ours[:, column] @ theirs[:, column])
        np.testing.assert_allclose(ours[:, column], sign * theirs[:, column], atol=1e-9)
    assert ours[:, 0].var() >= ours[:, 1].var()


@pytest.mark.parametrize(
    ("z", "rows"),
    [
        (np.zeros((0, 4)), 0),
        (np.array([[1.0, 2.0, 3.0]]), 1),
        (np.full((5, 3), 7.5), 5),
        (np.zeros((3, 0)), 3),
    ],
)
def test_pca_degenerate_inputs_give_zeros(z: npt.NDArray[np.float64], rows: int) -> None:
    out = pca_2d(z)
    assert out.shape == (rows, 2)
    assert not out.any()


def test_pca_with_one_feature_fills_the_first_component() -> None:
    out = pca_2d(np.array([[1.0], [2.0], [6.0]]))
    np.testing.assert_allclose(np.abs(out[:, 0]), [2.0, 1.0, 3.0])
    assert not out[:, 1].any()


def test_pca_rejects_one_dimensional_input() -> None:
    with pytest.raises(ValueError, match="2-D"):
        pca_2d(np.array([1.0, 2.0]))


# --- summary ---------------------------------------------------------------------------------


def _evaluation() -> Evaluation:
    return Evaluation(
        users=3,
        events=40,
        clustered=3,
        ari=0.123456,
        nmi=float("nan"),
        purity={"buyer": 2 / 3},
        overall_purity=0.5,
        cluster_sizes={1: 1, 0: 2},
        cluster_labels={0: "frequent buyers", 1: "window shoppers"},
        persona_by_cluster={0: {"buyer": 2}, 1: {"browser": 1}},
        propensity={"auc": float("nan"), "log_loss": float("inf"), "positives": 2.0},
        segment_sizes={"buyer": 2},
        changes=4,
        flapping_rate=0.25,
        transitions={("(new)", "buyer"): 2, ("buyer", "browser"): 3},
        sizes_times=[0, 10],
        sizes_series={"buyer": [1, 2]},
        projection=np.zeros((3, 2)),
        projection_clusters=[0, 0, 1],
        settings={"learn_rate": 0.05, "k": np.int64(4), "window": (1, 2.123456)},
    )


def test_as_dict_is_json_safe_and_rounded() -> None:
    data = _evaluation().as_dict()
    assert data["ari"] == 0.1235
    assert data["nmi"] is None
    assert data["purity"] == {"buyer": 0.6667}
    assert data["propensity"] == {"auc": None, "log_loss": None, "positives": 2.0}
    assert data["cluster_sizes"] == {"0": 2, "1": 1}
    assert list(data["cluster_sizes"]) == ["0", "1"]
    assert data["persona_by_cluster"] == {"0": {"buyer": 2}, "1": {"browser": 1}}
    assert data["transitions"] == [
        {"from": "buyer", "to": "browser", "count": 3},
        {"from": "(new)", "to": "buyer", "count": 2},
    ]
    assert data["settings"] == {"learn_rate": 0.05, "k": 4, "window": [1, 2.1235]}
    assert "projection" not in data
    assert "projection_clusters" not in data
    # orjson without OPT_NON_STR_KEYS rejects int keys: the summary must not need it.
    assert orjson.loads(orjson.dumps(data)) == data
