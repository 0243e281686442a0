"""Outliers: users far from every dense region of the population, as DBSCAN's noise points.

At each version the trainer summarises its population (the latest inputs of recently scored
users, standardized) as micro-clusters, as DenStream and DBSTREAM do online: `MICRO` centres
from a few Lloyd steps. A micro-cluster is dense when it holds at least `DENSE_SHARE` of an
even share of the population; its edge is the `quantile` of its own members' distances to its
centre. A user outside the edge of every dense micro-cluster is an outlier: their cluster is
still the nearest centre, but they are marked so that nothing treats them as typical of it.

Outliers are judged on how users behave, not on when: the clock features (tenure, days since
last seen or bought) move for every user as event time passes, so a version even a few days
older than the events it scores (a replay learns and publishes slower than it reads) marked
every user newer or longer away than its population as an outlier. On a replay of 1,000 users
over 40 days, 23% of the scorings were outliers with them and 3.5% without; on 5,000 over 60
days, 6.7% and 1.5% (each batch's share noted per version in a replay through the step).

Why not river's DBSTREAM or DenStream in the trainer: they learn one sample at a time in
Python (the trainer learns up to 5,000 a second) and answer "nearest micro-cluster" for every
point, where a batch summary of the population costs milliseconds per version and scores a
whole batch with one matrix product (`is_outlier`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
import numpy.typing as npt

from segments.clusterers import squared_distances

Floats = npt.NDArray[np.float64]

MICRO: Final = 64
# Users the summary is drawn from: a sample of the population (the whole 10,000 took 58 ms a
# version, 4,000 take about 10).
SAMPLE: Final = 4_000
# Users per micro-cluster on average: fewer micro-clusters for a small population, so that an
# edge is a quantile of enough members (with 15 a micro-cluster, 15% of 1,000 users were
# outliers; with 30, 2% of 1,000 and 1.7% of 3,000).
MEMBERS: Final = 30
# Members a micro-cluster needs to be dense at all.
MIN_MEMBERS: Final = 5
DENSE_SHARE: Final = 0.25
LLOYD_STEPS: Final = 6
SEED: Final = 7
# The least spread a feature is judged with, in the model's input units (log-scaled counts
# and rates: 0.25 is about a 28% difference). A feature few users differ on (the mean rating
# while few have reviewed: a standard deviation of 0.025 in one version) would otherwise make
# one review a far outlier.
MIN_SCALE: Final = 0.25
CLOCK_FEATURES: Final = frozenset({"tenure_days", "days_since_last_seen", "recency_days"})


@dataclass(frozen=True)
class Density:
    """Dense micro-clusters in the standardized space of the version's centres, with the
    squared distance of each one's edge."""

    centers: Floats = field(default_factory=lambda: np.zeros((0, 0)))
    edges: Floats = field(default_factory=lambda: np.zeros(0))
    # Per feature, what the standardized inputs are multiplied by: at most 1, less for a
    # feature whose scale is below MIN_SCALE, 0 for a clock feature.
    shrink: Floats = field(default_factory=lambda: np.ones(0))

    @property
    def ready(self) -> bool:
        return len(self.edges) > 0

    def is_outlier(self, z: Floats) -> npt.NDArray[np.bool_]:
        """Per standardized row, whether it lies outside every dense micro-cluster's edge."""
        if not self.ready or not len(z):
            return np.zeros(len(z), dtype=bool)
        inside = squared_distances(z * self.shrink, self.centers) <= self.edges
        return np.logical_not(inside.any(axis=1))


def summarise(z: Floats, scale: Floats, names: Sequence[str], quantile: float) -> Density:
    """Dense micro-clusters of a population standardized by `scale` (empty when it is too
    small)."""
    rng = np.random.default_rng(SEED)
    if len(z) > SAMPLE:
        z = z[rng.choice(len(z), size=SAMPLE, replace=False)]
    shrink = scale / np.maximum(scale, MIN_SCALE)
    shrink[[name in CLOCK_FEATURES for name in names]] = 0.0
    z = z * shrink
    count = min(MICRO, len(z) // MEMBERS)
    if count < 2:
        return Density()
    centers = z[rng.choice(len(z), size=count, replace=False)]
    for _ in range(LLOYD_STEPS):
        nearest = squared_distances(z, centers).argmin(axis=1)
        sizes = np.bincount(nearest, minlength=count)
        sums = np.stack([np.bincount(nearest, z[:, j], count) for j in range(z.shape[1])], 1)
        kept = sizes > 0  # a centre nobody is nearest to stays where it is
        centers[kept] = sums[kept] / sizes[kept, None]
    distances = squared_distances(z, centers)
    nearest = distances.argmin(axis=1)
    reach = distances[np.arange(len(z)), nearest]
    sizes = np.bincount(nearest, minlength=count)
    dense = sizes >= max(MIN_MEMBERS, DENSE_SHARE * len(z) / count)
    edges = np.array(
        [np.quantile(reach[nearest == row], quantile) for row in np.flatnonzero(dense)]
    )
    return Density(centers[dense].copy(), edges, shrink)
