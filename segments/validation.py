"""Progressive validation of the propensity: each score was given before its label was known,
so these figures are what the model achieves on data it had not learned from.

Counts only, O(1) per label: ROC AUC from histograms of the scores of each outcome (a pair in
the same bin counts as a tie, so the figure is exact to 1/BINS of a score), log loss and the
confusion at the 0.5 threshold from running sums.
"""

from __future__ import annotations

import math
from typing import Final

BINS: Final = 1_000
EPS: Final = 1e-15


class LiveQuality:
    def __init__(self) -> None:
        self._bins = {True: [0] * BINS, False: [0] * BINS}
        self.labels = 0
        self.positives = 0
        self._loss = 0.0
        self._predicted = 0  # scores at or above 0.5
        self._hits = 0  # of which bought

    def update(self, bought: bool, propensity: float) -> None:
        """One resolved snapshot; a snapshot taken before the classifier was ready (< 0) is not
        a prediction and is skipped."""
        if not 0.0 <= propensity <= 1.0:
            return
        self._bins[bought][min(int(propensity * BINS), BINS - 1)] += 1
        observed = propensity if bought else 1.0 - propensity
        self._loss -= math.log(min(max(observed, EPS), 1.0 - EPS))
        predicted = propensity >= 0.5
        self._predicted += predicted
        self._hits += predicted and bought
        self.labels += 1
        self.positives += bought

    def both_outcomes(self) -> bool:
        """ROC AUC means something only once both outcomes were seen."""
        return 0 < self.positives < self.labels

    def roc_auc(self) -> float:
        """P(a bought score > a not-bought score), ties counted half; nan with one outcome."""
        if not self.both_outcomes():
            return math.nan
        below = 0  # negatives in lower bins so far
        wins = 0.0
        for pos, neg in zip(self._bins[True], self._bins[False], strict=True):
            wins += pos * (below + neg / 2)
            below += neg
        return wins / (self.positives * (self.labels - self.positives))

    def mean_log_loss(self) -> float:
        return self._loss / self.labels if self.labels else math.nan

    def as_dict(self) -> dict[str, float | int]:
        precision = self._hits / self._predicted if self._predicted else 0.0
        recall = self._hits / self.positives if self.positives else 0.0
        either = self._predicted + self.positives
        f1 = 2 * self._hits / either if either else 0.0
        return {
            "labels": self.labels,
            "roc_auc": round(self.roc_auc(), 4),
            "log_loss": round(self.mean_log_loss(), 4),
            "precision": round(precision, 4),
            "recall": round(recall, 4),
            "f1": round(f1, 4),
        }
