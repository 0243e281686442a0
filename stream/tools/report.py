"""The `segstream evaluate` report: report.md, metrics.json and four PNG plots in one directory."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import orjson

from stream.errors import ConfigError

try:
    import matplotlib
except ImportError as exc:
    msg = (
        "reports are drawn with matplotlib, which is not installed: pip install"
        " 'segstream[report]' (or 'segstream[demo]' for the demo, which includes it)"
    )
    raise ConfigError(msg) from exc

# Before pyplot is imported: render to files only, no display needed (servers, CI).
matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes

from stream.tools.quality import Evaluation
from stream.tools.report_analytics import DENDROGRAM_PNG, analytics_sections, draw_dendrogram

CLUSTERS_PNG = "clusters.png"
SIZES_PNG = "segment_sizes.png"
TRANSITIONS_PNG = "transitions.png"
TOP_TRANSITIONS = 15
DPI = 120


def write_report(directory: Path, evaluation: Evaluation) -> Path:
    """Write the report files into `directory` (created if needed); return the report.md path."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "metrics.json").write_bytes(
        orjson.dumps(evaluation.as_dict(), option=orjson.OPT_INDENT_2)
    )
    _plot(directory / CLUSTERS_PNG, evaluation, _draw_clusters, (7, 6))
    _plot(directory / SIZES_PNG, evaluation, _draw_sizes, (9, 5))
    _plot(directory / TRANSITIONS_PNG, evaluation, _draw_transitions, (8, 7))
    _plot(directory / DENDROGRAM_PNG, evaluation, draw_dendrogram, (8, 6))
    path = directory / "report.md"
    path.write_text(render_markdown(evaluation), encoding="utf-8")
    return path


# --- plots -----------------------------------------------------------------------------------


def _plot(
    path: Path,
    evaluation: Evaluation,
    draw: Callable[[Axes, Evaluation], None],
    size: tuple[float, float],
) -> None:
    fig, ax = plt.subplots(figsize=size)
    try:
        draw(ax, evaluation)
        fig.tight_layout()
        fig.savefig(path, dpi=DPI)
    finally:
        plt.close(fig)  # pyplot keeps every open figure alive otherwise


def _nothing(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes)
    ax.set_axis_off()


def _draw_clusters(ax: Axes, evaluation: Evaluation) -> None:
    points, clusters = evaluation.projection, np.asarray(evaluation.projection_clusters)
    if len(points) != len(clusters):
        msg = f"{len(points)} projected users but {len(clusters)} cluster ids"
        raise ValueError(msg)
    ax.set_title("Users on the first two principal components, by cluster")
    if len(points) == 0:
        _nothing(ax, "no users projected")
        return
    ids = sorted(set(clusters.tolist()))
    palette = matplotlib.colormaps["tab10" if len(ids) <= 10 else "tab20"]
    for i, cluster in enumerate(ids):
        mine = points[clusters == cluster]
        label = f"{cluster}: {evaluation.cluster_labels.get(cluster, '?')}"
        ax.scatter(
            mine[:, 0], mine[:, 1], s=8, alpha=0.6, color=palette(i % palette.N), label=label
        )
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.legend(title="cluster", fontsize="small", markerscale=2, loc="best")


def _draw_sizes(ax: Axes, evaluation: Evaluation) -> None:
    ax.set_title("Users per segment over event time")
    if not evaluation.sizes_times or not evaluation.sizes_series:
        _nothing(ax, "no segment changes")
        return
    times = np.array(evaluation.sizes_times, dtype="datetime64[ms]")
    # The concise converter labels ticks without repeating the year and month on each one.
    with plt.rc_context({"date.converter": "concise"}):
        for name, counts in sorted(evaluation.sizes_series.items()):
            ax.plot(times, counts, label=name, marker="." if len(times) < 30 else None)
    ax.set_xlabel("event time (UTC)")
    ax.set_ylabel("users")
    ax.legend(fontsize="small", loc="upper left")


def _draw_transitions(ax: Axes, evaluation: Evaluation) -> None:
    ax.set_title("Segment changes, from (rows) to (columns)")
    if not evaluation.transitions:
        _nothing(ax, "no segment changes")
        return
    sources = sorted({a for a, _ in evaluation.transitions})
    targets = sorted({b for _, b in evaluation.transitions})
    counts = np.zeros((len(sources), len(targets)), dtype=np.int64)
    for (a, b), n in evaluation.transitions.items():
        counts[sources.index(a), targets.index(b)] = n
    ax.imshow(counts, cmap="Blues", aspect="auto")
    # Dark text on light cells, white on dark ones, so every number stays legible.
    middle = counts.max() / 2
    for (row, col), cell in np.ndenumerate(counts):
        colour = "white" if cell > middle else "black"
        ax.text(col, row, f"{cell:,}", ha="center", va="center", color=colour, fontsize="small")
    ax.set_xticks(range(len(targets)), targets, rotation=45, ha="right")
    ax.set_yticks(range(len(sources)), sources)
    ax.set_xlabel("to")
    ax.set_ylabel("from")


# --- markdown --------------------------------------------------------------------------------


def _num(value: float | None, digits: int = 4) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.{digits}f}"


def _share(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.1%}"


def _cell(value: object) -> str:
    # A pipe would split the table cell.
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return [*lines, ""]


