"""The report's sections on the analytics beside the segments (`stream.tools.analytics`): cross-
sell rules, spend prediction, outliers, parent groups with their dendrogram, campaigns."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from matplotlib.axes import Axes
from scipy.cluster.hierarchy import dendrogram

from stream.tools.quality import Evaluation

DENDROGRAM_PNG = "dendrogram.png"
TOP_CAMPAIGNS = 15


def draw_dendrogram(ax: Axes, evaluation: Evaluation) -> None:
    tree = evaluation.dendrogram
    if tree is None or not len(tree.linkage):
        ax.text(0.5, 0.5, "no tree: fewer than two clusters", ha="center", va="center")
        ax.set_axis_off()
        return
    names = [
        f"{c} (parent {tree.parent(c)})\n{evaluation.cluster_labels.get(c, '')}"
        for c in tree.leaves
    ]
    dendrogram(tree.linkage, labels=names, ax=ax, orientation="right", leaf_font_size=7)
    ax.set_xlabel("Ward linkage distance between cluster centres (standardized)")
    ax.set_title("Clusters and their parent groups")


def analytics_lines(e: Evaluation) -> list[str]:
    """The analytics in the demo's summary, one line each."""
    found = e.analytics
    lines = []
    rules = found.get("cross_sell") or {}
    if isinstance(rules, Mapping):
        products = rules.get("products", {})
        planted = rules.get("planted")
        recovered = (
            f"; planted recovered {planted['recovered']} of {planted['rules']}" if planted else ""
        )
        precision = products.get("precision_at_10")
        versus = (
            f", precision@10 against FP-growth {precision:.2f}" if precision is not None else ""
        )
        lines.append(
            f"cross-sell  {products.get('streamed', 0)} product rules from"
            f" {rules.get('baskets_counted', 0):,.0f} baskets{recovered}{versus}"
        )
    lines.append(f"spend       {_spend_line(found.get('spend'))}")
    outliers = found.get("outliers") or {}
    if isinstance(outliers, Mapping) and outliers.get("users"):
        top = next(iter(outliers.get("personas", {}).items()), ("n/a", 0.0))
        lines.append(
            f"outliers    {outliers['outliers']:,} of {outliers['users']:,} clustered users"
            f" ({outliers['share']:.1%}), most of them {top[0]} ({top[1]:.0%})"
        )
    lines += _parent_lines(found.get("hierarchy"))
    lines += _campaign_lines(found.get("campaigns"))
    return lines


def _cross_sell_lines(rules: Any) -> list[str]:
    if not isinstance(rules, Mapping):
        return []
    products = rules.get("products", {})
    line = (
        f"cross-sell  {products.get('streamed', 0)} product rules from"
        f" {rules.get('baskets_counted', 0):,.0f} baskets"
    )
    if planted := rules.get("planted"):
        line += f"; planted recovered {planted['recovered']} of {planted['rules']}"
    if (precision := products.get("precision_at_10")) is not None:
        line += f", precision@10 against FP-growth {precision:.2f}"
    return [line]


def _spend_line(found: Any) -> str:
    if not isinstance(found, Mapping):
        return "n/a"
    figures = found.get("given_at_snapshot", {})
    how = "given at snapshots"
    if not figures.get("labels"):
        figures, how = found.get("progressive", {}), "progressive"
    if not figures.get("labels"):
        return "no prediction resolved yet (a label takes the whole horizon of event time)"
    return (
        f"predicted 30-day spend MAE {figures['model_mae']:.1f} against"
        f" {figures['naive_mae']:.1f} for the user's own recent spend"
        f" ({int(figures['labels']):,} labels, {how})"
    )


def _parent_lines(found: Any) -> list[str]:
    if not isinstance(found, Mapping) or not found.get("parents"):
        return []
    groups = [
        f"{parent}: {group['label']} (clusters {', '.join(map(str, group['clusters']))})"
        for parent, group in found["parents"].items()
    ]
    return [f"parents     {groups[0]}", *(f"            {g}" for g in groups[1:])]


def _campaign_lines(found: Any) -> list[str]:
    if not isinstance(found, Mapping) or not found:
        return []
    best = max(found.items(), key=lambda item: (item[1]["rate"], item[1]["offers"]))
    worst = min(found.items(), key=lambda item: (item[1]["rate"], -item[1]["offers"]))
    return [
        f"campaigns   {len(found)} segment/action pairs; best {best[0].replace('|', ' / ')}"
        f" {best[1]['rate']:.0%} of {best[1]['offers']:,} offers converted,"
        f" worst {worst[0].replace('|', ' / ')} {worst[1]['rate']:.0%}"
    ]


