"""Scores for `segstream evaluate`: segmentation against ground-truth personas, propensity
against outcomes, and the stability of published segment changes.

Pure numpy so the product does not depend on scikit-learn; the unit tests check these against
scikit-learn. Inputs are plain sequences; the driver collects them and fills `Evaluation`.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from segments.hierarchy import Hierarchy

NEW = "(new)"  # the "from" side of a user's first assignment in `transitions`
ROUND_DIGITS = 4


# --- clustering against personas -------------------------------------------------------------


def _contingency(truth: Sequence[str], labels: Sequence[int]) -> npt.NDArray[np.int64]:
    """Persona x cluster counts (rows in sorted persona order, columns in sorted cluster order)."""
    if len(truth) != len(labels):
        msg = f"truth and labels differ in length: {len(truth)} != {len(labels)}"
        raise ValueError(msg)
    _, rows = np.unique(np.asarray(truth, dtype=str), return_inverse=True)
    _, cols = np.unique(np.asarray(labels, dtype=np.int64), return_inverse=True)
    table = np.zeros((int(rows.max(initial=-1)) + 1, int(cols.max(initial=-1)) + 1), np.int64)
    np.add.at(table, (rows.ravel(), cols.ravel()), 1)
    return table


def _pairs(counts: npt.NDArray[np.int64]) -> int:
    # Python ints: n * (n - 1) products overflow int64 for a few million users.
    return sum(int(c) * (int(c) - 1) // 2 for c in counts.ravel())


def adjusted_rand_index(truth: Sequence[str], labels: Sequence[int]) -> float:
    """Rand index corrected for chance: 1 for identical partitions, about 0 for random ones."""
    table = _contingency(truth, labels)
    both = _pairs(table)
    same_truth = _pairs(table.sum(axis=1))
    same_label = _pairs(table.sum(axis=0))
    total = _pairs(np.array([table.sum()]))
    expected = same_truth * same_label / total if total else 0.0
    best = (same_truth + same_label) / 2
    # Equal only when both partitions are all singletons or both one block: identical.
    if best == expected:
        return 1.0
    return float((both - expected) / (best - expected))


def _entropy(counts: npt.NDArray[np.int64]) -> float:
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def normalized_mutual_info(truth: Sequence[str], labels: Sequence[int]) -> float:
    """Mutual information over the arithmetic mean of the two entropies (sklearn's default)."""
    table = _contingency(truth, labels)
    if table.shape[0] == table.shape[1] <= 1:
        return 1.0  # neither labeling splits the users: a perfect (trivial) match
    h_truth, h_labels = _entropy(table.sum(axis=1)), _entropy(table.sum(axis=0))
    if h_truth == 0.0 or h_labels == 0.0:
        return 0.0  # one side is constant, so it says nothing about the other
    n = table.sum()
    rows, cols = np.nonzero(table)
    cell = table[rows, cols].astype(np.float64)
    outer = table.sum(axis=1)[rows].astype(np.float64) * table.sum(axis=0)[cols]
    mutual = float((cell / n * (np.log(cell * n) - np.log(outer))).sum())
    return max(mutual, 0.0) / ((h_truth + h_labels) / 2)


def purity_per_class(truth: Sequence[str], labels: Sequence[int]) -> dict[str, float]:
    """For each persona, the share of its users that fall in its most common cluster."""
    table = _contingency(truth, labels)
    personas = np.unique(np.asarray(truth, dtype=str))
    return {
        str(persona): float(row.max() / row.sum())
        for persona, row in zip(personas, table, strict=True)
    }


def overall_purity(truth: Sequence[str], labels: Sequence[int]) -> float:
    """Share of users whose cluster's majority persona is their own; nan with no users."""
    table = _contingency(truth, labels)
    if table.size == 0:
        return math.nan
    return float(table.max(axis=0).sum() / table.sum())


# --- propensity against outcomes -------------------------------------------------------------


def _binary(y: Sequence[int]) -> npt.NDArray[np.bool_]:
    values = np.asarray(y)
    if not np.isin(values, (0, 1)).all():
        msg = "outcomes must be 0 or 1"
        raise ValueError(msg)
    return np.asarray(values == 1, dtype=np.bool_)


def _scores(
    y: Sequence[int], scores: Sequence[float]
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.float64]]:
    positive, values = _binary(y), np.asarray(scores, dtype=np.float64)
    if positive.shape != values.shape or positive.ndim != 1:
        msg = f"outcomes and scores must be 1-D of equal length: {positive.shape} != {values.shape}"
        raise ValueError(msg)
    return positive, values


