"""The Grafana dashboard of deploy/grafana, read panel by panel, for tests of its queries."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

DASHBOARD = (
    Path(__file__).resolve().parents[1] / "deploy" / "grafana" / "dashboards" / "segstream.json"
)


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    """The dashboard's JSON model."""
    dashboard: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return dashboard


def iter_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, rows included, with the panels of collapsed rows (nested in the row)."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


def panel_queries(rate_interval: str = "1m") -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query of every panel, ready for Prometheus' HTTP API:
    `$__rate_interval` is replaced by `rate_interval` (the data source variable only selects
    where the query runs, it does not appear in expressions)."""
    queries: list[tuple[str, str]] = []
    for panel in iter_panels(load_dashboard()):
        if panel.get("type") == "row":
            continue
        for target in panel.get("targets", []):
            expr = target.get("expr", "")
            if expr:
                queries.append((panel["title"], expr.replace("$__rate_interval", rate_interval)))
    return queries
