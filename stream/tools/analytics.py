"""`segstream evaluate`'s figures of the analytics beside the segments: cross-sell rules against
an offline FP-growth and the planted ones, spend predictions against the naive baseline,
outliers, the parent groups, and campaign outcomes. Each reads what the service's own step left
(its model version, the users' records, the population tallies in Redis)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import orjson

from features import resp, tallies
from segments.config import SegmentConfig
from segments.crosssell import CATEGORY_ITEM, RuleTable
from segments.engine import CONVERSIONS, OFFERS, SpendLabel
from segments.hierarchy import Hierarchy
from segments.policy import Record
from stream.errors import ConfigError
from stream.tools.association import (
    fpgrowth_rules,
    pairs,
    precision_at,
    recovered,
    session_baskets,
)
from stream.tools.generate import PLANTED_RULES

TOP_K: Final = 10


@dataclass(frozen=True)
class SpendSeen:
    """A resolved spend snapshot with a prediction: when, predicted, naive, spent."""

    time_ms: int
    predicted: float
    baseline: float
    spent: float


def spend_seen(labels: Iterable[SpendLabel], *, given: bool) -> list[SpendSeen]:
    """The labels with a prediction given at their snapshot (`given`), or else with one from
    the version current when they resolved (progressive validation)."""
    found = ((label, label.predicted if given else label.checked) for label in labels)
    return [
        SpendSeen(label.time_ms, predicted, label.baseline, label.spent)
        for label, predicted in found
        if predicted >= 0
    ]


def spend_figures(seen: Sequence[SpendSeen]) -> dict[str, float]:
    """MAE and RMSE of predictions made before their outcome was known, and of the naive
    prediction (the user's own recent spend) on the same snapshots."""
    if not seen:
        return {"labels": 0}
    spent = np.array([s.spent for s in seen])
    figures: dict[str, float] = {"labels": len(seen), "mean_spent": float(spent.mean())}
    # Predicting nothing for everyone: where most users spend nothing in a horizon, an
    # absolute error rewards it, so it is the floor a model is read against too.
    figures["zero_mae"] = float(spent.mean())
    figures["zero_rmse"] = float(math.sqrt(float((spent**2).mean())))
    for name, values in (
        ("model", [s.predicted for s in seen]),
        ("naive", [s.baseline for s in seen]),
    ):
        error = np.array(values) - spent
        figures[f"{name}_mae"] = float(np.abs(error).mean())
        figures[f"{name}_rmse"] = float(math.sqrt(float((error**2).mean())))
    return figures


def cross_sell_figures(
    rules: RuleTable | None, events: Iterable[Mapping[str, Any]], config: SegmentConfig
) -> dict[str, object]:
    """The service's rules against FP-growth's on the same baskets (products, categories):
    precision@10 of the top rules by lift, and which planted rules were recovered."""
    streamed = rules.top(len(rules)) if rules is not None else []
    kinds = {
        "products": [r for r in streamed if not r.antecedent.startswith(CATEGORY_ITEM)],
        "categories": [r for r in streamed if r.antecedent.startswith(CATEGORY_ITEM)],
    }
    listed = list(events)
    minimums = {"min_confidence": config.rule_min_confidence, "min_lift": config.rule_min_lift}
    figures: dict[str, object] = {"baskets_counted": round(rules.baskets, 1) if rules else 0}
    for kind, found in kinds.items():
        baskets = session_baskets(listed, categories=kind == "categories")
        # The service's minimums: a support, and at least so many baskets.
        count = config.rule_min_count / len(baskets) if baskets else 1.0
        support = min(1.0, max(config.rule_min_support, count, 1e-9))
        try:
            offline = fpgrowth_rules(baskets, min_support=support, **minimums)
        except ConfigError as exc:  # mlxtend is in the `evaluate` extra, not in `demo`
            figures["offline_missing"] = str(exc)
            offline = []
        figures[kind] = {
            "streamed": len(found),
            "offline": len(offline) if "offline_missing" not in figures else None,
            # Undefined when either side has no rule to rank.
            f"precision_at_{TOP_K}": precision_at(pairs(found), pairs(offline), TOP_K)
            if found and offline
            else None,
            "top": [_rule(r) for r in found[:TOP_K]],
        }
    planted = pairs(PLANTED_RULES)
    if _mentions(listed, planted):  # a rule can only be streamed from an item in the file
        hits = recovered(planted, pairs(kinds["products"]))
        figures["planted"] = {"rules": len(planted), "recovered": len(hits), "found": hits}
    return figures


def _mentions(events: Sequence[Mapping[str, Any]], planted: Sequence[tuple[str, str]]) -> bool:
    """Whether the file holds a planted antecedent (it came from the generator)."""
    antecedents = {a for a, _ in planted}
    return any(e.get("product_id") in antecedents for e in events)


def _rule(rule: Any) -> dict[str, object]:
    return {
        "antecedent": rule.antecedent,
        "consequent": rule.consequent,
        "support": round(rule.support, 5),
        "confidence": round(rule.confidence, 4),
        "lift": round(rule.lift, 2),
    }


def outlier_figures(records: Mapping[str, Record], truth: Mapping[str, str]) -> dict[str, object]:
    """The share of clustered users marked outliers, and their personas against everyone's."""
    clustered = {u: r for u, r in records.items() if r.cluster >= 0}
    outliers = [u for u, r in clustered.items() if r.outlier]
    return {
        "users": len(clustered),
        "outliers": len(outliers),
        "share": len(outliers) / len(clustered) if clustered else 0.0,
        "personas": _mix(truth.get(u, "?") for u in outliers),
        "personas_all": _mix(truth.get(u, "?") for u in clustered),
    }


def hierarchy_figures(
    hierarchy: Hierarchy | None, records: Mapping[str, Record], truth: Mapping[str, str]
) -> dict[str, object]:
    """Each parent group: its label, its clusters, its users and their personas."""
    if hierarchy is None or not hierarchy.labels:
        return {"parents": {}}
    members: dict[int, list[str]] = {}
    for user, record in records.items():
        if record.parent >= 0:
            members.setdefault(record.parent, []).append(user)
    parents = {
        parent: {
            "label": label,
            "clusters": hierarchy.children(parent),
            "users": len(members.get(parent, [])),
            "personas": _mix(truth.get(u, "?") for u in members.get(parent, [])),
        }
        for parent, label in sorted(hierarchy.labels.items())
    }
    return {"parents": parents}


def campaign_figures(client: resp.Client, prefix: str) -> dict[str, dict[str, float]]:
    """Offers and conversions by `<segment>|<action>`, from the population tallies."""
    found: dict[str, dict[str, float]] = {}
    for field, count in tallies.read(client, prefix).items():
        for kind, head in (("offers", OFFERS), ("conversions", CONVERSIONS)):
            if field.startswith(head):
                found.setdefault(field.removeprefix(head), {"offers": 0, "conversions": 0})[
                    kind
                ] = count
    for figures in found.values():
        figures["rate"] = figures["conversions"] / figures["offers"] if figures["offers"] else 0.0
    return dict(sorted(found.items(), key=lambda item: -item[1]["offers"]))


def read_events(lines: Iterable[bytes]) -> list[dict[str, Any]]:
    """The basket-relevant fields of the events of a file (the rest is left out to keep a
    large file's events in memory)."""
    wanted = ("user_id", "type", "session_id", "order_id", "product_id", "category")
    events = []
    for line in lines:
        if b'"add_to_cart"' in line or b'"purchase"' in line:
            try:
                event = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if isinstance(event, dict):
                events.append({k: event.get(k) for k in wanted})
    return events


def _mix(personas: Iterable[str]) -> dict[str, float]:
    counts = Counter(personas)
    total = sum(counts.values())
    return {p: round(n / total, 4) for p, n in counts.most_common()} if total else {}
