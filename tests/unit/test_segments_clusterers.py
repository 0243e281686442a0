"""The clusterers behind `RiverSegmenter`, held to one contract, and the `Model` that wraps them.

Every configured clusterer learns standardized inputs from three well-separated Gaussian blobs in
four named dimensions (means 6 apart, standard deviation 0.5) after a short warm-up; the contract:
no centres before the warm-up, centres that separate the blobs after it, a pickle round trip that
changes nothing, inputs left untouched, and missing features tolerated. The `Model` tests check the
frozen `Params`: cold start, versions, stable cluster ids across versions, and resuming after a
pickle round trip.

Inputs missing features, short warm-ups and vanished clusters are covered too.
"""

from __future__ import annotations

import copy
import math
import pickle
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pytest

from features.columns import numeric_names
from segments.clusterers import RiverSegmenter, Vector, matrix
from segments.config import CLUSTERERS, SegmentConfig
from segments.model import MIN_LABELS, Model
from segments.scoring import Params

pytestmark = pytest.mark.unit

NAMES = ("events_total", "spend_total", "sessions", "view_to_cart")
BLOB_MEANS = np.array(
    [[0.0, 0.0, 0.0, 0.0], [6.0, 6.0, 0.0, 0.0], [0.0, 6.0, 6.0, 6.0]], dtype=np.float64
)
BLOB_SD = 0.5
WARMUP = 100
CENTROID_BASED = ("kmeans", "streamkmeans", "clustream")

# segments/clusterers.py:91 builds river's DenStream with mu=2.0 and beta=0.5; river computes
# log(mu*beta / (mu*beta - 1)) in the constructor and requires mu*beta > 1, so mu*beta == 1
# raises ZeroDivisionError: no "denstream" segmenter (or Model) can be created at all.


def clusterer_params(*names: str) -> list[pytest.ParameterSet]:
    return [pytest.param(n, id=n) for n in names]


def config(clusterer: str, warmup: int = WARMUP) -> SegmentConfig:
    return SegmentConfig(clusterer=clusterer, k=3, warmup=warmup, features=NAMES)


def blobs(n: int, seed: int) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """`n` points drawn from the three blobs at random, with the blob of each."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(len(BLOB_MEANS), size=n)
    points = BLOB_MEANS[labels] + rng.normal(0.0, BLOB_SD, size=(n, len(NAMES)))
    return points, labels.astype(np.int64)


def vectors(points: npt.NDArray[np.float64]) -> Iterator[Vector]:
    for row in points:
        yield {name: float(value) for name, value in zip(NAMES, row, strict=True)}


def trained(clusterer: str, n: int = 1_000, seed: int = 1) -> RiverSegmenter:
    segmenter = RiverSegmenter(config(clusterer))
    points, _ = blobs(n, seed)
    for x in vectors(points):
        segmenter.learn_one(x)
    return segmenter


def nearest_ids(
    centers: dict[int, Vector], points: npt.NDArray[np.float64]
) -> npt.NDArray[np.int64]:
    """The clusterer's id of the nearest centre of every point (brute force)."""
    ids = np.array(list(centers), dtype=np.int64)
    rows = matrix(centers, NAMES)
    distances = ((points[:, None, :] - rows[None, :, :]) ** 2).sum(axis=2)
    nearest: npt.NDArray[np.int64] = ids[distances.argmin(axis=1)]
    return nearest


def assert_well_formed(centers: dict[int, Vector]) -> None:
    for cid, center in centers.items():
        assert set(center) == set(NAMES), f"centre {cid} has features {sorted(center)}"
        assert all(math.isfinite(v) for v in center.values()), f"centre {cid}: {center}"


# --- the segmenter contract -----------------------------------------------------------------------


def test_model_features_exist() -> None:
    assert set(NAMES) <= set(numeric_names())


@pytest.mark.parametrize("clusterer", clusterer_params(*CLUSTERERS))
def test_every_configured_clusterer_can_be_built(clusterer: str) -> None:
    segmenter = RiverSegmenter(config(clusterer))
    assert segmenter.centers() == {}
    Model(config(clusterer))