def _headline(e: Evaluation) -> list[str]:
    prop = e.propensity
    rows = [*_cluster_rows(e), *_propensity_rows(prop)]
    rows += [
        ["Segment changes", f"{e.changes:,}"],
        ["Flapping rate", f"{_num(e.flapping_rate)} ({_share(e.flapping_rate)})"],
        *_timeline_rows(e),
    ]
    notes = [
        "ARI is 1 when clusters reproduce the personas exactly and about 0 for a random "
        "assignment; NMI is 1 for a perfect match and 0 for independence; purity is the share "
        "of users whose cluster's majority persona is their own.",
        "",
        f"Propensity outcomes: {_count(prop.get('positives'))} positive, "
        f"{_count(prop.get('negatives'))} negative (base rate "
        f"{_num(prop.get('base_rate'))}); each score was given before its outcome was known. "
        "Precision, recall and F1 count a propensity at or above the decision threshold as a "
        "predicted positive. The flapping rate is the share of segment or band moves that the "
        "same user reverses within the window. A purchase-driven promotion is a move to a more "
        "valuable segment first proposed in the batch that carried the purchase; its delay "
        "counts batches from that one (0: the same batch).",
        "",
    ]
    return ["## Headline figures", "", *_table(["Metric", "Value"], rows), *notes]


def _cluster_rows(e: Evaluation) -> list[list[str]]:
    if not e.clustered:
        nothing = "no clusters: the model never had enough users to seed them"
        return [["Clusters", nothing]]
    return [
        ["Adjusted Rand index (clusters vs personas)", _num(e.ari)],
        ["Normalised mutual information", _num(e.nmi)],
        ["Overall purity", _num(e.overall_purity)],
        ["Users with a cluster", f"{e.clustered:,} of {e.users:,}"],
    ]


def _propensity_rows(prop: dict[str, float]) -> list[list[str]]:
    return [
        ["Propensity ROC AUC (held out)", _num(prop.get("auc"))],
        ["Propensity log loss", _num(prop.get("log_loss"))],
        ["Propensity precision", _num(prop.get("precision"))],
        ["Propensity recall", _num(prop.get("recall"))],
        ["Propensity F1", _num(prop.get("f1"))],
    ]


def _timeline_rows(e: Evaluation) -> list[list[str]]:
    timeline, delays = e.timeline, e.delays
    rows = []
    for key, name in (("clusters_at_event", "clusters"), ("propensity_at_event", "propensity")):
        if key in timeline:
            at = timeline[key]
            when = "never" if not isinstance(at, int) else f"after {at:,} events"
            rows.append([f"First {name}", f"{when} of {e.events:,}"])
    if delays.get("promotions"):
        rows.append(
            [
                "Purchase-driven promotions: median (p90) delay",
                f"{delays['median_batches']:g} ({delays['p90_batches']:g}) batches, "
                f"{delays['median_ms'] / 3_600_000:.1f} h of event time, "
                f"{int(delays['promotions']):,} promotions",
            ]
        )
    if "memberships_entered" in timeline:
        rows.append(
            [
                "Rule segments entered / left",
                f"{timeline['memberships_entered']:,} / {timeline['memberships_left']:,}",
            ]
        )
    return rows


def _count(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{int(value):,}"


def _purity(e: Evaluation) -> list[str]:
    rows = [[persona, _num(value)] for persona, value in sorted(e.purity.items())]
    intro = "Share of each persona's users that land in its most common cluster."
    return ["## Purity per persona", "", intro, "", *_table(["Persona", "Purity"], rows)]


def _clusters(e: Evaluation) -> list[str]:
    rows = []
    for cluster, size in sorted(e.cluster_sizes.items()):
        personas = e.persona_by_cluster.get(cluster, {})
        top, count = max(personas.items(), key=lambda kv: kv[1], default=("n/a", 0))
        share = _share(count / size) if size else "n/a"
        rows.append([str(cluster), e.cluster_labels.get(cluster, ""), f"{size:,}", top, share])
    header = ["Cluster", "Label", "Users", "Top persona", "Top persona share"]
    image = f"![Users by cluster on two principal components]({CLUSTERS_PNG})"
    return ["## Clusters", "", *_table(header, rows), image, ""]


def _segments(e: Evaluation) -> list[str]:
    total = sum(e.segment_sizes.values())
    ranked = sorted(e.segment_sizes.items(), key=lambda kv: (-kv[1], kv[0]))
    rows = [[name, f"{n:,}", _share(n / total) if total else "n/a"] for name, n in ranked]
    image = f"![Segment populations over event time]({SIZES_PNG})"
    return ["## Segment sizes", "", *_table(["Segment", "Users", "Share"], rows), image, ""]


def _transitions(e: Evaluation) -> list[str]:
    ranked = sorted(e.transitions.items(), key=lambda kv: (-kv[1], kv[0]))
    rows = [[a, b, f"{n:,}"] for (a, b), n in ranked[:TOP_TRANSITIONS]]
    shown = f"The {TOP_TRANSITIONS} most frequent of" if len(ranked) > TOP_TRANSITIONS else "All"
    intro = f'{shown} {len(ranked)} transitions ("(new)" is a first assignment).'
    image = f"![Segment transition counts]({TRANSITIONS_PNG})"
    table = _table(["From", "To", "Changes"], rows)
    return ["## Top transitions", "", intro, "", *table, image, ""]


def _settings(e: Evaluation) -> list[str]:
    rows = [[name, _setting(value)] for name, value in sorted(e.settings.items())]
    return ["## Settings", "", *_table(["Setting", "Value"], rows)]


def _setting(value: object) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def render_markdown(evaluation: Evaluation) -> str:
    """The report.md text; images are linked relative to the report's own directory."""
    e = evaluation
    lines = [
        "# Segmentation evaluation",
        "",
        f"{e.users:,} users, {e.events:,} events, scored against the generator's personas.",
        "",
        *_headline(e),
        *(_purity(e) if e.clustered else []),
        *_clusters(e),
        *_segments(e),
        *_transitions(e),
        *analytics_sections(e),
        *_settings(e),
    ]
    return "\n".join(lines).rstrip() + "\n"
