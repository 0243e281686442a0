"""The clusterers behind the `Segmenter` protocol, the population they are refit on, and the `Model`
that wraps them.

Every configured clusterer (`make_segmenter`: `PopulationKMeans` for "kmeans", river's otherwise)
learns standardized inputs from three well-separated Gaussian blobs in four named dimensions (means
6 apart, standard deviation 0.5) after a short warm-up; the contract: no centres before the warm-up,
centres that separate the blobs after it, a pickle round trip that changes nothing, inputs left
untouched, and missing features tolerated. `PopulationKMeans` is checked on its own too: seeding at
`warmup` rows, refits that escape a placement the population has outgrown, the restart gain rule,
and Lloyd steps that never leave a cluster empty while distinct rows exist.

The `Population` keeps the latest inputs of each user under a hash of the id and evicts the least
recently sampled. The `Model` tests check the frozen `Params`: cold start, versions, standardization
from the population, stable cluster ids across versions, resuming after a pickle round trip, and
the propensity classifier behind its own clipped scaling, ready once it has labels of both outcomes.
"""

from __future__ import annotations

import copy
import math
import pickle
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import numpy.typing as npt
import pytest

from features.columns import numeric_names
from segments import clusterers
from segments.clusterers import (
    RESTART_GAIN,
    PopulationKMeans,
    RiverSegmenter,
    Segmenter,
    Vector,
    lloyd,
    make_segmenter,
    matrix,
)
from segments.config import CLUSTERERS, DEFAULT_MODEL_FEATURES, SegmentConfig
from segments.model import MIN_LABELS, PLACEMENT_SHARE, Model
from segments.population import Population
from segments.scoring import Z_CLIP, Params, score

pytestmark = pytest.mark.unit

NAMES = ("views_per_session", "avg_order_value", "sessions", "tenure_days")
BLOB_MEANS = np.array(
    [[0.0, 0.0, 0.0, 0.0], [6.0, 6.0, 0.0, 0.0], [0.0, 6.0, 6.0, 6.0]], dtype=np.float64
)
BLOB_SD = 0.5
WARMUP = 100
CENTROID_BASED = ("kmeans", "streamkmeans", "clustream")
RIVER = tuple(n for n in CLUSTERERS if n != "kmeans")
RECENCY_DAYS = SegmentConfig().recency_days


def clusterer_params(*names: str) -> list[pytest.ParameterSet]:
    return [pytest.param(n, id=n) for n in names]


def config(
    clusterer: str, warmup: int = WARMUP, population: int = 10_000, k: int = 3
) -> SegmentConfig:
    return SegmentConfig(
        clusterer=clusterer, k=k, warmup=warmup, population=population, features=NAMES
    )


