"""The clusterers behind one protocol, and the centres that vectorized scoring uses.

Scoring never calls `predict_one` on the hot path: it assigns the nearest of `centers()` for a
whole batch at once. `kmeans` (the default) is k-means over the trainer's population of recently
scored users (`segments.population`): seeded by k-means++ once `warmup` users are known, then
refit by Lloyd steps from its current centres at every snapshot, so each centre keeps its place
while the users move. River's online KMeans moves a centre by a fixed share of each sample,
which made the centres follow the last few dozen samples; and seeded at random it left most
centres empty here. The other clusterers are river's, learning online one sample at a time.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from river import cluster

from segments.config import SegmentConfig

Vector = dict[str, float]
LLOYD_STEPS = 100
# Fresh k-means++ fits are tried at every refit on a sample of this many rows, and the best of
# them competes with the current centres. One fit in three reached the best placement of a
# demo's population (100 tries); with one a refit, the last versions of one demo run all
# missed it and kept centres 1.6% worse in inertia that matched the personas with ARI 0.54
# against 0.62. Three a refit cost about 50 ms on 4,000 rows.
EXPLORE_ROWS = 4_000
EXPLORE_TRIES = 3
# How much lower a fresh fit's inertia must be to replace the current centres, so that near
# ties do not move the centres between versions. Small: on 20,000 generated users a placement
# 1.9% worse in inertia matched the personas with ARI 0.67 against 0.88.
RESTART_GAIN = 0.995


class Segmenter(Protocol):
    """A clusterer over standardized feature vectors."""

    # Whether it learns from every sample (`learn_one`) or only from the population (`refit`).
    online: bool

    @property
    def seeded(self) -> bool: ...

    def learn_one(self, x: Vector) -> None: ...

    def refit(self, rows: npt.NDArray[np.float64]) -> None:
        """Learn from the population: standardized rows in the order of the feature names."""
        ...

    def centers(self) -> dict[int, Vector]:
        """Current centres by the clusterer's own ids; empty before it can assign anyone."""
        ...


def make_segmenter(config: SegmentConfig) -> Segmenter:
    if config.clusterer == "kmeans":
        return PopulationKMeans(config)
    return RiverSegmenter(config)


class PopulationKMeans:
    """k-means over a population: no centres until `warmup` rows, k-means++ seeds, then Lloyd
    steps from the current centres at each refit. `learn_one` keeps a bounded buffer of the
    latest rows and refits on it whenever the rows seen have doubled, for use without a
    population."""

    online = False

    def __init__(self, config: SegmentConfig) -> None:
        self._names = config.features
        self._k = config.k
        self._warmup = config.warmup
        self._size = config.population
        self._rng = np.random.default_rng(config.seed)
        self._centers = np.zeros((0, len(self._names)))
        self._buffer: list[list[float]] = []
        self._seen = 0
        self._next_refit = config.warmup

    @property
    def seeded(self) -> bool:
        return len(self._centers) > 0

    def learn_one(self, x: Vector) -> None:
        self._buffer.append([x.get(n, 0.0) for n in self._names])
        if len(self._buffer) > self._size:
            del self._buffer[: len(self._buffer) - self._size]
        self._seen += 1
        if self._seen >= self._next_refit:
            self.refit(np.array(self._buffer))
            # Refits when the rows seen double, on the latest `population` of them.
            self._next_refit = 2 * self._seen

    def refit(self, rows: npt.NDArray[np.float64]) -> None:
        """Lloyd steps from the current centres, then a fresh k-means++ fit, which replaces
        them if its inertia is clearly lower: early centres were placed among young users, and
        Lloyd steps alone would keep them in that local optimum as the users mature."""
        if len(rows) < max(self._warmup if not self.seeded else 0, self._k):
            return
        if not self.seeded:
            self._centers = _kmeans(rows, self._k, self._rng)
        self._centers = lloyd(rows, self._centers, self._rng)
        # The candidate is fit on a sample and must win there before it is finished on every
        # row, where it must win again (most candidates lose on the sample: a few ms each).
        sample = rows[self._rng.permutation(len(rows))[:EXPLORE_ROWS]]
        fits = (_kmeans(sample, self._k, self._rng) for _ in range(EXPLORE_TRIES))
        fresh = min(fits, key=lambda fit: _inertia(sample, fit))
        if _inertia(sample, fresh) >= RESTART_GAIN * _inertia(sample, self._centers):
            return
        fresh = lloyd(rows, fresh, self._rng)
        if _inertia(rows, fresh) < RESTART_GAIN * _inertia(rows, self._centers):
            self._centers = fresh

    def centers(self) -> dict[int, Vector]:
        names = self._names
        rows = enumerate(self._centers.tolist())
        return {i: dict(zip(names, row, strict=True)) for i, row in rows}


