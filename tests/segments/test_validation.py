"""The live propensity quality (counts only, O(1) per label) against the exact figures."""

from __future__ import annotations

import math
import random

import pytest
from sklearn.metrics import log_loss, roc_auc_score

from segments.validation import BINS, LiveQuality

pytestmark = pytest.mark.unit


def labelled(n: int, seed: int) -> tuple[list[int], list[float]]:
    """Scores that tell the outcomes apart, but not perfectly."""
    rng = random.Random(seed)
    bought = [int(rng.random() < 0.3) for _ in range(n)]
    # Inside (0, 1): at 0 and 1 only the clipping constant of the log loss would be compared.
    scores = [min(max(rng.gauss(0.35 + 0.3 * b, 0.2), 0.01), 0.99) for b in bought]
    return bought, scores


def test_the_binned_auc_is_the_exact_one_within_a_bin() -> None:
    bought, scores = labelled(5_000, seed=3)
    live = LiveQuality()
    for b, p in zip(bought, scores, strict=True):
        live.update(bool(b), p)
    assert live.roc_auc() == pytest.approx(roc_auc_score(bought, scores), abs=1 / BINS)
    assert live.mean_log_loss() == pytest.approx(log_loss(bought, scores), rel=1e-9)


def test_scores_given_before_the_classifier_was_ready_are_not_counted() -> None:
    live = LiveQuality()
    live.update(True, -1.0)
    live.update(False, 0.2)
    assert live.labels == 1
    assert not live.both_outcomes()
    assert math.isnan(live.roc_auc())
