"""The operators' observability config in deploy/: Prometheus scrape config and alert rules (checked
and unit-tested with promtool), the Grafana dashboard read panel by panel, and the Kubernetes
PrometheusRule. Every metric a query names must be one the service really exposes."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.dashboard import iter_panels, load_dashboard, panel_queries

pytestmark = [pytest.mark.deploy, pytest.mark.unit]

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
ALERTS_TEST = PROMETHEUS / "alerts_test.yml"
PROMETHEUS_CONFIG = PROMETHEUS / "prometheus.yml"
PROMETHEUS_RULE = ROOT / "deploy" / "k8s" / "prometheusrule.yaml"
GRAFANA = ROOT / "deploy" / "grafana" / "provisioning"

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
METRIC = re.compile(r"(?<![A-Za-z0-9_:])segstream_[a-z0-9_]+")
RECORDED = re.compile(r"(?<![A-Za-z0-9_:])segstream:[a-z0-9_:]+")
GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
MATCHERS = re.compile(r"\{([^}]*)\}")
USER_LABELS = {"user_id", "user", "userid", "user_key"}


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _promtool(*args: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not on PATH: apt-get install prometheus (Debian) to get it")
    done = subprocess.run(
        [promtool, *args], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"


def _exposed_names() -> set[str]:
    """Sample names the service exposes, from its metric families' names and types: labelled
    metrics have no samples before a label value is first used."""
    from prometheus_client import REGISTRY

    import stream.ops.metrics  # noqa: F401  (registers every metric of the service)

    suffixes = {
        "counter": ("_total", "_created"),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "info": ("_info",),
    }
    names: set[str] = set()
    for family in REGISTRY.collect():
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return {name for name in names if name.startswith("segstream_")}


def _rules() -> list[dict[str, Any]]:
    return [rule for group in _yaml(ALERTS)["groups"] for rule in group["rules"]]


def _alerts() -> list[dict[str, Any]]:
    return [rule for rule in _rules() if "alert" in rule]


def _recorded() -> set[str]:
    return {rule["record"] for rule in _rules() if "record" in rule}


def _all_exprs() -> list[tuple[str, str]]:
    """(where, expr) of every dashboard query and every rule."""
    exprs = [(f"panel {title!r}", expr) for title, expr in panel_queries()]
    for rule in _rules():
        exprs.append((f"rule {rule.get('alert') or rule.get('record')}", str(rule["expr"])))
    return exprs


def _label_names(expr: str) -> set[str]:
    """Label names an expression groups, joins or filters by."""
    names: set[str] = set()
    for clause in GROUPING.findall(expr):
        names.update(name.strip() for name in clause.split(",") if name.strip())
    for matchers in MATCHERS.findall(expr):
        names.update(m.group(1) for m in re.finditer(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", matchers))
    return names


# Prometheus ----------------------------------------------------------------------------------


def test_promtool_checks_the_alert_rules() -> None:
    _promtool("check", "rules", str(ALERTS))


def test_promtool_unit_tests_of_the_alerts_pass() -> None:
    _promtool("test", "rules", str(ALERTS_TEST))


def test_promtool_checks_the_prometheus_config() -> None:
    _promtool("check", "config", str(PROMETHEUS_CONFIG))


def test_prometheus_scrapes_the_service_and_loads_the_alerts() -> None:
    config = _yaml(PROMETHEUS_CONFIG)
    assert config["global"]["scrape_interval"] == "15s"
    assert config["global"]["evaluation_interval"] == "15s"
    assert config["rule_files"] == ["alerts.yml"]
    [job] = config["scrape_configs"]
    assert job["job_name"] == "segstream"
    assert job["static_configs"] == [{"targets": ["segstream:9400"]}]


def test_every_alert_has_a_severity_a_summary_a_description_and_a_duration() -> None:
    alerts = _alerts()
    assert {a["alert"] for a in alerts} >= {
        "SegstreamLagGrowing",
        "SegstreamDeadLetterRate",
        "SegstreamNoProgress",
        "SegstreamModelQualityDrop",
        "SegstreamRedisErrors",
        "SegstreamNoTrainer",
        "SegstreamStateLost",
        "SegstreamSnapshotRefused",
        "SegstreamDown",
    }
    for alert in alerts:
        name = alert["alert"]
        assert alert.get("for"), name
        assert alert.get("labels", {}).get("severity") in {"warning", "critical"}, name
        annotations = alert.get("annotations", {})
        assert annotations.get("summary"), name
        assert annotations.get("description"), name


def test_every_alert_has_a_firing_and_a_silent_test_case() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for case in _yaml(ALERTS_TEST)["tests"]:
        for check in case.get("alert_rule_test", []):
            (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {a["alert"] for a in _alerts()}
    assert names - firing == set(), "alerts without a test case where they fire"
    assert names - silent == set(), "alerts without a test case where they stay silent"
    for case in _yaml(ALERTS_TEST)["tests"]:
        for check in case.get("alert_rule_test", []):
            for expected in check.get("exp_alerts") or []:
                assert "severity" in expected["exp_labels"], case["name"]
                assert {"summary", "description"} <= set(expected["exp_annotations"]), case["name"]


def test_the_prometheus_rule_holds_exactly_the_groups_of_alerts_yml() -> None:
    rule = _yaml(PROMETHEUS_RULE)
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["kind"] == "PrometheusRule"
    assert rule["metadata"]["name"] == "segstream"
    assert rule["metadata"]["labels"]["app.kubernetes.io/name"] == "segstream"
    assert rule["spec"]["groups"] == _yaml(ALERTS)["groups"]


# Queries -------------------------------------------------------------------------------------


def test_every_metric_named_in_a_query_or_rule_is_exposed_by_the_service() -> None:
    exposed = _exposed_names()
    recorded = _recorded()
    assert "segstream_events_consumed_total" in exposed
    for where, expr in _all_exprs():
        unknown = set(METRIC.findall(expr)) - exposed
        assert not unknown, f"{where} names metrics the service does not expose: {unknown}"
        unrecorded = set(RECORDED.findall(expr)) - recorded
        assert not unrecorded, f"{where} names recording rules not in alerts.yml: {unrecorded}"


def test_no_query_groups_or_filters_by_a_user() -> None:
    for where, expr in _all_exprs():
        users = _label_names(expr) & USER_LABELS
        assert not users, f"{where} groups or filters by {users}: {expr}"
    for panel in iter_panels(load_dashboard()):
        for target in panel.get("targets", []):
            assert "user" not in target.get("legendFormat", ""), panel["title"]


def test_label_names_are_read_from_grouping_and_matchers() -> None:
    names = _label_names('sum by (user_id, call) (rate(x{user="u1", job=~"s.*"}[5m]))')
    assert names == {"user_id", "call", "user", "job"}


# Grafana -------------------------------------------------------------------------------------


def test_the_dashboard_identity_and_data_source_variable() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] == "segstream"
    assert dashboard["title"] == "segstream"
    assert dashboard["schemaVersion"] == 39
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"


def test_every_panel_is_complete() -> None:
    panels = list(iter_panels(load_dashboard()))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids are not unique"
    queried = [panel for panel in panels if panel["type"] != "row"]
    assert 25 <= len(queried) <= 35
    for panel in queried:
        title = panel.get("title")
        assert title, panel["id"]
        assert panel.get("description"), title
        assert panel.get("datasource") == DATASOURCE, title
        assert panel["fieldConfig"]["defaults"].get("unit"), title
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) for k in ("h", "w", "x", "y")), title
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] + grid["w"] <= 24, title
        targets = panel.get("targets", [])
        assert targets, title
        ref_ids = [target.get("refId") for target in targets]
        assert all(ref_ids) and len(ref_ids) == len(set(ref_ids)), title
        for target in targets:
            assert target.get("expr", "").strip(), title
            assert "legendFormat" in target, title
            assert target.get("datasource", DATASOURCE) == DATASOURCE, title


def test_panels_do_not_overlap() -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in iter_panels(load_dashboard()):
        grid = panel["gridPos"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]


def test_rates_use_the_rate_interval() -> None:
    for panel in iter_panels(load_dashboard()):
        for target in panel.get("targets", []):
            for window in re.findall(r"\[([^\]]*)\]", target.get("expr", "")):
                assert window == "$__rate_interval", f"{panel['title']!r}: [{window}]"


def test_panel_queries_substitute_the_rate_interval() -> None:
    queries = panel_queries("2m")
    assert len(queries) >= 30
    assert all("$__" not in expr and "${" not in expr for _, expr in queries)
    assert any("[2m]" in expr for _, expr in queries)
    titles = {title for title, _ in queries}
    assert {"Users per segment", "Consumer lag per partition", "Since last progress"} <= titles


def test_global_gauges_are_aggregated_with_max() -> None:
    for title, expr in panel_queries():
        for metric in ("segstream_segment_users", "segstream_cluster_users"):
            if metric in expr:
                assert re.search(rf"max by \([^)]*\) \({metric}\)", expr), title


def test_grafana_provisioning() -> None:
    [source] = _yaml(GRAFANA / "datasources" / "prometheus.yaml")["datasources"]
    assert source["name"] == "Prometheus"
    assert source["uid"] == "prometheus"
    assert source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    assert source["isDefault"] is True
    [provider] = _yaml(GRAFANA / "dashboards" / "segstream.yaml")["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