def blobs(
    n: int, seed: int, which: tuple[int, ...] = (0, 1, 2)
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
    """`n` points drawn from the blobs `which` at random, with the blob of each."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(np.array(which), size=n)
    points = BLOB_MEANS[labels] + rng.normal(0.0, BLOB_SD, size=(n, len(NAMES)))
    return points, labels.astype(np.int64)


def vectors(points: npt.NDArray[np.float64]) -> Iterator[Vector]:
    for row in points:
        yield {name: float(value) for name, value in zip(NAMES, row, strict=True)}


def trained(clusterer: str, n: int = 1_000, seed: int = 1) -> Segmenter:
    segmenter = make_segmenter(config(clusterer))
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


def assert_blobs_separated(
    assigned: npt.NDArray[np.int64], labels: npt.NDArray[np.int64], centroid_based: bool
) -> None:
    """Each blob mostly at one centre, a different one per blob, and no centre mixing blobs."""
    majority: list[int] = []
    shares: list[float] = []
    for blob in range(len(BLOB_MEANS)):
        ids, counts = np.unique(assigned[labels == blob], return_counts=True)
        majority.append(int(ids[counts.argmax()]))
        shares.append(float(counts.max() / counts.sum()))
    if centroid_based:
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


def first_coordinates(segmenter: Segmenter) -> list[float]:
    return sorted(round(c[NAMES[0]], 6) for c in segmenter.centers().values())


# --- the segmenter contract -----------------------------------------------------------------------


def test_model_features_exist() -> None:
    assert set(NAMES) <= set(numeric_names())
    assert set(DEFAULT_MODEL_FEATURES) <= set(numeric_names())
    assert len(set(DEFAULT_MODEL_FEATURES)) == len(DEFAULT_MODEL_FEATURES)
    assert SegmentConfig().features == DEFAULT_MODEL_FEATURES


@pytest.mark.parametrize("clusterer", clusterer_params(*CLUSTERERS))
def test_make_segmenter_gives_population_kmeans_or_a_river_clusterer(clusterer: str) -> None:
    segmenter = make_segmenter(config(clusterer))
    if clusterer == "kmeans":
        assert isinstance(segmenter, PopulationKMeans)
        assert not segmenter.online
    else:
        assert isinstance(segmenter, RiverSegmenter)
        assert segmenter.online
    assert not segmenter.seeded
    assert segmenter.centers() == {}
    model = Model(config(clusterer))
    assert type(model.segmenter) is type(segmenter)


@pytest.mark.parametrize("clusterer", clusterer_params(*CLUSTERERS))
def test_cold_start_has_no_centres_until_the_warmup_is_full(clusterer: str) -> None:
    segmenter = make_segmenter(config(clusterer))
    points, _ = blobs(WARMUP + 200, seed=2)
    samples = list(vectors(points))
    assert segmenter.centers() == {}
    for x in samples[: WARMUP - 1]:
        segmenter.learn_one(x)
        assert segmenter.centers() == {}
        assert not segmenter.seeded
    segmenter.learn_one(samples[WARMUP - 1])
    assert segmenter.seeded
    for x in samples[WARMUP:]:
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
    if clusterer in CENTROID_BASED:
        assert len(centers) == 3
    assert_blobs_separated(nearest_ids(centers, points), labels, clusterer in CENTROID_BASED)


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
    asked, left = make_segmenter(config(clusterer)), make_segmenter(config(clusterer))
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
    segmenter = make_segmenter(config(clusterer))
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
    kept, scribbled = make_segmenter(config(clusterer)), make_segmenter(config(clusterer))
    for x in vectors(points):
        kept.learn_one(dict(x))
        scribbled.learn_one(x)
        x.update(dict.fromkeys(NAMES, 99.0))  # the caller reuses its dict
    assert kept.centers()
    assert scribbled.centers() == kept.centers()


# A missing feature is read as the mean (0 once standardized): river's CluStream and KMeans
# raised KeyError on a feature that an existing micro-cluster or centre had never seen.


def assert_usable(centers: dict[int, Vector]) -> None:
    """Centres from partial inputs: a centre may lack a feature (`matrix` reads it as the mean, 0)
    but has no unknown feature and no non-finite value."""
    assert centers
    for cid, center in centers.items():
        assert center, f"centre {cid} is empty"
        assert set(center) <= set(NAMES), f"centre {cid} has features {sorted(center)}"
        assert all(math.isfinite(v) for v in center.values()), f"centre {cid}: {center}"


@pytest.mark.parametrize("clusterer", clusterer_params(*CLUSTERERS))
def test_inputs_missing_a_feature_are_tolerated(clusterer: str) -> None:
    segmenter = make_segmenter(config(clusterer))
    points, _ = blobs(800, seed=7)
    for i, x in enumerate(vectors(points)):
        if i % 10 == 3:  # one input in ten lacks a feature, in the warm-up and after it
            del x[NAMES[i % len(NAMES)]]
        segmenter.learn_one(x)
    assert_usable(segmenter.centers())


@pytest.mark.parametrize("clusterer", clusterer_params(*CLUSTERERS))
def test_a_new_region_first_seen_without_a_feature_is_tolerated(clusterer: str) -> None:
    segmenter = trained(clusterer, n=300)
    far = dict.fromkeys(NAMES[:3], 20.0)
    segmenter.learn_one(dict(far))
    for _ in range(5):
        segmenter.learn_one({**far, NAMES[3]: 0.0})
    assert_usable(segmenter.centers())


@pytest.mark.parametrize("clusterer", clusterer_params(*CLUSTERERS))
def test_a_feature_missing_from_the_whole_warmup_is_tolerated(clusterer: str) -> None:
    segmenter = make_segmenter(config(clusterer))
    points, _ = blobs(400, seed=8)
    for i, x in enumerate(vectors(points)):
        if i < WARMUP:
            del x[NAMES[3]]
        segmenter.learn_one(x)
    assert_usable(segmenter.centers())


# STREAMKMeans only has centres once a chunk of max(10k, 50) inputs is complete; before that its
# `centers` are k empty dicts, which must not be returned as centres (all at the mean).
@pytest.mark.parametrize("clusterer", clusterer_params(*CLUSTERERS))
def test_a_short_warmup_gives_no_centres_or_full_ones(clusterer: str) -> None:
    segmenter = make_segmenter(config(clusterer, warmup=10))
    points, _ = blobs(10, seed=9)
    for x in vectors(points):
        segmenter.learn_one(x)
    centers = segmenter.centers()
    if centers:
        assert_well_formed(centers)


@pytest.mark.parametrize("clusterer", clusterer_params(*RIVER))
def test_river_clusterers_learn_online_only(clusterer: str) -> None:
    """`refit` is a no-op for river's clusterers: it neither seeds them nor moves a centre."""
    points, _ = blobs(600, seed=22)
    cold = make_segmenter(config(clusterer))
    cold.refit(points)
    assert not cold.seeded
    assert cold.centers() == {}
    segmenter = trained(clusterer, n=500)
    before = segmenter.centers()
    segmenter.refit(points + 20.0)
    assert segmenter.centers() == before


# --- k-means over a population --------------------------------------------------------------------


def group(center: tuple[float, ...], n: int, rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """`n` rows close to `center` (padded with zeros to the four features)."""
    mean = np.array([*center, *[0.0] * (len(NAMES) - len(center))])
    rows: npt.NDArray[np.float64] = mean + rng.normal(0.0, 0.1, size=(n, len(NAMES)))
    return rows


def test_kmeans_refit_seeds_once_the_population_reaches_the_warmup() -> None:
    segmenter = PopulationKMeans(config("kmeans"))
    points, labels = blobs(WARMUP, seed=23)
    segmenter.refit(points[: WARMUP - 1])
    assert not segmenter.seeded
    assert segmenter.centers() == {}
    segmenter.refit(points)
    assert segmenter.seeded
    centers = segmenter.centers()
    assert len(centers) == 3
    assert_well_formed(centers)
    assert_blobs_separated(nearest_ids(centers, points), labels, centroid_based=True)


def test_kmeans_refits_a_small_population_once_seeded() -> None:
    """The warm-up is for seeding only: once seeded, any population of at least k rows is fit
    (here each of three rows gets a centre); fewer than k rows change nothing."""
    segmenter = PopulationKMeans(config("kmeans"))
    points, _ = blobs(WARMUP, seed=24)
    segmenter.refit(points)
    few = np.array([[-5.0, 0.0, 0.0, 0.0], [10.0, 0.0, 0.0, 0.0], [30.0, 0.0, 0.0, 0.0]])
    segmenter.refit(few)
    assert first_coordinates(segmenter) == [-5.0, 10.0, 30.0]
    segmenter.refit(few[:2] + 100.0)
    assert first_coordinates(segmenter) == [-5.0, 10.0, 30.0]


def test_kmeans_learn_one_refits_each_time_its_buffer_doubles(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    segmenter = PopulationKMeans(config("kmeans"))
    sizes: list[int] = []
    refit = segmenter.refit

    def counting(rows: npt.NDArray[np.float64]) -> None:
        sizes.append(len(rows))
        refit(rows)

    monkeypatch.setattr(segmenter, "refit", counting)
    points, _ = blobs(5 * WARMUP, seed=25)
    for x in vectors(points):
        segmenter.learn_one(x)
    assert sizes == [WARMUP, 2 * WARMUP, 4 * WARMUP]


def test_kmeans_learn_one_keeps_learning_once_its_buffer_is_full() -> None:
    """Without a population, `learn_one` keeps the latest `population` rows and refits as they
    come. Here the first 300 inputs (the buffer's bound) all come from one blob, then 3,000 from
    all three: the centres must move to separate them.

    Fails: `learn_one` refits when its buffer reaches twice its length at the last refit, but the
    buffer is capped at `config.population`, so once a refit has run on more than half the cap the
    next one never comes: every later input is buffered (the oldest dropped) and never learned
    from, and the centres stay where the first inputs put them."""
    segmenter = PopulationKMeans(config("kmeans", population=300))
    young, _ = blobs(300, seed=26, which=(0,))
    for x in vectors(young):
        segmenter.learn_one(x)
    assert segmenter.seeded
    later, _ = blobs(3_000, seed=27)
    for x in vectors(later):
        segmenter.learn_one(x)
    points, labels = blobs(600, seed=28)
    assert_blobs_separated(nearest_ids(segmenter.centers(), points), labels, centroid_based=True)


def placed(centers: npt.NDArray[np.float64]) -> list[list[float]]:
    """The centres' first two coordinates, rounded to whole numbers and sorted."""
    return sorted(np.round(centers[:, :2]).tolist())


def test_refit_escapes_a_placement_the_population_has_outgrown() -> None:
    """Centres seeded among the first users (two groups on the left, one in the middle) keep
    their places under Lloyd steps once the middle group gives way to two far apart: one centre
    sits between them, two split the left. The fresh k-means++ fit that each refit tries finds
    one centre per group, and its far lower inertia replaces the stuck placement."""
    rng = np.random.default_rng(29)
    left = np.vstack([group((-10.0, -1.0), 100, rng), group((-10.0, 1.0), 100, rng)])
    segmenter = PopulationKMeans(config("kmeans"))
    segmenter.refit(np.vstack([left, group((5.0, 15.0), 100, rng)]))
    seeded = matrix(segmenter.centers(), NAMES)
    assert placed(seeded) == [[-10.0, -1.0], [-10.0, 1.0], [5.0, 15.0]]
    grown = np.vstack([left, group((10.0, 0.0), 100, rng), group((0.0, 30.0), 100, rng)])
    stuck = lloyd(grown, seeded, np.random.default_rng(0))
    assert placed(stuck) == placed(seeded)  # Lloyd steps alone stay
    segmenter.refit(grown)
    assert placed(matrix(segmenter.centers(), NAMES)) == [[-10.0, 0.0], [0.0, 30.0], [10.0, 0.0]]


@pytest.mark.parametrize(
    ("ratio", "replaced"),
    [
        pytest.param(RESTART_GAIN - 0.004, True, id="clearly-better"),
        pytest.param(RESTART_GAIN + 0.004, False, id="barely-better"),
    ],
)
def test_a_fresh_fit_replaces_the_centres_only_when_clearly_better(
    monkeypatch: pytest.MonkeyPatch, ratio: float, replaced: bool
) -> None:
    """Three equal groups on a line, at 0, 1 and 1 + t, and k = 2: centres at {0.5, 1 + t} and
    at {0, 1 + t/2} are both Lloyd fixed points, with inertias n/2 and n·t²/2. The fresh fit
    (k-means++ stubbed) is the second; it replaces the first only when t² < RESTART_GAIN."""
    t = math.sqrt(ratio)
    rows = np.zeros((150, len(NAMES)))
    rows[50:100, 0], rows[100:, 0] = 1.0, 1.0 + t
    current = np.zeros((2, len(NAMES)))
    current[:, 0] = [0.5, 1.0 + t]
    fresh = np.zeros((2, len(NAMES)))
    fresh[:, 0] = [0.0, 1.0 + t / 2]
    candidate = [current]
    monkeypatch.setattr(clusterers, "_kmeans", lambda data, k, rng: candidate[0].copy())
    segmenter = PopulationKMeans(config("kmeans", k=2))
    segmenter.refit(rows)
    assert first_coordinates(segmenter) == pytest.approx([0.5, 1.0 + t])
    candidate[0] = fresh
    segmenter.refit(rows)
    expected = [0.0, 1.0 + t / 2] if replaced else [0.5, 1.0 + t]
    assert first_coordinates(segmenter) == pytest.approx(expected)


def test_lloyd_moves_an_empty_centre_to_a_far_point() -> None:
    """Two groups and a centre far from both: it gets no member (plain Lloyd steps would leave it
    there for ever) and moves to a point of the group that no centre was near."""
    data = np.zeros((100, len(NAMES)))
    data[50:, 0] = 10.0
    centers = np.zeros((2, len(NAMES)))
    centers[1, 0] = 1_000.0
    result = lloyd(data, centers, np.random.default_rng(0))
    assert sorted(result[:, 0].tolist()) == [0.0, 10.0]
    np.testing.assert_array_equal(result[:, 1:], 0.0)
    assert centers[1, 0] == 1_000.0  # its input is left as it was


def test_lloyd_fills_every_empty_centre_with_a_different_point() -> None:
    data = np.zeros((12, len(NAMES)))
    data[10, 0], data[11, 0] = 10.0, -10.0
    centers = np.zeros((3, len(NAMES)))
    centers[1:, 0] = 1_000.0  # two centres far from every point: no members
    result = lloyd(data, centers, np.random.default_rng(0))
    assert sorted(result[:, 0].tolist()) == [-10.0, 0.0, 10.0]


def test_lloyd_and_kmeans_on_identical_rows_stay_finite() -> None:
    """No distinct point to move an empty centre to: it stays, and nothing divides by zero."""
    data = np.ones((50, len(NAMES)))
    centers = np.array([[1.0] * len(NAMES), [5.0] * len(NAMES)])
    np.testing.assert_array_equal(lloyd(data, centers, np.random.default_rng(0)), centers)
    segmenter = PopulationKMeans(config("kmeans"))
    segmenter.refit(np.ones((WARMUP, len(NAMES))))
    assert len(segmenter.centers()) == 3
    assert_well_formed(segmenter.centers())
    np.testing.assert_array_equal(matrix(segmenter.centers(), NAMES), 1.0)


# --- the population -------------------------------------------------------------------------------


def rows_of(population: Population) -> list[list[float]]:
    return sorted(population.matrix().tolist())


def test_population_keeps_the_latest_inputs_of_each_user() -> None:
    population = Population(4, 2)
    assert len(population) == 0
    assert population.matrix().shape == (0, 2)
    population.add("alice", [1.0, 2.0])
    population.add("bob", [3.0, 4.0])
    population.add("alice", [5.0, 6.0])
    assert len(population) == 2
    assert population.matrix().dtype == np.float64
    assert rows_of(population) == [[3.0, 4.0], [5.0, 6.0]]


def test_population_evicts_the_least_recently_sampled_user() -> None:
    population = Population(3, 1)
    for user, value in (("a", 1.0), ("b", 2.0), ("c", 3.0), ("a", 10.0), ("d", 4.0)):
        population.add(user, [value])
    # "a" was sampled again after "b": "b" made room for "d".
    assert rows_of(population) == [[3.0], [4.0], [10.0]]
    population.add("e", [5.0])
    assert rows_of(population) == [[4.0], [5.0], [10.0]]
    population.add("b", [20.0])  # back as a new user, in place of "a"
    assert len(population) == 3
    assert rows_of(population) == [[4.0], [5.0], [20.0]]


def test_no_user_id_is_stored() -> None:
    user = "customer-4711@example.com"
    population = Population(10, 2)
    population.add(user, [1.0, 2.0])
    assert user.encode() not in pickle.dumps(population)
    model = Model(config("kmeans"))
    model.learn(user, [1.0, 2.0, 3.0, 4.0], 2.0, 30.0)
    model.learn_label([1.0, 2.0, 3.0, 4.0], bought=True, given=0.4)
    model.params()
    assert user.encode() not in pickle.dumps(model)


# --- the model ------------------------------------------------------------------------------------


def learn_blobs(model: Model, n: int, seed: int, which: tuple[int, ...] = (0, 1, 2)) -> None:
    """`n` new users (ids unique to the seed) from the blobs, none of them a buyer."""
    points, _ = blobs(n, seed, which)
    for i, row in enumerate(points):
        model.learn(f"user-{seed}-{i}", row.tolist(), 0.0, 0.0)


def blob_cluster_ids(params: Params) -> list[int]:
    """The stable id of the centre nearest each blob's mean (in the params' standardized space)."""
    z = (BLOB_MEANS - params.mean) / params.scale
    distances = ((z[:, None, :] - params.centers[None, :, :]) ** 2).sum(axis=2)
    return [int(params.cluster_ids[row]) for row in distances.argmin(axis=1)]


def scored(params: Params, inputs: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """The propensity `score` gives each row of inputs."""
    propensity: npt.NDArray[np.float64] = score(
        params, inputs, np.zeros((len(inputs), 3)), RECENCY_DAYS
    ).propensity
    return propensity


class Recorder:
    """A segmenter that records what the Model gives it, and has no centres."""

    def __init__(self, online: bool) -> None:
        self.online = online
        self.learned: list[Vector] = []
        self.refits: list[npt.NDArray[np.float64]] = []

    @property
    def seeded(self) -> bool:
        return False

    def learn_one(self, x: Vector) -> None:
        self.learned.append(dict(x))

    def refit(self, rows: npt.NDArray[np.float64]) -> None:
        self.refits.append(rows.copy())

    def centers(self) -> dict[int, Vector]:
        return {}


# Three users, one sampled twice: the latest inputs are [3, 10, 7, 7], [5, 10, 3, 7] and
# [7, 10, 5, 7]; mean [5, 10, 5, 7], deviation sqrt(8/3) where the inputs vary.
USERS = (
    ("alice", [1.0, 10.0, 5.0, 7.0]),
    ("bob", [5.0, 10.0, 3.0, 7.0]),
    ("carol", [7.0, 10.0, 5.0, 7.0]),
    ("alice", [3.0, 10.0, 7.0, 7.0]),
)
USERS_MEAN = [5.0, 10.0, 5.0, 7.0]
USERS_SCALE = [math.sqrt(8 / 3), 1.0, math.sqrt(8 / 3), 1.0]


def learn_users(model: Model) -> None:
    for user, inputs in USERS:
        model.learn(user, inputs, 0.0, 0.0)


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
    # No label yet: no feature varies for the classifier.
    np.testing.assert_array_equal(params.propensity_mean, np.zeros(len(NAMES)))
    assert np.all(np.isinf(params.propensity_scale))
    assert len(params.frequency_edges) == 0
    assert len(params.monetary_edges) == 0


def test_kmeans_params_are_cold_until_the_population_holds_warmup_users() -> None:
    """The warm-up now counts users in the population, not samples: sampling the same users
    again does not fill it. `clusters_ready` tells beforehand whether the next version seeds."""
    model = Model(config("kmeans"))
    learn_blobs(model, WARMUP - 1, seed=10)
    learn_blobs(model, WARMUP - 1, seed=10)  # the same users again
    assert model.learned == 2 * (WARMUP - 1)
    assert len(model.population) == WARMUP - 1
    assert not model.clusters_ready
    assert not model.params().clusters_ready
    learn_blobs(model, 1, seed=11)
    assert model.clusters_ready
    params = model.params()
    assert params.clusters_ready
    assert params.centers.shape == (3, len(NAMES))


@pytest.mark.parametrize("clusterer", clusterer_params(*CLUSTERERS))
def test_clusters_ready_says_whether_the_next_version_has_centres(clusterer: str) -> None:
    """`Model.clusters_ready` promises centres in the next version (the trainer publishes one
    as soon as it turns True); checked after every sample of a short warm-up and beyond.

    Fails for streamkmeans, clustream and denstream: it is True as soon as the segmenter is
    `seeded` (the warm-up of 10 samples learned), but STREAMKMeans has no centres until its first
    chunk of max(10k, 50) inputs, CluStream none until it has built its micro-clusters (90
    samples here) and DenStream none for a few samples, so `params()` gives a version without
    clusters, and the trainer publishes one at every batch until they come."""
    model = Model(config(clusterer, warmup=10))
    points, _ = blobs(150, seed=30)
    broken: list[int] = []
    for i, row in enumerate(points):
        model.learn(f"user-{i}", row.tolist(), 0.0, 0.0)
        if model.clusters_ready != copy.deepcopy(model).params().clusters_ready:
            broken.append(i + 1)
    assert model.clusters_ready
    assert broken == [], f"clusters_ready wrong after {len(broken)} samples, from {broken[:1]}"


def test_each_params_call_is_the_next_version() -> None:
    model = Model(config("kmeans"))
    assert [model.params().version for _ in range(3)] == [1, 2, 3]
    learn_blobs(model, 300, seed=12)
    assert model.params().version == 4
    assert model.params().version == 5
    assert model.version == 5


def test_the_model_standardizes_with_the_population_mean_and_deviation() -> None:
    """Latest inputs of each user only; a feature that does not vary has scale 1."""
    model = Model(config("kmeans"))
    learn_users(model)
    assert model.learned == 4
    assert len(model.population) == 3
    params = model.params()
    np.testing.assert_allclose(params.mean, USERS_MEAN)
    np.testing.assert_allclose(params.scale, USERS_SCALE)
    assert model.mean is not None
    np.testing.assert_array_equal(model.mean, params.mean)
    np.testing.assert_array_equal(model.scale, params.scale)
    model.learn("dave", [9.0, 10.0, 5.0, 7.0], 0.0, 0.0)  # recomputed at the next version
    np.testing.assert_array_equal(model.mean, params.mean)
    np.testing.assert_allclose(model.params().mean, [6.0, 10.0, 5.0, 7.0])


def test_a_population_clusterer_is_refit_on_the_standardized_population() -> None:
    model = Model(config("kmeans"))
    recorder = Recorder(online=False)
    model.segmenter = recorder
    learn_users(model)
    assert recorder.learned == []  # nothing per sample
    assert recorder.refits == []
    model.params()
    assert len(recorder.refits) == 1
    latest = np.array([inputs for _, inputs in USERS[1:]])
    expected = (latest - np.array(USERS_MEAN)) / np.array(USERS_SCALE)
    np.testing.assert_allclose(sorted(recorder.refits[0].tolist()), sorted(expected.tolist()))


def test_an_online_clusterer_learns_each_sample_with_the_running_statistics() -> None:
    """Standardized by the running mean and deviation of every sample so far (the sample
    included), and a version carries exactly those statistics, so that scoring meets the
    clusterer in the space it learned in."""
    model = Model(config("dbstream"))
    recorder = Recorder(online=True)
    model.segmenter = recorder
    learn_users(model)
    assert len(recorder.learned) == len(USERS)  # every sample, the same user's too
    seen = np.array([inputs for _, inputs in USERS])
    mean, deviation = seen.mean(axis=0), seen.std(axis=0)
    last = (seen[-1] - mean) / np.where(deviation > 0, deviation, 1.0)
    expected = np.where(deviation > 0, last, 0.0)  # a feature that never varied says nothing
    np.testing.assert_allclose(list(recorder.learned[-1].values()), expected, atol=1e-12)
    params = model.params()
    np.testing.assert_allclose(params.mean, mean, atol=1e-12)
    np.testing.assert_allclose(params.scale, np.where(deviation > 0, deviation, 1.0), atol=1e-12)


# DenStream is left out: its epsilon (3 standardized units) is wider than the distance between the
# blobs once standardized by the population (about 3 in four dimensions), so it merges them.
@pytest.mark.parametrize(
    "clusterer", clusterer_params("kmeans", "streamkmeans", "clustream", "dbstream")
)
def test_a_model_scored_with_its_own_params_separates_the_blobs(clusterer: str) -> None:
    """Users of the three blobs learned by the `Model`; then the version's `score` (its mean,
    scale and centres) must put each blob at its own cluster, as the segmenter alone does.

    Fails for the online clusterers (streamkmeans, clustream, dbstream): before the first
    version, `Model._standardized` takes the mean of the population "when first needed", at the
    first sample (one user: the mean is that user's inputs, the scale 1), and keeps it until
    `params()`. The online clusterer learns its warm-up and everything after in that space, while
    the version scores with the population's mean and deviation (a scale near 2.9 here): the
    centres are in another space than the users scored, and all three blobs land at one
    centre."""
    model = Model(config(clusterer))
    learn_blobs(model, 1_000, seed=31)
    params = model.params()
    assert params.clusters_ready
    points, labels = blobs(600, seed=32)
    nearest = score(params, points, np.zeros((len(points), 3)), RECENCY_DAYS).nearest
    assert np.all(nearest >= 0)
    assigned = params.cluster_ids[nearest]
    assert_blobs_separated(assigned, labels, clusterer in CENTROID_BASED)


def test_kmeans_centres_follow_the_population_when_it_turns_over() -> None:
    """Seeded on young users (one blob), then every one of them is evicted by users of all three
    blobs: the next version's centres separate the blobs."""
    model = Model(config("kmeans", population=300))
    learn_blobs(model, 300, seed=33, which=(0,))
    young = model.params()
    assert young.clusters_ready
    assert len(set(blob_cluster_ids(young))) == 1  # every blob is nearest one centre
    learn_blobs(model, 300, seed=34)
    assert len(model.population) == 300
    grown = model.params()
    assert len(set(blob_cluster_ids(grown))) == 3
    points, labels = blobs(600, seed=35)
    nearest = score(grown, points, np.zeros((len(points), 3)), RECENCY_DAYS).nearest
    assert_blobs_separated(nearest, labels, centroid_based=True)


def test_a_model_with_the_default_features() -> None:
    model = Model(SegmentConfig(warmup=50))
    rng = np.random.default_rng(36)
    width = len(DEFAULT_MODEL_FEATURES)
    for i in range(200):
        model.learn(f"user-{i}", rng.gamma(2.0, 3.0, size=width).tolist(), 1.0, 20.0)
    params = model.params()
    assert params.names == DEFAULT_MODEL_FEATURES
    assert params.centers.shape == (7, width)
    assert len(set(params.cluster_ids.tolist())) == 7
    assert np.all(np.isfinite(params.centers))


@pytest.mark.parametrize("clusterer", clusterer_params(*CENTROID_BASED))
def test_cluster_ids_stay_stable_while_centres_move_a_little(clusterer: str) -> None:
    """Fails for streamkmeans and clustream for the reason given in
    `test_a_model_scored_with_its_own_params_separates_the_blobs`: their first version's centres
    are not in the space its mean and scale standardize to, so all blobs are nearest one id."""
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

    online = False

    def __init__(self) -> None:
        self.current: dict[int, Vector] = {}

    @property
    def seeded(self) -> bool:
        return bool(self.current)

    def learn_one(self, x: Vector) -> None:
        pass

    def refit(self, rows: npt.NDArray[np.float64]) -> None:
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
    model.segmenter = fixed
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


def test_a_version_that_puts_many_users_in_other_clusters_is_a_new_placement() -> None:
    """The first centres are placement 1. Centres that move a little keep it; centres that put
    at least PLACEMENT_SHARE of the population in another cluster than the last placement did
    are the next one (the service then re-scores every user), and later moves count from
    there, not from the version before."""
    model = Model(config("kmeans"))
    fixed = FixedCenters()
    model.segmenter = fixed
    learn_blobs(model, 600, seed=40)
    assert model.params().placement == 0  # no centres yet
    z = (BLOB_MEANS - model.mean) / model.scale
    fixed.current = {i: at(*row) for i, row in enumerate(z)}
    assert model.params().placement == 1
    fixed.current = {i: at(*(row + 0.05)) for i, row in enumerate(z)}
    assert model.params().placement == 1
    # Blob 0's centre leaves for nowhere: its users (about a third) join the other two.
    fixed.current = {0: at(50, 50, 50, 50), 1: at(*z[1]), 2: at(*z[2])}
    second = model.params()
    assert second.placement == 2
    assert PLACEMENT_SHARE < 1 / 3
    fixed.current = {0: at(50, 50, 50, 50), 1: at(*(z[1] + 0.05)), 2: at(*z[2])}
    assert model.params().placement == 2
    restored = pickle.loads(pickle.dumps(model))
    fixed.current = {i: at(*row) for i, row in enumerate(z)}
    restored.segmenter = fixed
    assert restored.params().placement == 3


def test_a_trainer_pickled_before_placements_were_counted_resumes() -> None:
    model = Model(config("kmeans"))
    learn_blobs(model, 300, seed=41)
    model.params()
    del model.__dict__["placement"], model.__dict__["_placed"]
    older = pickle.loads(pickle.dumps(model))
    assert older.params().placement == 1


def test_a_new_centre_gets_an_id_not_in_use() -> None:
    model = Model(config("kmeans"))
    fixed = FixedCenters()
    model.segmenter = fixed
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
    model.segmenter = fixed
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
    original = Model(config(clusterer), fingerprint={"clusterer": clusterer})
    learn_blobs(original, 600, seed=17)
    original.params()
    restored: Model = pickle.loads(pickle.dumps(original))
    assert restored.learned == original.learned == 600
    assert restored.fingerprint == {"clusterer": clusterer}
    for model in (original, restored):
        learn_blobs(model, 400, seed=18)
        for i in range(MIN_LABELS):
            model.learn_label([float(i % 7), 1.0, 2.0, 0.5], bought=i % 2 == 0, given=i / 20)
    a, b = original.params(), restored.params()
    assert restored.learned == 1_000
    assert len(restored.population) == len(original.population) == 1_000
    assert (a.version, b.version) == (2, 2)
    assert a.clusters_ready
    assert b.propensity_ready
    np.testing.assert_array_equal(a.mean, b.mean)
    np.testing.assert_array_equal(a.scale, b.scale)
    np.testing.assert_array_equal(a.centers, b.centers)
    np.testing.assert_array_equal(a.cluster_ids, b.cluster_ids)
    np.testing.assert_array_equal(a.propensity_mean, b.propensity_mean)
    np.testing.assert_array_equal(a.propensity_scale, b.propensity_scale)
    np.testing.assert_array_equal(a.weights, b.weights)
    assert a.intercept == b.intercept
    assert a.cluster_labels == b.cluster_labels
    assert original.quality.as_dict() == restored.quality.as_dict()


def test_the_fingerprint_is_a_copy_kept_with_the_model() -> None:
    given = {"k": "3", "clusterer": "kmeans"}
    model = Model(config("kmeans"), fingerprint=given)
    given["k"] = "7"
    assert model.fingerprint == {"k": "3", "clusterer": "kmeans"}
    assert Model(config("kmeans")).fingerprint == {}


# --- the propensity classifier --------------------------------------------------------------------


def test_propensity_is_ready_after_enough_labels() -> None:
    model = Model(config("kmeans"))
    learn_blobs(model, 50, seed=19)
    for i in range(MIN_LABELS - 1):
        model.learn_label([float(i % 5), 1.0, 1.0, 0.1], bought=i % 3 == 0)
    assert not model.propensity_ready
    assert not model.params().propensity_ready
    model.learn_label([1.0, 1.0, 1.0, 0.1], bought=True)
    assert model.propensity_ready
    params = model.params()
    assert params.propensity_ready
    assert np.any(params.weights != 0.0)


@pytest.mark.parametrize("outcome", [pytest.param(b, id=f"all-{b}") for b in (True, False)])
def test_propensity_needs_labels_of_both_outcomes(outcome: bool) -> None:
    model = Model(config("kmeans"))
    for i in range(2 * MIN_LABELS):
        model.learn_label([float(i % 5), 1.0, 1.0, 0.1], bought=outcome)
    assert model.labels_learned == 2 * MIN_LABELS
    assert not model.propensity_ready
    assert not model.params().propensity_ready
    model.learn_label([2.0, 1.0, 1.0, 0.1], bought=not outcome)
    assert model.propensity_ready
    assert model.params().propensity_ready


class LabelRecorder:
    """A classifier that records what it is taught."""

    def __init__(self) -> None:
        self.taught: list[tuple[Vector, bool]] = []

    def learn_one(self, x: Vector, y: bool) -> None:
        self.taught.append((dict(x), y))


def test_an_online_classifier_learns_inputs_scaled_by_its_own_scaler_and_clipped() -> None:
    """`svm` learns online: each label's inputs join the classifier's scaler first, then are
    standardized by it (population deviation) and clipped to +-Z_CLIP; a constant feature is 0.
    (`logistic` is refit on a window of labels instead: tests/segments/test_propensity.py.)"""
    model = Model(replace(config("kmeans"), classifier="svm"))
    recorder = LabelRecorder()
    model.classifier = recorder
    rng = np.random.default_rng(37)
    inputs = np.column_stack([rng.normal(0.0, 1.0, size=(30, 3)), np.full(30, 7.0)])
    inputs = np.vstack([inputs, [1_000.0, 0.0, 0.0, 7.0]])  # far out: z = sqrt(30) > Z_CLIP
    for i, row in enumerate(inputs):
        model.learn_label(row.tolist(), bought=i % 2 == 0)
    assert [y for _, y in recorder.taught] == [i % 2 == 0 for i in range(len(inputs))]
    for i, (x, _) in enumerate(recorder.taught):
        seen = inputs[: i + 1]
        deviation = seen.std(axis=0)
        varies = deviation > 0
        z = np.zeros(len(NAMES))
        z[varies] = (seen[-1, varies] - seen[:, varies].mean(axis=0)) / deviation[varies]
        expected = dict(zip(NAMES, np.clip(z, -Z_CLIP, Z_CLIP).tolist(), strict=True))
        assert x == pytest.approx(expected, rel=1e-9, abs=1e-12), f"label {i}"
    assert recorder.taught[0][0] == dict.fromkeys(NAMES, 0.0)  # one label: nothing varies
    assert recorder.taught[-1][0][NAMES[0]] == Z_CLIP
    assert all(x[NAMES[3]] == 0.0 for x, _ in recorder.taught)
    assert model.population.matrix().shape == (0, len(NAMES))  # labels are not users


def learn_labels(model: Model, n: int = 300, seed: int = 38) -> npt.NDArray[np.float64]:
    """Labels whose outcome follows the second feature; the first is around 1,000 and the last
    does not vary. Returns their inputs."""
    rng = np.random.default_rng(seed)
    inputs = np.column_stack(
        [
            rng.normal(1_000.0, 10.0, size=n),
            rng.normal(0.0, 1.0, size=n),
            rng.normal(5.0, 2.0, size=n),
            np.full(n, 3.0),
        ]
    )
    for row in inputs:
        model.learn_label(row.tolist(), bought=bool(row[1] > 0.0))
    return inputs


def test_params_carry_the_classifier_scaling() -> None:
    """The classifier's mean and deviation are those of the labels' inputs (inf where a feature
    does not vary), apart from the population's standardization for the clusters."""
    model = Model(config("kmeans"))
    learn_users(model)
    inputs = learn_labels(model)
    params = model.params()
    # The window keeps the labels as float32.
    np.testing.assert_allclose(params.propensity_mean, inputs.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(params.propensity_scale[:3], inputs[:, :3].std(axis=0), rtol=1e-5)
    assert math.isinf(params.propensity_scale[3])
    np.testing.assert_allclose(params.mean, USERS_MEAN)
    np.testing.assert_allclose(params.scale, USERS_SCALE)
    assert params.weights[3] == 0.0  # a constant feature teaches nothing
    assert params.weights[1] > 0.5
    assert abs(params.weights[1]) == np.abs(params.weights).max()


def test_a_huge_input_does_not_blow_up_the_propensity() -> None:
    """Scored inputs are standardized by the classifier's scaling and clipped at +-Z_CLIP: an
    input a trillion deviations out scores as one Z_CLIP deviations out."""
    model = Model(config("kmeans"))
    learn_labels(model)
    params = model.params()
    assert params.propensity_ready
    mean, scale = params.propensity_mean, params.propensity_scale
    rows = np.tile(mean, (4, 1))
    rows[0, 1] = 1e12
    rows[1, 1] = mean[1] + Z_CLIP * scale[1]
    rows[2, 1] = -1e12
    rows[3, 1] = mean[1] - Z_CLIP * scale[1]
    propensity = scored(params, rows)
    assert np.all(np.isfinite(propensity))
    assert np.all((propensity > 0.0) & (propensity < 1.0))
    assert propensity[0] == pytest.approx(propensity[1])
    assert propensity[2] == pytest.approx(propensity[3])
    w, b = params.weights[1], params.intercept
    assert propensity[0] == pytest.approx(1.0 / (1.0 + math.exp(-(Z_CLIP * w + b))))
    assert propensity[2] == pytest.approx(1.0 / (1.0 + math.exp(-(-Z_CLIP * w + b))))
    # A constant feature (scale inf) has no say whatever its value.
    moved = rows[1:2].copy()
    moved[0, 3] = 1e9
    assert scored(params, moved)[0] == pytest.approx(propensity[1])


def test_the_model_tracks_the_scores_given_with_the_labels() -> None:
    model = Model(config("kmeans"))
    for i in range(5):  # scored before the classifier was ready: no prediction
        model.learn_label([float(i), 1.0, 1.0, 1.0], bought=i % 2 == 0)
    assert model.quality.labels == 0
    for i in range(10):
        bought = i % 2 == 0
        model.learn_label([float(i), 1.0, 1.0, 1.0], bought=bought, given=0.9 if bought else 0.2)
    assert model.labels_learned == 15
    quality = model.quality.as_dict()
    assert quality["labels"] == 10
    assert quality["roc_auc"] == 1.0
    assert quality["precision"] == quality["recall"] == 1.0


def test_rfm_edges_come_from_buyers_only() -> None:
    model = Model(config("kmeans"))
    for i in range(200):
        model.learn(f"browser-{i}", [0.0, 0.0, 0.0, 0.0], 0.0, 0.0)  # non-buyers do not count
    assert len(model.params().frequency_edges) == 0
    for orders in range(1, 101):
        model.learn(f"buyer-{orders}", [1.0, 1.0, 1.0, 1.0], float(orders), float(orders * 10))
    params = model.params()
    assert len(params.frequency_edges) == 4
    assert len(params.monetary_edges) == 4
    assert np.all(np.diff(params.frequency_edges) > 0)
    assert params.frequency_edges[0] >= 1.0  # no non-buyer zero pulled the lowest edge down
    np.testing.assert_allclose(params.frequency_edges, [20, 40, 60, 80], atol=3)
    np.testing.assert_allclose(params.monetary_edges, [200, 400, 600, 800], atol=30)