class RiverSegmenter:
    """Adapts one river clusterer: warm-up, cold start, centres for vectorized scoring."""

    online = True

    def __init__(self, config: SegmentConfig) -> None:
        self._name = config.clusterer
        self._names = config.features
        self._k = config.k
        self._warmup = config.warmup
        self._rng = np.random.default_rng(config.seed)
        self._model = _make(config)
        self._buffer: list[Vector] = []
        self._seeded = False
        self._probe: Vector | None = None

    def learn_one(self, x: Vector) -> None:
        # A missing input is the mean (0 once standardized); some clusterers fail on a key
        # that appears only later.
        x = {n: x.get(n, 0.0) for n in self._names}
        if self._seeded:
            self._model.learn_one(x)
            return
        self._buffer.append(dict(x))
        if len(self._buffer) >= self._warmup:
            self._seed(self._buffer)
            self._buffer = []
            self._seeded = True

    def centers(self) -> dict[int, Vector]:
        if not self._seeded:
            return {}
        model = self._model
        if self._name in ("clustream", "denstream") and self._probe is not None:
            # Both build their macro clusters lazily, on a prediction; on a copy, so asking
            # for centres never changes what the model learns next.
            model = copy.deepcopy(model)
            with contextlib.suppress(Exception):
                model.predict_one(self._probe)
        centers: dict[int, Any] = getattr(model, "centers", {}) or {}
        found = {int(i): {str(f): float(v) for f, v in c.items()} for i, c in centers.items()}
        # STREAMKMeans lists its centres empty until its first chunk is clustered.
        return {} if any(not c for c in found.values()) else found

    @property
    def seeded(self) -> bool:
        return self._seeded

    def refit(self, rows: npt.NDArray[np.float64]) -> None:
        """River's clusterers learn online only."""

    def _seed(self, samples: list[Vector]) -> None:
        self._probe = samples[-1]
        for x in samples:
            self._model.learn_one(x)


def _make(config: SegmentConfig) -> Any:
    k, seed = config.k, config.seed
    if config.clusterer == "streamkmeans":
        return cluster.STREAMKMeans(chunk_size=max(k * 10, 50), n_clusters=k, seed=seed)
    if config.clusterer == "clustream":
        return cluster.CluStream(n_macro_clusters=k, max_micro_clusters=k * 10, seed=seed)
    if config.clusterer == "dbstream":
        return cluster.DBSTREAM(clustering_threshold=1.5, fading_factor=0.001)
    # river requires mu * beta > 1; epsilon is a radius in standardized units.
    return cluster.DenStream(n_samples_init=config.warmup, epsilon=3.0, mu=4.0, beta=0.75)


def _kmeans(
    data: npt.NDArray[np.float64], k: int, rng: np.random.Generator
) -> npt.NDArray[np.float64]:
    """Greedy k-means++ seeds (of a few candidates drawn for each centre, the one that leaves
    the least inertia) refined by Lloyd steps."""
    centers = [data[rng.integers(len(data))]]
    closest = squared_distances(data, centers[0][None, :])[:, 0]
    trials = 2 + int(np.log(k))
    for _ in range(1, k):
        total = closest.sum()
        if total <= 0:
            centers.append(data[rng.integers(len(data))])
            continue
        candidates = rng.choice(len(data), size=trials, p=closest / total)
        options = np.minimum(closest[None, :], squared_distances(data, data[candidates]).T)
        best = int(options.sum(axis=1).argmin())
        centers.append(data[candidates[best]])
        closest = options[best]
    return lloyd(data, np.array(centers), rng)


def lloyd(
    data: npt.NDArray[np.float64], centers: npt.NDArray[np.float64], rng: np.random.Generator
) -> npt.NDArray[np.float64]:
    """Lloyd steps from `centers` until the assignment settles (at most LLOYD_STEPS). A centre
    left without members moves to a point far from every centre (k-means++ style), so no
    cluster stays empty while distinct users exist."""
    centers = centers.copy()
    k = len(centers)
    labels = np.full(len(data), -1)
    for _ in range(LLOYD_STEPS):
        distances = squared_distances(data, centers)
        assigned = distances.argmin(axis=1)
        if np.array_equal(assigned, labels):
            break
        nearest = np.take_along_axis(distances, assigned[:, None], axis=1)[:, 0]
        labels = assigned
        members = np.bincount(labels, minlength=k)
        # Sums per cluster as one product with the (k, n) membership matrix.
        sums = (labels[None, :] == np.arange(k)[:, None]).astype(np.float64) @ data
        filled = members > 0
        centers[filled] = sums[filled] / members[filled, None]
        for c in np.flatnonzero(~filled):
            if nearest.sum() > 0:
                pick = rng.choice(len(data), p=nearest / nearest.sum())
                centers[c], nearest[pick] = data[pick], 0.0
    return centers


def _inertia(data: npt.NDArray[np.float64], centers: npt.NDArray[np.float64]) -> float:
    return float(nearest_distances(data, centers).sum())


def squared_distances(
    rows: npt.NDArray[np.float64], centers: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """(n, k) squared euclidean distances, by the expansion |x|² - 2x·c + |c|² (one matmul)."""
    rows_sq = np.einsum("ij,ij->i", rows, rows)[:, None]
    centers_sq = np.einsum("ij,ij->i", centers, centers)[None, :]
    distances: npt.NDArray[np.float64] = np.maximum(
        rows_sq - 2.0 * rows @ centers.T + centers_sq, 0.0
    )
    return distances


def nearest_distances(
    rows: npt.NDArray[np.float64], centers: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    nearest: npt.NDArray[np.float64] = squared_distances(rows, centers).min(axis=1)
    return nearest


def nearest(
    rows: npt.NDArray[np.float64], centers: npt.NDArray[np.float64]
) -> npt.NDArray[np.int64]:
    """The row of the nearest centre for each row."""
    found: npt.NDArray[np.int64] = squared_distances(rows, centers).argmin(axis=1)
    return found


def matrix(centers: dict[int, Vector], names: Sequence[str]) -> npt.NDArray[np.float64]:
    """Centres as rows in the order of `names` (a feature a centre lacks is 0: the mean)."""
    return np.array([[c.get(n, 0.0) for n in names] for c in centers.values()]).reshape(
        len(centers), len(names)
    )
