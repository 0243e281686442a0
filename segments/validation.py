"""Progressive validation of the propensity: each score was given before its label was known,
so these figures are what the model achieves on data it had not learned from."""

from __future__ import annotations

from river import metrics


class LiveQuality:
    def __init__(self) -> None:
        self.auc = metrics.ROCAUC()
        self.log_loss = metrics.LogLoss()
        self.precision = metrics.Precision()
        self.recall = metrics.Recall()
        self.f1 = metrics.F1()
        self.labels = 0
        self.positives = 0

    def update(self, bought: bool, propensity: float) -> None:
        """One resolved snapshot; a snapshot taken before the classifier was ready (< 0) is not
        a prediction and is skipped."""
        if propensity < 0:
            return
        self.auc.update(bought, {True: propensity, False: 1.0 - propensity})
        self.log_loss.update(bought, {True: propensity, False: 1.0 - propensity})
        predicted = propensity >= 0.5
        for metric in (self.precision, self.recall, self.f1):
            metric.update(bought, predicted)
        self.labels += 1
        self.positives += bought

    def both_outcomes(self) -> bool:
        """ROC AUC means something only once both outcomes were seen."""
        return 0 < self.positives < self.labels

    def roc_auc(self) -> float:
        return float(self.auc.get())

    def mean_log_loss(self) -> float:
        return float(self.log_loss.get())

    def as_dict(self) -> dict[str, float | int]:
        return {
            "labels": self.labels,
            "roc_auc": round(self.auc.get(), 4),
            "log_loss": round(self.log_loss.get(), 4),
            "precision": round(self.precision.get(), 4),
            "recall": round(self.recall.get(), 4),
            "f1": round(self.f1.get(), 4),
        }
