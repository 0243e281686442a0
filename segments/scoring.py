"""Vectorized scoring of a batch of users with one frozen model version.

river costs 50-125 µs per user per model; here a batch is one matrix: transform, standardize,
squared distances to every centre (one matmul), a dot product for the propensity, and RFM
scores by `searchsorted`. Only a non-linear classifier (Hoeffding tree) falls back to river
one user at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from segments.clusterers import squared_distances

if TYPE_CHECKING:
    from segments.crosssell import RuleTable
    from segments.density import Density
    from segments.hierarchy import Hierarchy
    from segments.spend import SpendParams

Floats = npt.NDArray[np.float64]
Ints = npt.NDArray[np.int64]

# R by recency (row, 5 = most recent) and the mean of F and M (column, 1..5).
RFM_GRID: Final = {
    5: ("New", "Potential Loyalist", "Potential Loyalist", "Champions", "Champions"),
    4: ("Promising", "Potential Loyalist", "Potential Loyalist", "Loyal", "Champions"),
    3: ("About to Sleep", "About to Sleep", "Need Attention", "Loyal", "Loyal"),
    2: ("Hibernating", "Hibernating", "At Risk", "At Risk", "Can't Lose"),
    1: ("Lost", "Lost", "At Risk", "Can't Lose", "Can't Lose"),
}
Z_CLIP: Final = 4.0
RFM_SEGMENTS: Final = tuple(dict.fromkeys(name for row in RFM_GRID.values() for name in row))


@dataclass(frozen=True)
class Params:
    """One model version as arrays: everything scoring reads, nothing it learns."""

    version: int
    names: tuple[str, ...]
    mean: Floats
    scale: Floats
    centers: Floats  # (k, d), standardized space
    cluster_ids: Ints  # stable id of each centre row
    cluster_labels: tuple[str, ...]
    # The propensity classifier scales inputs with statistics of its own (those of the labels it
    # learned) and sees them clipped to +-Z_CLIP deviations.
    propensity_mean: Floats
    propensity_scale: Floats
    weights: Floats
    intercept: float
    classifier: Any  # a river classifier when not linear, else None
    propensity_ready: bool
    frequency_edges: Floats  # quantiles of orders among buyers (empty: not learned yet)
    monetary_edges: Floats
    # Counts the placements of the clusters (`segments.model.PLACEMENT_SHARE`); a higher one
    # tells the service to bring every user's cluster up to date (`stream.service.sweep`).
    # Snapshots stored before it was counted read 0.
    placement: int = 0
    # Parent groups of the clusters, dense regions (outliers lie outside them), the spend
    # regressor and the cross-sell rules; None in snapshots stored before them.
    hierarchy: Hierarchy | None = None
    density: Density | None = None
    spend: SpendParams | None = None
    rules: RuleTable | None = None

    @property
    def clusters_ready(self) -> bool:
        return len(self.centers) > 0

    def non_finite(self) -> list[str]:
        """The arrays holding NaN or an infinity where none may be (a feature the propensity
        learned as constant has an infinite scale, on purpose)."""
        arrays = {
            "mean": self.mean,
            "scale": self.scale,
            "centers": self.centers,
            "propensity_mean": self.propensity_mean,
            "weights": self.weights,
            "intercept": np.array([self.intercept]),
            "frequency_edges": self.frequency_edges,
            "monetary_edges": self.monetary_edges,
        }
        if self.density is not None:
            arrays |= {"density.centers": self.density.centers, "density.edges": self.density.edges}
        if self.spend is not None:
            arrays |= {"spend.weights": self.spend.weights}
        bad = [name for name, values in arrays.items() if not np.isfinite(values).all()]
        if np.isnan(self.propensity_scale).any():
            bad.append("propensity_scale")
        return bad

    def standardize(self, inputs: Floats) -> Floats:
        """Model inputs in the space of the centres."""
        z: Floats = (inputs - self.mean) / self.scale
        return z

    def label_of(self, cluster: int) -> str:
        rows = np.flatnonzero(self.cluster_ids == cluster)
        return self.cluster_labels[rows[0]] if len(rows) else ""


def cold_params(names: tuple[str, ...]) -> Params:
    """Before any snapshot: no clusters, no propensity, RFM from recency only."""
    d = len(names)
    return Params(
        version=0,
        names=names,
        mean=np.zeros(d),
        scale=np.ones(d),
        centers=np.zeros((0, d)),
        cluster_ids=np.zeros(0, dtype=np.int64),
        cluster_labels=(),
        propensity_mean=np.zeros(d),
        propensity_scale=np.ones(d),
        weights=np.zeros(d),
        intercept=0.0,
        classifier=None,
        propensity_ready=False,
        frequency_edges=np.zeros(0),
        monetary_edges=np.zeros(0),
    )


@dataclass
class Scores:
    standardized: Floats  # (n, d)
    distances: Floats  # (n, k) squared, to each centre row
    nearest: Ints  # row of the nearest centre (-1 when there are no clusters)
    propensity: Floats  # nan when the classifier is not ready
    rfm: list[str]
    rfm_codes: Ints  # R*100 + F*10 + M


def score(
    params: Params,
    inputs: Floats,
    rfm_values: Floats,
    recency_days: tuple[float, ...],
) -> Scores:
    """`inputs`: (n, d) transformed model inputs; `rfm_values`: (n, 3) days since last seen,
    orders, spend."""
    z = params.standardize(inputs)
    n = len(inputs)
    if params.clusters_ready and n:
        distances = squared_distances(z, params.centers)
        nearest = distances.argmin(axis=1).astype(np.int64)
    else:
        distances = np.zeros((n, 0))
        nearest = np.full(n, -1, dtype=np.int64)
    codes, names = rfm(params, rfm_values, recency_days)
    return Scores(z, distances, nearest, _propensity(params, inputs), names, codes)


def clipped(inputs: Floats, mean: Floats, scale: Floats) -> Floats:
    """Standardized and clipped to +-Z_CLIP: a value far outside what a model learned from
    (a new stream's features keep growing; a hostile one can be anything) moves it no further
    than the edge of what it knows."""
    z: Floats = np.clip((inputs - mean) / scale, -Z_CLIP, Z_CLIP)
    return z


def _propensity(params: Params, inputs: Floats) -> Floats:
    if not params.propensity_ready:
        return np.full(len(inputs), np.nan)
    z = clipped(inputs, params.propensity_mean, params.propensity_scale)
    if params.classifier is None:
        margin = np.clip(z @ params.weights + params.intercept, -30.0, 30.0)
        return 1.0 / (1.0 + np.exp(-margin))
    names = params.names
    rows = ({n: float(v) for n, v in zip(names, row, strict=True)} for row in z)
    return np.array([params.classifier.predict_proba_one(x).get(True, 0.0) for x in rows])


def rfm(params: Params, values: Floats, recency_days: tuple[float, ...]) -> tuple[Ints, list[str]]:
    """RFM scores 1..5 and segment names; a user who never bought has F = M = 1."""
    r = 5 - np.searchsorted(np.asarray(recency_days), values[:, 0], side="right")
    r = np.clip(r, 1, 5)
    f = _quintile(values[:, 1], params.frequency_edges)
    m = _quintile(values[:, 2], params.monetary_edges)
    fm = np.clip(np.floor((f + m) / 2.0 + 0.5), 1, 5).astype(np.int64)
    names = [RFM_GRID[int(a)][int(b) - 1] for a, b in zip(r, fm, strict=True)]
    return (r * 100 + f * 10 + m).astype(np.int64), names


def _quintile(values: Floats, edges: Floats) -> Ints:
    bought = values > 0
    if not len(edges):
        return np.ones(len(values), dtype=np.int64)
    scores = 1 + np.searchsorted(edges, values, side="left")
    return np.where(bought, np.clip(scores, 1, 5), 1).astype(np.int64)
