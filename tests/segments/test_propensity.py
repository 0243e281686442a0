"""The purchase propensity refit on a window of the latest labels (`segments.propensity`):
the window, the fit against scikit-learn's, standardization and clipping, and the rare-positive
case that online learners got wrong."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from segments.propensity import PENALTY, WindowedLogistic
from segments.scoring import Z_CLIP

pytestmark = pytest.mark.unit


def labelled(n: int, seed: int, rate: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Outcomes that follow the first two features (the third is noise, the fourth constant)."""
    rng = np.random.default_rng(seed)
    x = np.column_stack([rng.normal(size=(n, 3)), np.full(n, 2.0)])
    margin = 2.0 * x[:, 0] - 1.0 * x[:, 1] + np.log(rate / (1 - rate))
    y = rng.uniform(size=n) < 1 / (1 + np.exp(-margin))
    return x, y


def fitted(x: np.ndarray, y: np.ndarray, size: int = 100_000) -> WindowedLogistic:
    model = WindowedLogistic(size, x.shape[1])
    for row, outcome in zip(x.tolist(), y.tolist(), strict=True):
        model.add(row, outcome)
    model.fit()
    return model


def test_the_window_keeps_the_latest_labels() -> None:
    model = WindowedLogistic(3, 1)
    for i in range(5):
        model.add([float(i)], i % 2 == 0)
    assert len(model) == 3
    assert model.outcomes() == (2, 1)  # labels 2, 3, 4: bought, not, bought


def test_the_fit_is_scikit_learns_penalized_logistic_regression() -> None:
    x, y = labelled(5_000, 1)
    model = fitted(x, y)
    # The same problem: standardized (constant feature out), penalty C = 1 / PENALTY.
    varies = x.std(axis=0) > 0
    z = (x[:, varies] - x[:, varies].mean(axis=0)) / x[:, varies].std(axis=0)
    reference = LogisticRegression(C=1 / PENALTY, tol=1e-10, max_iter=1_000).fit(z, y)
    np.testing.assert_allclose(model.weights[varies], reference.coef_[0], rtol=1e-4, atol=1e-6)
    assert model.intercept == pytest.approx(reference.intercept_[0], rel=1e-4, abs=1e-6)
    assert model.weights[3] == 0.0  # a constant feature teaches nothing
    assert np.isinf(model.scale[3])


def test_scores_rank_and_huge_inputs_stay_at_the_edge() -> None:
    x, y = labelled(5_000, 2)
    model = fitted(x, y)
    test_x, test_y = labelled(2_000, 3)
    z = np.clip((test_x - model.mean) / model.scale, -Z_CLIP, Z_CLIP)
    assert roc_auc_score(test_y, z @ model.weights) > 0.8
    huge = np.clip((np.array([1e12, 0.0, 0.0, 2.0]) - model.mean) / model.scale, -Z_CLIP, Z_CLIP)
    assert huge[0] == Z_CLIP


def test_rare_positives_are_ranked_the_right_way_round() -> None:
    """A purchase log: a few percent positives. The fit must still rank buyers first (river's
    online learners ranked them last on the CDNOW log)."""
    x, y = labelled(50_000, 4, rate=0.01)
    assert 0.01 < y.mean() < 0.1
    model = fitted(x, y, size=50_000)
    assert model.weights[0] > 0 > model.weights[1]
    test_x, test_y = labelled(20_000, 5, rate=0.01)
    z = np.clip((test_x - model.mean) / model.scale, -Z_CLIP, Z_CLIP)
    assert roc_auc_score(test_y, z @ model.weights) > 0.8


def test_one_outcome_only_leaves_the_weights_alone() -> None:
    model = WindowedLogistic(100, 2)
    for i in range(50):
        model.add([float(i), 1.0], False)
    model.fit()
    assert model.weights.tolist() == [0.0, 0.0]
    assert model.intercept == 0.0
