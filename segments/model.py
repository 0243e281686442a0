"""The learning side: one model that the trainer updates and snapshots for everyone to score.

`Model` holds river objects (scaler, clusterer, propensity classifier, RFM quantiles) and
learns one sample at a time. `Model.params()` freezes what scoring needs into numpy arrays
(`segments.scoring.Params`), with cluster ids that keep their meaning across versions: each
new set of centres is matched to the previous version's by minimum total distance.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from river import linear_model, optim, preprocessing, stats, tree
from scipy.optimize import linear_sum_assignment

from segments.clusterers import Vector, make_segmenter, matrix, nearest, squared_distances
from segments.config import SegmentConfig
from segments.crosssell import CATEGORY_ITEM, Basket, PairCounts, RuleTable
from segments.density import summarise
from segments.hierarchy import Parents
from segments.population import Population
from segments.propensity import VARIANCE_FLOOR, WindowedLogistic
from segments.scoring import Z_CLIP, Params
from segments.spend import SpendModel
from segments.validation import LiveQuality

QUANTILES: Final = (0.2, 0.4, 0.6, 0.8)
LABEL_FEATURES: Final = 2
# A feature must stand this many standard deviations from the mean to name a cluster.
LABEL_MIN_Z: Final = 0.3
# Labels the classifier must have learned, of both outcomes, before its scores are used (before,
# every user would score 0.5 and land in the top band).
MIN_LABELS: Final = 20
# SGD step of the online classifiers' intercept (their weights have AdaGrad's own steps).
INTERCEPT_LR: Final = 0.01
# A version is a new placement of the clusters when its centres put at least this share of the
# population in another cluster than the last placement did: from then on, users last scored
# before it hold cluster ids of a past arrangement, so the service brings every user's cluster
# up to date (`stream.service.sweep`). Lloyd steps move some users at every version; a fresh
# fit that replaced the centres moved 28% of 2,736 users at once in the demo.
PLACEMENT_SHARE: Final = 0.1
# Items the cross-sell counts track, partners kept per item, and rules kept per item.
RULE_ITEMS: Final = 5_000
RULE_PARTNERS: Final = 20
RULES_PER_ITEM: Final = 10
Floats = npt.NDArray[np.float64]


@dataclass(frozen=True)
class _Placed:
    """The centres of the last placement, in the standardization of their version."""

    mean: Floats
    scale: Floats
    ids: npt.NDArray[np.int64]
    centers: Floats

    def clusters_of(self, population: Floats) -> npt.NDArray[np.int64]:
        rows = nearest((population - self.mean) / self.scale, self.centers)
        return self.ids[rows]


class Model:
    # Trainer snapshots pickled before placements were counted read these.
    placement = 0
    _placed: _Placed | None = None

    def __init__(self, config: SegmentConfig, fingerprint: Mapping[str, str] | None = None) -> None:
        self.config = config
        # The settings and library versions that shaped it (see `segments.fingerprint`).
        self.fingerprint = dict(fingerprint or {})
        self.names = config.features
        self.version = 0
        self.learned = 0
        self.refused = 0  # samples and labels with a non-finite input, left out
        self.labels_learned = 0
        # Progressive validation of the labels learned: each was scored before it resolved.
        self.quality = LiveQuality()
        self.population = Population(config.population, len(config.features))
        # Standardization as of the last version (see `_statistics`); online clusterers learn
        # with the running statistics of `scaler`.
        self.mean = np.zeros(len(config.features))
        self.scale = np.ones(len(config.features))
        self.scaler = preprocessing.StandardScaler()
        self.segmenter = make_segmenter(config)
        # `logistic`: refit on a window of the latest labels at every version. The others are
        # river's, learning online behind a scaler of their own (statistics of the labels).
        self.window = (
            WindowedLogistic(config.label_window, len(config.features))
            if config.classifier == "logistic"
            else None
        )
        self.label_scaler = preprocessing.StandardScaler()
        self.classifier = None if self.window is not None else _classifier(config)
        self.outcomes = {True: 0, False: 0}
        self.frequency = [stats.Quantile(q) for q in QUANTILES]
        self.monetary = [stats.Quantile(q) for q in QUANTILES]
        # Stable cluster id by the clusterer's own id, and the centres last published.
        self.stable: dict[int, int] = {}
        self.published: dict[int, npt.NDArray[np.float64]] = {}
        # Every stable id ever given: a cluster that vanished does not lend its id to a new one.
        self.issued: set[int] = set()
        # How many times the clusters were placed anew (see PLACEMENT_SHARE).
        self.placement = 0
        self._placed = None
        self._analytics()

    def _analytics(self) -> None:
        """The learners added after the first trainer snapshots: cross-sell counts, spend,
        parent groups (a snapshot pickled before them gets them fresh when it is loaded)."""
        config = self.config
        self.pairs = PairCounts(RULE_ITEMS, RULE_PARTNERS, config.rule_half_life_ms)
        self.category_pairs = PairCounts(RULE_ITEMS, RULE_PARTNERS, config.rule_half_life_ms)
        self.spend = SpendModel()
        self.parents = Parents(config.parents)

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if "pairs" not in state:
            self._analytics()

    def learn_basket(self, basket: Basket) -> None:
        """A basket's growth: its new items and their pairs with the rest (see `crosssell`);
        products and categories are counted apart, each kind with its own basket count."""
        categories = bool(basket.added) and basket.added[0].startswith(CATEGORY_ITEM)
        (self.category_pairs if categories else self.pairs).learn(basket)

    def learn_spend(self, inputs: Sequence[float], spent: float) -> None:
        """A resolved spend snapshot: the inputs then, and what the user spent in the horizon."""
        if not self.spend.learn(inputs, spent):
            self.refused += 1

    def learn(self, user: str, inputs: Sequence[float], frequency: float, monetary: float) -> None:
        """One sampled user: model inputs (transformed, unscaled) and their RFM values. A
        non-finite value is refused: one would turn the scaler and every centre into NaN."""
        if not _finite(*inputs, frequency, monetary):
            self.refused += 1
            return
        self.population.add(user, inputs)
        if self.segmenter.online:
            x = dict(zip(self.names, inputs, strict=True))
            self.scaler.learn_one(x)
            self.segmenter.learn_one(self.scaler.transform_one(x))
        if frequency > 0:
            for quantile in self.frequency:
                quantile.update(frequency)
            for quantile in self.monetary:
                quantile.update(monetary)
        self.learned += 1

    def learn_label(self, inputs: Sequence[float], bought: bool, given: float = -1.0) -> None:
        """A resolved snapshot: the inputs at scoring time, whether a purchase followed, and
        the score given then (-1: none)."""
        if not _finite(*inputs):
            self.refused += 1
            return
        self.labels_learned += 1
        self.quality.update(bought, given)
        self.outcomes[bought] += 1
        if self.window is not None:
            self.window.add(inputs, bought)
            return
        x = dict(zip(self.names, inputs, strict=True))
        scaler = self.label_scaler
        scaler.learn_one(x)
        means, variances = scaler.means, scaler.vars
        z = {
            n: max(-Z_CLIP, min(Z_CLIP, (v - means[n]) / math.sqrt(variances[n])))
            if variances[n] > VARIANCE_FLOOR
            else 0.0
            for n, v in x.items()
        }
        assert self.classifier is not None
        self.classifier.learn_one(z, bought)

    @property
    def propensity_ready(self) -> bool:
        if self.window is not None:
            outcomes = self.window.outcomes()
            return sum(outcomes) >= MIN_LABELS and min(outcomes) > 0
        return self.labels_learned >= MIN_LABELS and min(self.outcomes.values()) > 0

    @property
    def clusters_ready(self) -> bool:
        """Whether the next version has centres (a population clusterer seeds at `params`;
        some river clusterers list centres only a while after their warm-up)."""
        if self.segmenter.online:
            return self.segmenter.seeded and bool(self.segmenter.centers())
        seeds_at = max(self.config.warmup, self.config.k)
        return self.segmenter.seeded or len(self.population) >= seeds_at

    def params(self) -> Params:
        """Freeze the model for scoring as the next version; KMeans centres are first refit on
        the population of recently scored users."""
        self.version += 1
        names = self.names
        population = self.population.matrix()
        mean, scale = self._statistics(population)
        if len(population):
            self.segmenter.refit((population - mean) / scale)
        ids, centers = self._stable_centers()
        self._count_placement(population, _Placed(mean, scale, ids, centers))
        label_mean, label_scale, weights, intercept = self._propensity()
        config = self.config
        return Params(
            version=self.version,
            names=tuple(names),
            mean=mean,
            scale=scale,
            centers=centers,
            cluster_ids=ids,
            cluster_labels=tuple(_label(c, names) for c in centers),
            propensity_mean=label_mean,
            propensity_scale=label_scale,
            weights=weights,
            intercept=intercept,
            classifier=None if self._linear() else copy.deepcopy(self.classifier),
            propensity_ready=self.propensity_ready,
            frequency_edges=_edges(self.frequency),
            monetary_edges=_edges(self.monetary),
            placement=self.placement,
            hierarchy=self.parents.build(ids.tolist(), centers, lambda c: _label(c, names)),
            density=summarise((population - mean) / scale, scale, names, config.outlier_quantile)
            if len(centers)
            else None,
            spend=self.spend.params(),
            rules=self._rules(),
        )

    def _rules(self) -> RuleTable:
        """The cross-sell rules of products and of categories that pass the minimums."""
        products, categories = (
            counts.rules(*self._minimums(counts.baskets), RULES_PER_ITEM)
            for counts in (self.pairs, self.category_pairs)
        )
        every = [*products.top(len(products)), *categories.top(len(categories))]
        return RuleTable(every, products.baskets)

    def _minimums(self, baskets: float) -> tuple[float, float, float]:
        """Support, confidence and lift a rule needs; the support at least `rule_min_count`
        baskets."""
        config = self.config
        support = max(config.rule_min_support, config.rule_min_count / baskets if baskets else 1.0)
        return min(support, 1.0), config.rule_min_confidence, config.rule_min_lift

    def _count_placement(self, population: Floats, placed: _Placed) -> None:
        """The first centres are a placement; later ones when they moved enough users."""
        if not len(placed.centers):
            return
        last = self._placed
        if last is not None:
            if not len(population):
                return
            moved = np.mean(last.clusters_of(population) != placed.clusters_of(population))
            if moved < PLACEMENT_SHARE:
                return
        self.placement += 1
        self._placed = placed

    def _statistics(
        self, population: npt.NDArray[np.float64]
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
        """Mean and standard deviation (1 where a feature does not vary) to standardize with:
        the population's for a clusterer refit on it, else the running ones the online
        clusterer learned with."""
        if self.segmenter.online:
            mean = np.array([self.scaler.means.get(n, 0.0) for n in self.names])
            deviation = np.sqrt(np.array([self.scaler.vars.get(n, 0.0) for n in self.names]))
        elif len(population):
            mean, deviation = population.mean(axis=0), population.std(axis=0)
        else:
            mean, deviation = np.zeros(len(self.names)), np.ones(len(self.names))
        self.mean, self.scale = mean, np.where(deviation > 1e-9, deviation, 1.0)
        return self.mean, self.scale

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
        return self.window is not None or isinstance(
            self.classifier, linear_model.LogisticRegression
        )

    def _propensity(self) -> tuple[Floats, Floats, Floats, float]:
        """Scaling, weights and intercept of a linear classifier (zeros for a tree)."""
        if self.window is not None:
            if self.propensity_ready:
                self.window.fit()
            window = self.window
            return window.mean, window.scale, window.weights, window.intercept
        scaler = self.label_scaler
        mean = np.array([scaler.means.get(n, 0.0) for n in self.names])
        variance = np.array([scaler.vars.get(n, 0.0) for n in self.names])
        scale = np.where(variance > VARIANCE_FLOOR, np.sqrt(variance), np.inf)
        classifier = self.classifier
        if not self._linear() or classifier is None:
            return mean, scale, np.zeros(len(self.names)), 0.0
        weights = np.array([classifier.weights.get(n, 0.0) for n in self.names])
        return mean, scale, weights, float(classifier.intercept)


def _finite(*values: float) -> bool:
    return all(math.isfinite(v) for v in values)


def _classifier(config: SegmentConfig) -> Any:
    """The online classifiers (`logistic` is a `WindowedLogistic` instead)."""
    if config.classifier == "hoeffding":
        return tree.HoeffdingTreeClassifier(grace_period=100)
    return linear_model.LogisticRegression(
        optimizer=optim.AdaGrad(config.learning_rate),
        loss=optim.losses.Hinge(),
        l2=1e-4,
        intercept_lr=INTERCEPT_LR,
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
