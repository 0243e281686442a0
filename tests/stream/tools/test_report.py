"""The evaluation report: files written, images linked, metrics.json strict JSON."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from stream.tools.quality import (
    Change,
    Evaluation,
    adjusted_rand_index,
    flapping_rate,
    normalized_mutual_info,
    overall_purity,
    pca_2d,
    purity_per_class,
    sizes_over_time,
    transitions,
)
from stream.tools.report import write_report

pytestmark = pytest.mark.unit

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
IMAGES = ("clusters.png", "segment_sizes.png", "transitions.png")
DAY_MS = 86_400_000
START_MS = 1_764_201_600_000  # 2025-11-27T00:00:00Z


def _changes(rng: np.random.Generator, users: int) -> list[Change]:
    segments = ["browser", "buyer", "deal-hunter"]
    changes: list[Change] = []
    for u in range(users):
        current: str | None = None
        t = START_MS + int(rng.integers(0, DAY_MS))
        for _ in range(int(rng.integers(1, 4))):
            nxt = str(rng.choice([s for s in segments if s != current]))
            changes.append(Change(f"u{u}", t, current, nxt))
            current, t = nxt, t + int(rng.integers(60_000, DAY_MS))
    return changes


def _evaluation() -> Evaluation:
    rng = np.random.default_rng(7)
    users = 120
    personas = ["bargain", "loyal", "window"]
    truth = [personas[i] for i in rng.integers(0, 3, users)]
    labels = [personas.index(t) if rng.uniform() < 0.8 else int(rng.integers(0, 3)) for t in truth]
    changes = _changes(rng, users)
    times, series = sizes_over_time(changes, step_ms=DAY_MS // 6)
    contingency: dict[int, dict[str, int]] = {}
    for persona, cluster in zip(truth, labels, strict=True):
        row = contingency.setdefault(cluster, {})
        row[persona] = row.get(persona, 0) + 1
    return Evaluation(
        users=users,
        events=5_000,
        clustered=users,
        ari=adjusted_rand_index(truth, labels),
        nmi=normalized_mutual_info(truth, labels),
        purity=purity_per_class(truth, labels),
        overall_purity=overall_purity(truth, labels),
        cluster_sizes={c: sum(row.values()) for c, row in contingency.items()},
        cluster_labels={0: "bargain hunters", 1: "loyal | repeat", 2: "window shoppers"},
        persona_by_cluster=contingency,
        propensity={
            "auc": 0.8123,
            "log_loss": 0.4412,
            "precision": 0.61,
            "recall": 0.55,
            "f1": 0.5784,
            "positives": 30.0,
            "negatives": 90.0,
            "base_rate": 0.25,
        },
        segment_sizes={name: counts[-1] for name, counts in series.items()},
        changes=len(changes),
        flapping_rate=flapping_rate(changes, window_ms=3_600_000),
        transitions=transitions(changes),
        sizes_times=times,
        sizes_series=series,
        projection=pca_2d(rng.normal(size=(users, 5))),
        projection_clusters=labels,
        settings={"k": 3, "learn_rate": 0.05, "window_ms": 3_600_000},
    )


def _empty() -> Evaluation:
    return replace(
        _evaluation(),
        users=0,
        clustered=0,
        ari=float("nan"),
        nmi=float("nan"),
        purity={},
        overall_purity=float("nan"),
        cluster_sizes={},
        persona_by_cluster={},
        propensity={"auc": float("nan"), "log_loss": float("nan"), "positives": 0.0},
        segment_sizes={},
        changes=0,
        flapping_rate=0.0,
        transitions={},
        sizes_times=[],
        sizes_series={},
        projection=np.zeros((0, 2)),
        projection_clusters=[],
        settings={},
    )


def _strict_json(path: Path) -> dict[str, object]:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in {path.name}")

    data = json.loads(path.read_text(), parse_constant=refuse)
    assert isinstance(data, dict)
    return data


def test_write_report_writes_every_file(tmp_path: Path) -> None:
    evaluation = _evaluation()
    directory = tmp_path / "reports" / "run-1"  # does not exist yet
    report = write_report(directory, evaluation)
    assert report == directory / "report.md"
    for name in IMAGES:
        png = (directory / name).read_bytes()
        assert png.startswith(PNG_SIGNATURE), name
        assert len(png) > 5_000, name  # an actual plot, not an empty canvas
    assert (directory / "metrics.json").is_file()
    assert plt.get_fignums() == []  # every figure closed


def test_report_md_shows_the_figures_and_links_the_images(tmp_path: Path) -> None:
    evaluation = _evaluation()
    text = write_report(tmp_path, evaluation).read_text()
    assert text.startswith("# ")
    assert f"{evaluation.ari:.4f}" in text
    assert f"{evaluation.nmi:.4f}" in text
    assert f"{evaluation.overall_purity:.4f}" in text
    assert "| Propensity ROC AUC (held out) | 0.8123 |" in text
    assert f"| Segment changes | {evaluation.changes:,} |" in text
    for name in IMAGES:
        assert f"]({name})" in text
    for persona, purity in evaluation.purity.items():
        assert f"| {persona} | {purity:.4f} |" in text
    assert "| learn_rate | 0.05 |" in text
    assert "| window_ms | 3,600,000 |" in text
    assert "loyal \\| repeat" in text  # a pipe in a label must not split the table cell


def test_cluster_table_names_the_top_persona(tmp_path: Path) -> None:
    evaluation = replace(
        _evaluation(),
        cluster_sizes={4: 10},
        cluster_labels={4: "night owls"},
        persona_by_cluster={4: {"bargain": 3, "loyal": 7}},
    )
    text = write_report(tmp_path, evaluation).read_text()
    assert "| 4 | night owls | 10 | loyal | 70.0% |" in text


def test_top_transitions_are_ranked(tmp_path: Path) -> None:
    evaluation = replace(
        _evaluation(), transitions={("(new)", "a"): 5, ("a", "b"): 9, ("b", "a"): 1}
    )
    text = write_report(tmp_path, evaluation).read_text()
    first, second, third = (
        text.index(row) for row in ("| a | b | 9 |", "| (new) | a | 5 |", "| b | a | 1 |")
    )
    assert first < second < third
    assert "All 3 transitions" in text


def test_only_the_top_transitions_are_listed(tmp_path: Path) -> None:
    many = {(f"s{i}", "t"): i + 1 for i in range(20)}
    text = write_report(tmp_path, replace(_evaluation(), transitions=many)).read_text()
    assert "The 15 most frequent of 20 transitions" in text
    assert "| s19 | t | 20 |" in text
    assert "| s4 | t | 5 |" not in text  # 16th most frequent


def test_metrics_json_is_strict_json_matching_as_dict(tmp_path: Path) -> None:
    evaluation = _evaluation()
    write_report(tmp_path, evaluation)
    data = _strict_json(tmp_path / "metrics.json")
    assert data == evaluation.as_dict()
    assert data["ari"] == round(evaluation.ari, 4)
    assert data["changes"] == evaluation.changes
    assert "projection" not in data


def test_empty_run_still_writes_a_report(tmp_path: Path) -> None:
    text = write_report(tmp_path, _empty()).read_text()
    assert "| Propensity ROC AUC (held out) | n/a |" in text
    # Without clusters the report says so, and shows no agreement figure at all.
    assert "| Clusters | no clusters: the model never had enough users to seed them |" in text
    assert "Adjusted Rand" not in text
    assert "## Purity per persona" not in text
    for name in IMAGES:
        assert (tmp_path / name).read_bytes().startswith(PNG_SIGNATURE)
    data = _strict_json(tmp_path / "metrics.json")
    assert data["overall_purity"] is None
    assert (data["clustered"], data["ari"], data["nmi"]) == (0, None, None)
    assert data["propensity"] == {"auc": None, "log_loss": None, "positives": 0.0}
    assert data["transitions"] == []


def test_single_sample_time_plots(tmp_path: Path) -> None:
    changes = [Change("u1", START_MS, None, "a"), Change("u2", START_MS, None, "b")]
    times, series = sizes_over_time(changes, step_ms=DAY_MS)
    evaluation = replace(_evaluation(), sizes_times=times, sizes_series=series)
    write_report(tmp_path, evaluation)
    assert (tmp_path / "segment_sizes.png").read_bytes().startswith(PNG_SIGNATURE)


def test_projection_and_clusters_must_line_up(tmp_path: Path) -> None:
    evaluation = replace(_evaluation(), projection_clusters=[0, 1])
    with pytest.raises(ValueError, match="cluster ids"):
        write_report(tmp_path, evaluation)
    assert plt.get_fignums() == []