@pytest.mark.parametrize("clusterer", clusterer_params(*CLUSTERERS))
def test_cold_start_has_no_centres_until_the_warmup_is_full(clusterer: str) -> None:
    segmenter = RiverSegmenter(config(clusterer))
    points, _ = blobs(WARMUP + 200, seed=2)
    samples = list(vectors(points))
    assert segmenter.centers() == {}
    for x in samples[: WARMUP - 1]:
        segmenter.learn_one(x)
        assert segmenter.centers() == {}
    for x in samples[WARMUP - 1 :]:
        segmenter.learn_one(x)
    centers = segmenter.centers()
    assert centers
    assert_well_formed(centers)


@pytest.mark.parametrize("clusterer", clusterer_params(*CLUSTERERS))
def test_points_of_each_blob_share_a_nearest_centre(clusterer: str) -> None:
    segmenter = trained(clusterer)
    centers = segmenter.centers()
    assert centers
    assert_well_formed(centers)
    points, labels = blobs(600, seed=3)
    assigned = nearest_ids(centers, points)
    majority: list[int] = []
    shares: list[float] = []
    for blob in range(len(BLOB_MEANS)):
        ids, counts = np.unique(assigned[labels == blob], return_counts=True)
        majority.append(int(ids[counts.argmax()]))
        shares.append(float(counts.max() / counts.sum()))
    if clusterer in CENTROID_BASED:
        assert len(centers) == 3
        assert len(set(majority)) == 3, f"blob -> centre {majority}"
        assert min(shares) >= 0.95, f"share of each blob at its centre {shares}"
    else:
        # Density-based clusterers may split a blob; they must still tell the blobs apart.
        assert len(set(majority)) >= 2, f"blob -> centre {majority}"
        assert min(shares) >= 0.6, f"share of each blob at its centre {shares}"
    # No centre gathers points of two blobs (each centre's points are >= 95% one blob).
    for cid in np.unique(assigned):
        _, counts = np.unique(labels[assigned == cid], return_counts=True)
        assert counts.max() / counts.sum() >= 0.95, f"centre {cid} mixes blobs: {counts}"


@pytest.mark.parametrize("clusterer", clusterer_params(*CLUSTERERS))
def test_pickle_round_trip_keeps_centres_and_later_learning(clusterer: str) -> None:
    original = trained(clusterer, n=500)
    restored = pickle.loads(pickle.dumps(original))
    assert restored.centers() == original.centers()
    assert original.centers()
    points, _ = blobs(400, seed=4)
    for x in vectors(points):
        original.learn_one(dict(x))
        restored.learn_one(dict(x))
    assert restored.centers() == original.centers()