def _average_ranks(values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """1-based ranks, tied values sharing the mean of the ranks they span."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    last = np.cumsum(counts)
    mean_rank = last - (counts - 1) / 2
    return mean_rank[inverse.ravel()].astype(np.float64)


def roc_auc(y: Sequence[int], scores: Sequence[float]) -> float:
    """Area under the ROC curve as the Mann-Whitney U statistic; nan unless both classes occur."""
    positive, values = _scores(y, scores)
    n_pos = int(positive.sum())
    n_neg = positive.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    rank_sum = float(_average_ranks(values)[positive].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def log_loss(y: Sequence[int], p: Sequence[float], eps: float = 1e-15) -> float:
    """Mean binary cross-entropy; p is clipped so a confident miss costs -log(eps), not inf."""
    positive, values = _scores(y, p)
    if positive.size == 0:
        return math.nan
    # Clip the probability of the observed outcome, not p: 1 - (1 - eps) is not eps in floats.
    observed = np.where(positive, values, 1 - values)
    return float(-np.log(np.clip(observed, eps, 1 - eps)).mean())


def precision_recall_f1(
    y: Sequence[int], p: Sequence[float], threshold: float = 0.5
) -> tuple[float, float, float]:
    """Scores of the prediction p >= threshold; each is 0.0 where its denominator is zero."""
    positive, values = _scores(y, p)
    predicted = values >= threshold
    hits = int((predicted & positive).sum())
    n_predicted, n_positive = int(predicted.sum()), int(positive.sum())
    precision = hits / n_predicted if n_predicted else 0.0
    recall = hits / n_positive if n_positive else 0.0
    f1 = 2 * hits / (n_predicted + n_positive) if n_predicted + n_positive else 0.0
    return precision, recall, f1


# --- stability of published segment changes --------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One segment change as published."""

    user_id: str
    time_ms: int  # event time of the decision
    previous: str | None  # None for a user's first assignment
    current: str
    # Propensity bands before and after: a change of band alone is a change too.
    previous_band: str = ""
    current_band: str = ""

    @property
    def before(self) -> tuple[str | None, str]:
        return self.previous, self.previous_band

    @property
    def after(self) -> tuple[str, str]:
        return self.current, self.current_band


def transitions(changes: Iterable[Change]) -> dict[tuple[str, str], int]:
    """Count of changes per (previous segment or "(new)", current segment)."""
    counts = Counter((c.previous if c.previous is not None else NEW, c.current) for c in changes)
    return dict(counts)


def _by_user(changes: Sequence[Change]) -> dict[str, list[Change]]:
    # Stable sort: changes with equal event times keep their published order.
    grouped: dict[str, list[Change]] = defaultdict(list)
    for change in sorted(changes, key=lambda c: c.time_ms):
        grouped[change.user_id].append(change)
    return grouped


def flapping_rate(changes: Sequence[Change], window_ms: int) -> float:
    """Share of changes A->B whose user's next change is B->A at most window_ms later, where
    A and B are (segment, propensity band) pairs.

    First assignments are not counted at all: there is nothing to flap back to.
    """
    moves = reversed_ = 0
    for history in _by_user(changes).values():
        for change, following in zip(history, [*history[1:], None], strict=True):
            if change.previous is None:
                continue
            moves += 1
            if (
                following is not None
                and following.before == change.after
                and following.after == change.before
                and following.time_ms - change.time_ms <= window_ms
            ):
                reversed_ += 1
    return reversed_ / moves if moves else 0.0


def _sample_times(first: int, last: int, step_ms: int) -> list[int]:
    times = list(range(first, last + 1, step_ms))
    if times[-1] != last:
        times.append(last)
    return times


def sizes_over_time(
    changes: Sequence[Change], step_ms: int
) -> tuple[list[int], dict[str, list[int]]]:
    """Users per segment sampled every step_ms from the first to the last change (both included).

    A user is in the segment of their latest change at or before the sample time.
    """
    if step_ms <= 0:
        msg = f"step_ms must be positive, got {step_ms}"
        raise ValueError(msg)
    if not changes:
        return [], {}
    ordered = sorted(changes, key=lambda c: c.time_ms)
    times = _sample_times(ordered[0].time_ms, ordered[-1].time_ms, step_ms)
    series: dict[str, list[int]] = {name: [] for name in sorted({c.current for c in ordered})}
    segment_of: dict[str, str] = {}
    counts: Counter[str] = Counter()
    applied = 0
    for t in times:
        while applied < len(ordered) and ordered[applied].time_ms <= t:
            change = ordered[applied]
            if change.user_id in segment_of:
                counts[segment_of[change.user_id]] -= 1
            segment_of[change.user_id] = change.current
            counts[change.current] += 1
            applied += 1
        for name, values in series.items():
            values.append(counts[name])
    return times, series


# --- projection for the cluster plot ---------------------------------------------------------


def pca_2d(z: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Rows projected on the first two principal components, shape (n, 2).

    Missing components (fewer than two rows, features or distinct directions) are zeros. Signs
    are fixed so the largest loading of each component is positive, making plots reproducible.
    """
    data = np.asarray(z, dtype=np.float64)
    if data.ndim != 2:
        msg = f"expected a 2-D array, got shape {data.shape}"
        raise ValueError(msg)
    out = np.zeros((data.shape[0], 2))
    if data.shape[0] < 2 or data.shape[1] == 0:
        return out
    centred = data - data.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    components = vt[:2]
    signs = np.sign(components[np.arange(len(components)), np.abs(components).argmax(axis=1)])
    components = components * np.where(signs == 0, 1.0, signs)[:, None]
    out[:, : len(components)] = centred @ components.T
    return out


# --- what the report shows -------------------------------------------------------------------


def _json_safe(value: object) -> object:
    """Plain JSON types: floats rounded, nan/inf as None, numpy scalars unwrapped, keys as str."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return round(value, ROUND_DIGITS) if math.isfinite(value) else None
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_json_safe(v) for v in value]
    return str(value)


@dataclass
class Evaluation:
    """Everything the evaluation report shows; the driver fills it."""

    users: int
    events: int
    clustered: int  # users with a cluster; 0 means no model had clusters (ARI, NMI are nan)
    ari: float
    nmi: float
    purity: dict[str, float]  # per persona
    overall_purity: float
    cluster_sizes: dict[int, int]
    cluster_labels: dict[int, str]  # readable label per cluster
    persona_by_cluster: dict[int, dict[str, int]]  # contingency: cluster -> persona -> users
    # Keys: auc, log_loss, precision, recall, f1, positives, negatives, base_rate.
    propensity: dict[str, float]
    segment_sizes: dict[str, int]  # final population per segment
    changes: int
    flapping_rate: float
    transitions: dict[tuple[str, str], int]
    sizes_times: list[int]  # from sizes_over_time
    sizes_series: dict[str, list[int]]
    projection: npt.NDArray[np.float64]  # (m, 2) sample of users from pca_2d
    projection_clusters: list[int]  # cluster of each projected user
    settings: dict[str, object]  # free-form run settings (learn rate, k, ...)
    # When the model became usable: events handled before the first version with clusters,
    # with a propensity; the events held out for propensity figures.
    timeline: dict[str, object] = field(default_factory=dict)
    # Event-time delays of purchase-driven promotions (see `promotion_delays`).
    delays: dict[str, float] = field(default_factory=dict)
    # Cross-sell, spend, outliers, parent groups, campaigns (`stream.tools.analytics`).
    analytics: dict[str, object] = field(default_factory=dict)
    dendrogram: Hierarchy | None = None  # the last version's tree over the clusters

    def as_dict(self) -> dict[str, object]:
        """JSON-safe summary for metrics.json; the projection is left to the plot."""
        ranked = sorted(self.transitions.items(), key=lambda item: (-item[1], item[0]))
        summary: dict[str, object] = {
            "users": self.users,
            "events": self.events,
            "clustered": self.clustered,
            "ari": self.ari,
            "nmi": self.nmi,
            "purity": self.purity,
            "overall_purity": self.overall_purity,
            # By cluster id, so runs diff cleanly whatever order the driver filled them in.
            "cluster_sizes": dict(sorted(self.cluster_sizes.items())),
            "cluster_labels": dict(sorted(self.cluster_labels.items())),
            "persona_by_cluster": dict(sorted(self.persona_by_cluster.items())),
            "propensity": self.propensity,
            "segment_sizes": self.segment_sizes,
            "changes": self.changes,
            "flapping_rate": self.flapping_rate,
            "transitions": [{"from": a, "to": b, "count": n} for (a, b), n in ranked],
            "sizes_times": self.sizes_times,
            "sizes_series": self.sizes_series,
            "settings": self.settings,
            "timeline": self.timeline,
            "delays": self.delays,
            "analytics": self.analytics,
        }
        return {key: _json_safe(value) for key, value in summary.items()}
