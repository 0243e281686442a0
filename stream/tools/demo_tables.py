"""The demo's closing tables: segments and clusters as the service left them in Redis, and how
the run did against the generator's personas, with the evaluation report of the same run."""

from __future__ import annotations

import csv
import math
from collections import Counter
from pathlib import Path

from segments import policy
from stream.service.segment_handler import SegmentHandler
from stream.settings import Settings
from stream.tools.evaluate import EvaluateOptions, Recorder, assess, with_store_figures
from stream.tools.quality import Evaluation
from stream.tools.report import write_report
from stream.tools.report_analytics import analytics_lines

EXAMPLES = 3


def segment_table(
    settings: Settings, recorder: Recorder, workdir: Path, stats: EvaluateOptions
) -> list[str]:
    """The segments and clusters in Redis, and the figures of the run with its report."""
    handler = recorder.inner
    with (workdir / "personas.csv").open(newline="") as handle:
        persona_of = {row["user_id"]: row["persona"] for row in csv.DictReader(handle)}
    states = dict(handler.store.states())
    records = {user: policy.load(state.segment) for user, state in states.items()}
    lines = [*_segments(records), "", *_clusters(records, persona_of, handler), ""]
    evaluation = assess(recorder, states, persona_of, stats, settings)
    evaluation = with_store_figures(evaluation, recorder, workdir / "events.jsonl", settings)
    path = write_report(workdir / "report", evaluation)
    analytics = analytics_lines(evaluation)
    return [*lines, *_quality(evaluation, handler, stats), *analytics, f"report      {path}"]


def _segments(records: dict[str, policy.Record]) -> list[str]:
    by_segment: dict[str, list[str]] = {}
    for user, record in sorted(records.items()):
        by_segment.setdefault(record.segment, []).append(user)
    lines = ["segments (from Redis):", f"{'segment':<22}{'users':>7}   examples"]
    for segment, users in sorted(by_segment.items(), key=lambda item: -len(item[1])):
        lines.append(f"{segment:<22}{len(users):>7}   {', '.join(users[:EXAMPLES])}")
    return lines


def _clusters(
    records: dict[str, policy.Record], persona_of: dict[str, str], handler: SegmentHandler
) -> list[str]:
    params = handler.sync.params
    members: dict[int, Counter[str]] = {}
    for user, record in records.items():
        members.setdefault(record.cluster, Counter())[persona_of.get(user, "?")] += 1
    labels = {c: params.label_of(c) if c >= 0 else "(not clustered yet)" for c in sorted(members)}
    width = max((len(label) for label in labels.values()), default=0) + 2
    lines = [
        f"clusters (model v{params.version}):",
        f"{'cluster':>7}{'users':>7}   {'label':<{width}}top persona",
    ]
    for cluster, personas in sorted(members.items()):
        persona, count = personas.most_common(1)[0]
        share = count / sum(personas.values())
        users = sum(personas.values())
        lines.append(f"{cluster:>7}{users:>7}   {labels[cluster]:<{width}}{persona} {share:.0%}")
    return lines


def _quality(evaluation: Evaluation, handler: SegmentHandler, stats: EvaluateOptions) -> list[str]:
    """The run's figures: when the model came, how its segments and scores did."""
    e, timeline = evaluation, evaluation.timeline
    prop, delays = e.propensity, e.delays
    live = handler.quality
    clusters = (
        f"ARI {e.ari:.3f}, NMI {e.nmi:.3f} over {e.clustered:,} users"
        if e.clustered
        else "no clusters (the model never had enough users to seed them)"
    )
    lines = [
        f"model       first clusters after {_at(timeline['clusters_at_event'], e.events)}, "
        f"first propensity after {_at(timeline['propensity_at_event'], e.events)}",
        f"clusters vs personas: {clusters}",
        f"propensity  held-out ROC AUC {_num(prop['auc'])} on the last {stats.holdout:.0%} of "
        "event time "
        f"({int(prop['positives'] + prop['negatives']):,} labels); all labels "
        f"{_num(live.roc_auc())} on {live.labels:,}",
        f"changes     {e.changes:,} segment changes, flapping {e.flapping_rate:.1%}; "
        f"rule segments entered {timeline['memberships_entered']:,}, "
        f"left {timeline['memberships_left']:,}",
    ]
    if delays.get("promotions"):
        lines.append(
            f"            purchase-driven promotions: {int(delays['promotions']):,}, median "
            f"delay {delays['median_batches']:g} batches "
            f"({delays['median_ms'] / 3_600_000:.1f} h of event time)"
        )
    return lines


def _at(events: object, total: int) -> str:
    if not isinstance(events, int):
        return "never"
    return f"{events:,} events ({events / max(total, 1):.1%})"


def _num(value: float) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"