@pytest.mark.parametrize("clusterer", clusterer_params(*CLUSTERERS))
def test_pickle_round_trip_during_the_warmup(clusterer: str) -> None:
    original = trained(clusterer, n=WARMUP // 2)
    restored = pickle.loads(pickle.dumps(original))
    assert restored.centers() == original.centers() == {}
    points, _ = blobs(WARMUP, seed=5)
    for x in vectors(points):
        original.learn_one(dict(x))
        restored.learn_one(dict(x))
    assert original.centers()
    assert restored.centers() == original.centers()


@pytest.mark.parametrize("clusterer", clusterer_params(*CLUSTERERS))
def test_asking_for_centres_changes_nothing(clusterer: str) -> None:
    asked, left = RiverSegmenter(config(clusterer)), RiverSegmenter(config(clusterer))
    points, _ = blobs(600, seed=21)
    for i, x in enumerate(vectors(points)):
        asked.learn_one(dict(x))
        left.learn_one(dict(x))
        if i % 50 == 0:
            assert asked.centers() == asked.centers()
    assert left.centers()
    assert asked.centers() == left.centers()


@pytest.mark.parametrize("clusterer", clusterer_params(*CLUSTERERS))
def test_learn_one_leaves_its_inputs_untouched(clusterer: str) -> None:
    segmenter = RiverSegmenter(config(clusterer))
    points, _ = blobs(600, seed=6)
    inputs = list(vectors(points))
    expected = copy.deepcopy(inputs)
    for x in inputs:
        segmenter.learn_one(x)
    segmenter.centers()
    # Checked after all the learning: a clusterer that keeps a reference to an input and moves
    # it later (a micro-cluster centre, say) would show here.
    assert inputs == expected


@pytest.mark.parametrize("clusterer", clusterer_params(*CLUSTERERS))
def test_the_warmup_keeps_no_reference_to_its_inputs(clusterer: str) -> None:
    points, _ = blobs(WARMUP, seed=20)
    kept, scribbled = RiverSegmenter(config(clusterer)), RiverSegmenter(config(clusterer))
    for x in vectors(points):
        kept.learn_one(dict(x))
        scribbled.learn_one(x)
        x.update(dict.fromkeys(NAMES, 99.0))  # the caller reuses its dict
    assert kept.centers()
    assert scribbled.centers() == kept.centers()


# CluStream starts a micro-cluster from an input that lacks a feature; a later full input that
# falls into that micro-cluster raises KeyError in river (clustream.py `insert`: var_x[feature]).
# RiverSegmenter.learn_one (clusterers.py:48-50) passes inputs through unchanged after the warm-up.


def assert_usable(centers: dict[int, Vector]) -> None:
    """Centres from partial inputs: a centre may lack a feature (`matrix` reads it as the mean, 0)
    but has no unknown feature and no non-finite value."""
    assert centers
    for cid, center in centers.items():
        assert center, f"centre {cid} is empty"
        assert set(center) <= set(NAMES), f"centre {cid} has features {sorted(center)}"
        assert all(math.isfinite(v) for v in center.values()), f"centre {cid}: {center}"


@pytest.mark.parametrize("clusterer", [pytest.param(n, id=n) for n in CLUSTERERS])
def test_inputs_missing_a_feature_are_tolerated(clusterer: str) -> None:
    segmenter = RiverSegmenter(config(clusterer))
    points, _ = blobs(800, seed=7)
    for i, x in enumerate(vectors(points)):
        if i % 10 == 3:  # one input in ten lacks a feature, in the warm-up and after it
            del x[NAMES[i % len(NAMES)]]
        segmenter.learn_one(x)
    assert_usable(segmenter.centers())


@pytest.mark.parametrize("clusterer", [pytest.param(n, id=n) for n in CLUSTERERS])
def test_a_new_region_first_seen_without_a_feature_is_tolerated(clusterer: str) -> None:
    segmenter = trained(clusterer, n=300)
    far = {"events_total": 20.0, "spend_total": 20.0, "sessions": 20.0}
    segmenter.learn_one(dict(far))
    for _ in range(5):
        segmenter.learn_one({**far, "view_to_cart": 0.0})
    assert_usable(segmenter.centers())


# KMeans is seeded with plain dicts over the features seen in the warm-up (clusterers.py:74-78);
# river's KMeans then indexes `center[feature]` for every feature of an input, so a feature
# absent from every warm-up sample raises KeyError on its first appearance. CluStream fails the
# same way for the same reason as above.


@pytest.mark.parametrize("clusterer", [pytest.param(n, id=n) for n in CLUSTERERS])
def test_a_feature_missing_from_the_whole_warmup_is_tolerated(clusterer: str) -> None:
    segmenter = RiverSegmenter(config(clusterer))
    points, _ = blobs(400, seed=8)
    for i, x in enumerate(vectors(points)):
        if i < WARMUP:
            del x["view_to_cart"]
        segmenter.learn_one(x)
    assert_usable(segmenter.centers())


# STREAMKMeans only has centres once a chunk of max(10k, 50) inputs is complete; before that its
# `centers` are k empty dicts, which `centers()` returns as if they were centres (all at the mean
# after `matrix`), so `Params.clusters_ready` is True with k identical centres.
@pytest.mark.parametrize(
    "clusterer",
    [pytest.param(n, id=n) for n in CLUSTERERS],
)
def test_a_short_warmup_gives_no_centres_or_full_ones(clusterer: str) -> None:
    segmenter = RiverSegmenter(config(clusterer, warmup=10))
    points, _ = blobs(10, seed=9)
    for x in vectors(points):
        segmenter.learn_one(x)
    centers = segmenter.centers()
    if centers:
        assert_well_formed(centers)


# --- the model ------------------------------------------------------------------------------------


def learn_blobs(model: Model, n: int, seed: int) -> None:
    points, _ = blobs(n, seed)
    for row in points:
        model.learn(row.tolist(), 0.0, 0.0)


def blob_cluster_ids(params: Params) -> list[int]:
    """The stable id of the centre nearest each blob's mean (in the params' standardized space)."""
    z = (BLOB_MEANS - params.mean) / params.scale
    distances = ((z[:, None, :] - params.centers[None, :, :]) ** 2).sum(axis=2)
    return [int(params.cluster_ids[row]) for row in distances.argmin(axis=1)]


@pytest.mark.parametrize("clusterer", clusterer_params(*CLUSTERERS))
def test_params_before_any_learning_are_cold(clusterer: str) -> None:
    params = Model(config(clusterer)).params()
    assert not params.clusters_ready
    assert not params.propensity_ready
    assert params.centers.shape == (0, len(NAMES))
    assert len(params.cluster_ids) == 0
    assert params.cluster_labels == ()
    assert params.names == NAMES
    np.testing.assert_array_equal(params.mean, np.zeros(len(NAMES)))
    np.testing.assert_array_equal(params.scale, np.ones(len(NAMES)))
    assert len(params.frequency_edges) == 0
    assert len(params.monetary_edges) == 0


def test_params_are_cold_until_the_warmup_is_full() -> None:
    model = Model(config("kmeans"))
    learn_blobs(model, WARMUP - 1, seed=10)
    assert not model.params().clusters_ready
    learn_blobs(model, 1, seed=11)
    params = model.params()
    assert params.clusters_ready
    assert params.centers.shape == (3, len(NAMES))


def test_each_params_call_is_the_next_version() -> None:
    model = Model(config("kmeans"))
    assert [model.params().version for _ in range(3)] == [1, 2, 3]
    learn_blobs(model, 300, seed=12)
    assert model.params().version == 4
    assert model.params().version == 5
    assert model.version == 5


@pytest.mark.parametrize("clusterer", clusterer_params(*CENTROID_BASED))
def test_cluster_ids_stay_stable_while_centres_move_a_little(clusterer: str) -> None:
    model = Model(config(clusterer))
    learn_blobs(model, 1_000, seed=13)
    first = model.params()
    ids = blob_cluster_ids(first)
    assert len(set(ids)) == 3, f"blob -> stable id {ids}"
    for seed in (14, 15, 16):
        learn_blobs(model, 300, seed=seed)
        later = model.params()
        assert later.version == first.version + seed - 13
        assert blob_cluster_ids(later) == ids
    # Each stable id's centre moved, but only a little (rows may be renumbered: match by id).
    before = dict(zip(first.cluster_ids.tolist(), first.centers, strict=True))
    after = dict(zip(later.cluster_ids.tolist(), later.centers, strict=True))
    assert sorted(before) == sorted(after)
    moved = max(float(np.abs(after[cid] - before[cid]).max()) for cid in before)
    assert 0.0 < moved < 0.5


class FixedCenters:
    """A segmenter whose centres the test sets; the Model matches them to stable ids."""

    def __init__(self) -> None:
        self.current: dict[int, Vector] = {}

    def learn_one(self, x: Vector) -> None:
        pass

    def centers(self) -> dict[int, Vector]:
        return self.current


def at(*point: float) -> Vector:
    return dict(zip(NAMES, point, strict=True))


def stable_of(params: Params) -> dict[tuple[float, ...], int]:
    """Stable id by centre position (rounded to one decimal)."""
    return {
        tuple(round(float(v), 1) for v in row): int(cid)
        for row, cid in zip(params.centers, params.cluster_ids, strict=True)
    }


def test_stable_ids_follow_centres_when_the_clusterer_renumbers_them() -> None:
    model = Model(config("kmeans"))
    fixed = FixedCenters()
    model.segmenter = fixed  # type: ignore[assignment]
    fixed.current = {0: at(0, 0, 0, 0), 1: at(5, 5, 0, 0), 2: at(0, 5, 5, 5)}
    before = stable_of(model.params())
    assert sorted(before.values()) == [0, 1, 2]
    # The clusterer renumbers its centres and moves each by a little.
    fixed.current = {7: at(0.1, 5, 5, 5), 3: at(0.1, 0, 0, 0), 0: at(5.1, 5, 0, 0)}
    after = stable_of(model.params())
    assert after == {
        (0.1, 0.0, 0.0, 0.0): before[(0.0, 0.0, 0.0, 0.0)],
        (5.1, 5.0, 0.0, 0.0): before[(5.0, 5.0, 0.0, 0.0)],
        (0.1, 5.0, 5.0, 5.0): before[(0.0, 5.0, 5.0, 5.0)],
    }


def test_a_new_centre_gets_an_id_not_in_use() -> None:
    model = Model(config("kmeans"))
    fixed = FixedCenters()
    model.segmenter = fixed  # type: ignore[assignment]
    fixed.current = {0: at(0, 0, 0, 0), 1: at(5, 5, 0, 0)}
    before = stable_of(model.params())
    fixed.current = {0: at(0, 0, 0, 0), 1: at(5, 5, 0, 0), 2: at(-9, -9, -9, -9)}
    after = stable_of(model.params())
    assert after[(0.0, 0.0, 0.0, 0.0)] == before[(0.0, 0.0, 0.0, 0.0)]
    assert after[(5.0, 5.0, 0.0, 0.0)] == before[(5.0, 5.0, 0.0, 0.0)]
    assert after[(-9.0, -9.0, -9.0, -9.0)] not in before.values()


def test_the_id_of_a_vanished_centre_is_not_reused() -> None:
    model = Model(config("dbstream"))
    fixed = FixedCenters()
    model.segmenter = fixed  # type: ignore[assignment]
    fixed.current = {0: at(0, 0, 0, 0), 1: at(5, 5, 0, 0), 2: at(0, 5, 5, 5)}
    first = stable_of(model.params())
    gone = first[(5.0, 5.0, 0.0, 0.0)]
    fixed.current = {0: at(0, 0, 0, 0), 2: at(0, 5, 5, 5)}
    model.params()
    fixed.current = {0: at(0, 0, 0, 0), 2: at(0, 5, 5, 5), 9: at(-9, -9, -9, -9)}
    third = stable_of(model.params())
    assert third[(-9.0, -9.0, -9.0, -9.0)] != gone


@pytest.mark.parametrize("clusterer", clusterer_params("kmeans", "clustream", "dbstream"))
def test_a_pickled_model_resumes_learning(clusterer: str) -> None:
    original = Model(config(clusterer))
    learn_blobs(original, 600, seed=17)
    original.params()
    restored: Model = pickle.loads(pickle.dumps(original))
    assert restored.learned == original.learned == 600
    for model in (original, restored):
        learn_blobs(model, 400, seed=18)
        for i in range(MIN_LABELS):
            model.learn_label([float(i % 7), 1.0, 2.0, 0.5], bought=i % 2 == 0)
    a, b = original.params(), restored.params()
    assert restored.learned == 1_000
    assert (a.version, b.version) == (2, 2)
    assert a.clusters_ready
    assert b.propensity_ready
    np.testing.assert_array_equal(a.mean, b.mean)
    np.testing.assert_array_equal(a.scale, b.scale)
    np.testing.assert_array_equal(a.centers, b.centers)
    np.testing.assert_array_equal(a.cluster_ids, b.cluster_ids)
    np.testing.assert_array_equal(a.weights, b.weights)
    assert a.intercept == b.intercept
    assert a.cluster_labels == b.cluster_labels


def test_propensity_is_ready_after_enough_labels() -> None:
    model = Model(config("kmeans"))
    learn_blobs(model, 50, seed=19)
    for i in range(MIN_LABELS - 1):
        model.learn_label([float(i % 5), 1.0, 1.0, 0.1], bought=i % 3 == 0)
    assert not model.params().propensity_ready
    model.learn_label([1.0, 1.0, 1.0, 0.1], bought=True)
    params = model.params()
    assert params.propensity_ready
    assert np.any(params.weights != 0.0)


def test_rfm_edges_come_from_buyers_only() -> None:
    model = Model(config("kmeans"))
    for _ in range(200):
        model.learn([0.0, 0.0, 0.0, 0.0], 0.0, 0.0)  # non-buyers do not count
    assert len(model.params().frequency_edges) == 0
    for orders in range(1, 101):
        model.learn([1.0, 1.0, 1.0, 1.0], float(orders), float(orders * 10))
    params = model.params()
    assert len(params.frequency_edges) == 4
    assert len(params.monetary_edges) == 4
    assert np.all(np.diff(params.frequency_edges) > 0)
    assert params.frequency_edges[0] >= 1.0  # no non-buyer zero pulled the lowest edge down
    np.testing.assert_allclose(params.frequency_edges, [20, 40, 60, 80], atol=3)
    np.testing.assert_allclose(params.monetary_edges, [200, 400, 600, 800], atol=30)
