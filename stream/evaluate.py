"""`segstream evaluate`: how well the segments recover the generator's personas, how well the
propensity ranks future buyers, and how stable segments are, with a report.

The events go through the service's own fold, timers, engine and trainer (`stream.offline`),
without servers. The classifier stops learning at the hold-out split; propensity figures are
computed on the snapshots resolved after it, so it never learned from what it is scored on.
"""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import orjson

from segments.config import DAY_MS, SegmentConfig
from segments.engine import Engine
from segments.policy import load
from stream.offline import OfflineOptions, OfflinePipeline, OfflineRun
from stream.quality import (
    Change,
    Evaluation,
    adjusted_rand_index,
    flapping_rate,
    log_loss,
    normalized_mutual_info,
    overall_purity,
    pca_2d,
    precision_recall_f1,
    purity_per_class,
    roc_auc,
    sizes_over_time,
    transitions,
)
from stream.replay import open_text

PROJECTED_USERS = 4_000
FLAP_WINDOW_MS = 7 * DAY_MS


@dataclass(frozen=True)
class EvaluateOptions:
    holdout: float = 0.3  # the last share of the event-time range is held out
    batch_size: int = 5_000
    partitions: int = 6


def evaluate(
    events: Path,
    personas: Path,
    config: SegmentConfig,
    options: EvaluateOptions,
    progress: Callable[[int], None] | None = None,
) -> Evaluation:
    first, last = _time_range(events)
    split = int(last - (last - first) * options.holdout)
    offline = OfflineOptions(
        partitions=options.partitions, batch_size=options.batch_size, labels_until_ms=split
    )
    pipeline = OfflinePipeline(Engine(config), offline)
    stream, _ = open_text(events)
    with stream:
        pipeline.feed(stream, progress)
    truth = _personas(personas)
    return _evaluation(pipeline, pipeline.run, truth, split, config)


def _time_range(events: Path) -> tuple[int, int]:
    """First and last event time, read from the file (generated files are in time order, but
    replays of other data need not be)."""
    first, last = 2**63, 0
    stream, _ = open_text(events)
    with stream:
        for line in stream:
            if line.strip():
                try:
                    ts = orjson.loads(line).get("ts")
                except orjson.JSONDecodeError:
                    continue
                if isinstance(ts, int):
                    first, last = min(first, ts), max(last, ts)
    return first, last


def _personas(path: Path) -> dict[str, str]:
    with path.open(newline="") as handle:
        return {row["user_id"]: row["persona"] for row in csv.DictReader(handle)}


def _evaluation(
    pipeline: OfflinePipeline,
    run: OfflineRun,
    truth: dict[str, str],
    split: int,
    config: SegmentConfig,
) -> Evaluation:
    records = {u: load(s.segment) for u, s in run.states.items()}
    users = [u for u in records if u in truth and records[u].cluster >= 0]
    personas = [truth[u] for u in users]
    clusters = [records[u].cluster for u in users]
    changes = [Change(c.user_id, c.time_ms, c.previous, c.current) for c in run.changes]
    held = [r for r in run.resolutions if r.time_ms >= split]
    y = [int(r.bought) for r in held]
    p = [r.propensity for r in held]
    precision, recall, f1 = precision_recall_f1(y, p)
    times, series = sizes_over_time(changes, DAY_MS)
    params = pipeline.params
    projection, projected = _projection(pipeline, users, clusters)
    return Evaluation(
        users=len(run.states),
        events=run.events,
        ari=adjusted_rand_index(personas, clusters),
        nmi=normalized_mutual_info(personas, clusters),
        purity=purity_per_class(personas, clusters),
        overall_purity=overall_purity(personas, clusters),
        cluster_sizes=dict(Counter(clusters)),
        cluster_labels={int(c): params.label_of(int(c)) for c in set(clusters)},
        persona_by_cluster=_contingency(personas, clusters),
        propensity={
            "auc": roc_auc(y, p),
            "log_loss": log_loss(y, p),
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "positives": float(sum(y)),
            "negatives": float(len(y) - sum(y)),
            "base_rate": float(np.mean(y)) if y else float("nan"),
        },
        segment_sizes=dict(Counter(r.segment for r in records.values())),
        changes=len(changes),
        flapping_rate=flapping_rate(changes, FLAP_WINDOW_MS),
        transitions=transitions(changes),
        sizes_times=times,
        sizes_series=series,
        projection=projection,
        projection_clusters=projected,
        settings=_settings(config, pipeline),
    )


def _contingency(personas: list[str], clusters: list[int]) -> dict[int, dict[str, int]]:
    table: dict[int, Counter[str]] = {}
    for persona, cluster in zip(personas, clusters, strict=True):
        table.setdefault(cluster, Counter())[persona] += 1
    return {c: dict(counts) for c, counts in table.items()}


def _projection(
    pipeline: OfflinePipeline, users: list[str], clusters: list[int]
) -> tuple[np.ndarray, list[int]]:
    step = max(1, len(users) // PROJECTED_USERS)
    chosen = users[::step]
    if not chosen:
        return np.zeros((0, 2)), []
    engine, params, states = pipeline.engine, pipeline.params, pipeline.run.states
    now = max(s.last_seen for s in states.values())
    raw = np.array([engine.columns.row(states[u], now) for u in chosen])
    z = (engine.inputs(raw) - params.mean) / params.scale
    return pca_2d(z), clusters[::step]


def _settings(config: SegmentConfig, pipeline: OfflinePipeline) -> dict[str, object]:
    return {
        "clusterer": config.clusterer,
        "k": config.k,
        "learn_rate": config.learn_rate,
        "label_rate": config.label_rate,
        "classifier": config.classifier,
        "horizon_days": config.horizon_ms / DAY_MS,
        "model_versions": pipeline.params.version,
        "samples_learned": pipeline.model.learned,
        "labels_learned": pipeline.model.labels_learned,
    }