def analytics_sections(e: Evaluation) -> list[str]:
    found = e.analytics
    return [
        *_cross_sell(found.get("cross_sell")),
        *_spend(found.get("spend")),
        *_outliers(found.get("outliers")),
        *_parents(found.get("hierarchy")),
        *_campaigns(found.get("campaigns")),
    ]


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def _cross_sell(found: Any) -> list[str]:
    if not isinstance(found, Mapping):
        return []
    rows = []
    for kind in ("products", "categories"):
        figures = found.get(kind, {})
        rows.append(
            [
                kind,
                f"{figures.get('streamed', 0):,}",
                f"{figures.get('offline', 0):,}",
                _precision(figures.get("precision_at_10")),
            ]
        )
    lines = ["## Cross-sell rules", ""]
    lines += [f"Baskets counted by the trainer (decayed): {found.get('baskets_counted', 0):,}.", ""]
    lines += _table(["Items", "Rules streamed", "Rules offline (FP-growth)", "Precision@10"], rows)
    if planted := found.get("planted"):
        lines += [
            f"Planted rules recovered: {planted['recovered']} of {planted['rules']}"
            f" ({', '.join(f'{a} -> {b}' for a, b in planted['found']) or 'none'}).",
            "",
        ]
    top = found.get("products", {}).get("top", [])
    if top:
        rules = [
            [r["antecedent"], r["consequent"], f"{r['confidence']:.2f}", f"{r['lift']:.1f}"]
            for r in top
        ]
        lines += _table(["Antecedent", "Consequent", "Confidence", "Lift"], rules)
    return lines


def _precision(value: float | None) -> str:
    return "n/a (no rule on one side)" if value is None else f"{value:.2f}"


def _spend(found: Any) -> list[str]:
    if not isinstance(found, Mapping):
        return []
    rows = []
    for name, how in (
        ("progressive", "the version current when the label resolved, before learning it"),
        ("given_at_snapshot", "given at the snapshot"),
    ):
        figures = found.get(name, {})
        if not figures.get("labels"):
            continue
        labels = f"{int(figures['labels']):,}"
        rows += [
            [how, labels, f"{figures['model_mae']:.2f}", f"{figures['model_rmse']:.2f}"],
            ["naive: own recent spend", labels, f"{figures['naive_mae']:.2f}",
             f"{figures['naive_rmse']:.2f}"],
            ["nothing for everyone", labels, f"{figures['zero_mae']:.2f}",
             f"{figures['zero_rmse']:.2f}"],
        ]  # fmt: skip
    if not rows:
        note = "No spend prediction resolved yet: a label needs the whole horizon of event time."
        return ["## Spend prediction", "", note, ""]
    header = ["Prediction", "Labels", "MAE", "RMSE"]
    return ["## Spend prediction", "", *_table(header, rows)]


def _outliers(found: Any) -> list[str]:
    if not isinstance(found, Mapping):
        return []
    share = found.get("share", 0.0)
    mix = found.get("personas", {})
    everyone = found.get("personas_all", {})
    rows = [[p, f"{s:.1%}", f"{everyone.get(p, 0.0):.1%}"] for p, s in mix.items()]
    intro = (
        f"{found.get('outliers', 0):,} of {found.get('users', 0):,} clustered users"
        f" ({share:.1%}) lie outside every dense region."
    )
    return ["## Outliers", "", intro, "", *_table(["Persona", "Of outliers", "Of all"], rows)]


def _parents(found: Any) -> list[str]:
    if not isinstance(found, Mapping) or not found.get("parents"):
        return []
    rows = []
    for parent, group in found["parents"].items():
        top = next(iter(group["personas"].items()), ("n/a", 0.0))
        clusters = ", ".join(str(c) for c in group["clusters"])
        rows.append(
            [str(parent), group["label"], clusters, f"{group['users']:,}", f"{top[0]} {top[1]:.0%}"]
        )
    header = ["Parent", "Label", "Clusters", "Users", "Top persona"]
    image = f"![Clusters and their parent groups]({DENDROGRAM_PNG})"
    return ["## Parent groups", "", *_table(header, rows), image, ""]


def _campaigns(found: Any) -> list[str]:
    if not isinstance(found, Mapping) or not found:
        return []
    rows = [
        [pair.replace("|", " / "), f"{f['offers']:,}", f"{f['conversions']:,}", f"{f['rate']:.1%}"]
        for pair, f in list(found.items())[:TOP_CAMPAIGNS]
    ]
    intro = (
        "A conversion is a purchase within the horizon after the change that carried the action"
        " (the last offer a user got takes the credit)."
    )
    header = ["Segment / action", "Offers", "Conversions", "Rate"]
    return ["## Campaign outcomes", "", intro, "", *_table(header, rows)]
