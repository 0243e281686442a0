"""The river clusterers behind one protocol, and the centres that vectorized scoring uses.

Every clusterer learns from standardized inputs one at a time (river's `learn_one`); scoring
never calls `predict_one` on the hot path but assigns the nearest of `centers()` for a whole
batch at once. `KMeans` is seeded from a warm-up buffer (k-means++ then Lloyd steps) because
river seeds its centres at random and, on these features, left most of them empty.
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
LLOYD_STEPS = 20


class Segmenter(Protocol):
    """A clusterer over standardized feature vectors."""

    def learn_one(self, x: Vector) -> None: ...

    def centers(self) -> dict[int, Vector]:
        """Current centres by the clusterer's own ids; empty before it can assign anyone."""
        ...


class RiverSegmenter:
    """Adapts one river clusterer: warm-up, cold start, centres for vectorized scoring."""

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

    def _seed(self, samples: list[Vector]) -> None:
        self._probe = samples[-1]
        if self._name != "kmeans":
            for x in samples:
                self._model.learn_one(x)
            return
        names = self._names
        data = np.array([[x.get(f, 0.0) for f in names] for x in samples])
        seeded = _kmeans(data, self._k, self._rng)
        for i, row in enumerate(seeded):
            self._model.centers[i] = dict(zip(names, row.tolist(), strict=True))


def _make(config: SegmentConfig) -> Any:
    k, seed = config.k, config.seed
    if config.clusterer == "kmeans":
        return cluster.KMeans(n_clusters=k, halflife=config.halflife, sigma=1.0, seed=seed)
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
    """k-means++ seeds refined by Lloyd steps."""
    centers = [data[rng.integers(len(data))]]
    for _ in range(1, k):
        distances = nearest_distances(data, np.array(centers))
        total = distances.sum()
        pick = rng.choice(len(data), p=distances / total) if total > 0 else rng.integers(len(data))
        centers.append(data[pick])
    seeded = np.array(centers)
    for _ in range(LLOYD_STEPS):
        labels = squared_distances(data, seeded).argmin(axis=1)
        for c in range(k):
            members = data[labels == c]
            if len(members):
                seeded[c] = members.mean(axis=0)
    return seeded


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


def matrix(centers: dict[int, Vector], names: Sequence[str]) -> npt.NDArray[np.float64]:
    """Centres as rows in the order of `names` (a feature a centre lacks is 0: the mean)."""
    return np.array([[c.get(n, 0.0) for n in names] for c in centers.values()]).reshape(
        len(centers), len(names)
    )
