"""The learning side: one model that the trainer updates and snapshots for everyone to score.

`Model` holds river objects (scaler, clusterer, propensity classifier, RFM quantiles) and
learns one sample at a time. `Model.params()` freezes what scoring needs into numpy arrays
(`segments.scoring.Params`), with cluster ids that keep their meaning across versions: each
new set of centres is matched to the previous version's by minimum total distance.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from river import linear_model, optim, preprocessing, stats, tree
from scipy.optimize import linear_sum_assignment

from segments.clusterers import RiverSegmenter, Vector, matrix, squared_distances
from segments.config import SegmentConfig
from segments.scoring import Params

QUANTILES: Final = (0.2, 0.4, 0.6, 0.8)
LABEL_FEATURES: Final = 2
# A feature must stand this many standard deviations from the mean to name a cluster.
LABEL_MIN_Z: Final = 0.3
# Labels the classifier must have learned before its scores mean anything (before, every user
# would score 0.5 and land in the top band).
MIN_LABELS: Final = 50


class Model:
    def __init__(self, config: SegmentConfig) -> None:
        self.config = config
        self.names = config.features
        self.version = 0
        self.learned = 0
        self.labels_learned = 0
        self.scaler = preprocessing.StandardScaler()
        self.segmenter = RiverSegmenter(config)
        self.classifier = _classifier(config)
        self.frequency = [stats.Quantile(q) for q in QUANTILES]
        self.monetary = [stats.Quantile(q) for q in QUANTILES]
        # Stable cluster id by the clusterer's own id, and the centres last published.
        self.stable: dict[int, int] = {}
        self.published: dict[int, npt.NDArray[np.float64]] = {}
        # Every stable id ever given: a cluster that vanished does not lend its id to a new one.
        self.issued: set[int] = set()

    def learn(self, inputs: Sequence[float], frequency: float, monetary: float) -> None:
        """One sampled user: model inputs (transformed, unscaled) and their RFM values."""
        x = dict(zip(self.names, inputs, strict=True))
        self.scaler.learn_one(x)
        self.segmenter.learn_one(self.scaler.transform_one(x))
        if frequency > 0:
            for quantile in self.frequency:
                quantile.update(frequency)
            for quantile in self.monetary:
                quantile.update(monetary)
        self.learned += 1

    def learn_label(self, inputs: Sequence[float], bought: bool) -> None:
        """A resolved snapshot: the inputs at scoring time and whether a purchase followed."""
        x = self.scaler.transform_one(dict(zip(self.names, inputs, strict=True)))
        self.classifier.learn_one(x, bought)
        self.labels_learned += 1

    def params(self) -> Params:
        """Freeze the model for scoring as the next version."""
        self.version += 1
        names = self.names
        mean = np.array([self.scaler.means.get(n, 0.0) for n in names])
        variance = np.array([self.scaler.vars.get(n, 0.0) for n in names])
        scale = np.where(variance > 0, np.sqrt(variance), 1.0)
        ids, centers = self._stable_centers()
        return Params(
            version=self.version,
            names=tuple(names),
            mean=mean,
            scale=scale,
            centers=centers,
            cluster_ids=ids,
            cluster_labels=tuple(_label(c, names) for c in centers),
            weights=self._weights(),
            intercept=self._intercept(),
            classifier=None if self._linear() else copy.deepcopy(self.classifier),
            propensity_ready=self.labels_learned >= MIN_LABELS,
            frequency_edges=_edges(self.frequency),
            monetary_edges=_edges(self.monetary),
        )

    def _stable_centers(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
        current = self.segmenter.centers()
        if not current:
            return np.zeros(0, dtype=np.int64), np.zeros((0, len(self.names)))
        own = list(current)
        centers = matrix(current, self.names)
        self._match(own, centers)
        self.published = {self.stable[i]: centers[row] for row, i in enumerate(own)}
        return np.array([self.stable[i] for i in own], dtype=np.int64), centers

    def _match(self, own: list[int], centers: npt.NDArray[np.float64]) -> None:
        """Give each current centre the stable id of the nearest previously published one."""
        previous = list(self.published)
        self.stable = {}
        if previous:
            old = np.array([self.published[s] for s in previous])
            rows, cols = linear_sum_assignment(squared_distances(centers, old))
            self.stable = {own[r]: previous[c] for r, c in zip(rows, cols, strict=True)}
        self.issued.update(self.stable.values())
        fresh = (s for s in range(len(self.issued) + len(own) + 1) if s not in self.issued)
        for i in own:
            if i not in self.stable:
                self.stable[i] = next(fresh)
                self.issued.add(self.stable[i])

    def _linear(self) -> bool:
        return isinstance(self.classifier, linear_model.LogisticRegression)

    def _weights(self) -> npt.NDArray[np.float64]:
        if not self._linear():
            return np.zeros(len(self.names))
        weights = self.classifier.weights
        return np.array([weights.get(n, 0.0) for n in self.names])

    def _intercept(self) -> float:
        return float(self.classifier.intercept) if self._linear() else 0.0


def _classifier(config: SegmentConfig) -> Any:
    if config.classifier == "hoeffding":
        return tree.HoeffdingTreeClassifier(grace_period=100)
    loss = optim.losses.Hinge() if config.classifier == "svm" else optim.losses.Log()
    return linear_model.LogisticRegression(
        optimizer=optim.SGD(config.learning_rate),
        loss=loss,
        l2=1e-4,
        intercept_lr=config.learning_rate,
    )


def _edges(quantiles: list[stats.Quantile]) -> npt.NDArray[np.float64]:
    values = [q.get() for q in quantiles]
    if any(v is None for v in values):
        return np.zeros(0)
    return np.array(values, dtype=np.float64)


def _label(center: npt.NDArray[np.float64], names: Sequence[str]) -> str:
    """Name a centre by its strongest standardized features: "high spend_total, low sessions"."""
    order = np.argsort(-np.abs(center))[:LABEL_FEATURES]
    parts = [f"{'high' if center[i] > 0 else 'low'} {names[i]}" for i in order]
    parts = [p for p, i in zip(parts, order, strict=True) if abs(center[i]) >= LABEL_MIN_Z]
    return ", ".join(parts) or "average"


__all__ = ["Model", "Vector"]
