"""The demo's closing tables: segments and clusters as the service left them in Redis, scored
against the generator's personas, and the evaluation report of the same events."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

from segments import policy
from stream.evaluate import EvaluateOptions, evaluate
from stream.pipeline import SegmentHandler
from stream.progress import Progress
from stream.quality import adjusted_rand_index, normalized_mutual_info
from stream.report import write_report
from stream.settings import Settings

EXAMPLES = 3


def segment_table(settings: Settings, handler: SegmentHandler, workdir: Path) -> list[str]:
    with (workdir / "personas.csv").open(newline="") as handle:
        persona_of = {row["user_id"]: row["persona"] for row in csv.DictReader(handle)}
    records = {
        found["user_id"]: policy.load(found["segment"])
        for found in handler.store.profiles()
        if found["segment"]
    }
    lines = [*_segments(records), "", *_clusters(records, persona_of, handler), ""]
    lines += _quality(records, persona_of, handler)
    lines += ["", *_report(settings, workdir)]
    return lines


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
    lines = [
        f"clusters (model v{params.version}):",
        f"{'cluster':>7}{'users':>7}   {'label':<48}top persona",
    ]
    for cluster, personas in sorted(members.items()):
        persona, count = personas.most_common(1)[0]
        label = params.label_of(cluster) if cluster >= 0 else "(not clustered yet)"
        share = count / sum(personas.values())
        lines.append(f"{cluster:>7}{sum(personas.values()):>7}   {label:<48}{persona} {share:.0%}")
    return lines


def _quality(
    records: dict[str, policy.Record], persona_of: dict[str, str], handler: SegmentHandler
) -> list[str]:
    users = [u for u, r in records.items() if r.cluster >= 0 and u in persona_of]
    truth = [persona_of[u] for u in users]
    clusters = [records[u].cluster for u in users]
    live = handler.quality.as_dict()
    lines = [
        f"clusters vs personas: ARI {adjusted_rand_index(truth, clusters):.3f}, "
        f"NMI {normalized_mutual_info(truth, clusters):.3f} over {len(users):,} users",
    ]
    if handler.quality.both_outcomes():
        lines.append(
            f"propensity, live (scored before labelled): ROC AUC {live['roc_auc']:.3f}, "
            f"log loss {live['log_loss']:.3f}, F1 {live['f1']:.3f} on {live['labels']:,} labels"
        )
    return lines


def _report(settings: Settings, workdir: Path) -> list[str]:
    progress = Progress("evaluate")
    evaluation = evaluate(
        workdir / "events.jsonl",
        workdir / "personas.csv",
        settings.segments.config(),
        EvaluateOptions(),
        progress,
    )
    progress.close()
    path = write_report(workdir / "report", evaluation)
    return [
        f"evaluation of the same events offline: ARI {evaluation.ari:.3f}, "
        f"NMI {evaluation.nmi:.3f}, held-out propensity ROC AUC "
        f"{evaluation.propensity['auc']:.3f}, flapping {evaluation.flapping_rate:.1%}",
        f"report      {path}",
    ]
