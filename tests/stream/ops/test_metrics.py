"""The metrics module: bulk histograms expose exactly what prometheus-client's would."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram

from stream.ops import metrics

pytestmark = pytest.mark.unit

BOUNDS = (0.01, 0.1, 1.0)


def _bulk(name: str) -> metrics.BulkHistogram:
    return metrics.BulkHistogram(name, "test", BOUNDS, registry=CollectorRegistry())


def _samples(families: object) -> dict[tuple[str, str], float]:
    return {
        (s.name, s.labels.get("le", "")): s.value
        for family in families  # type: ignore[attr-defined]
        for s in family.samples
    }


def test_bulk_histogram_counts_like_prometheus_client_including_values_on_a_bound() -> None:
    values = [0.0, 0.005, 0.01, 0.0100001, 0.1, 0.5, 1.0, 3.0, 1e9]
    reference = Histogram("ref_seconds", "test", buckets=BOUNDS, registry=CollectorRegistry())
    for value in values:
        reference.observe(value)
    bulk = _bulk("ref_seconds")
    bulk.observe_many(np.array(values[:4]))
    bulk.observe_many(np.array(values[4:]))

    expected = _samples(reference.collect())
    got = _samples(bulk.collect())
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert got[key] == pytest.approx(value), key


def test_weight_counts_each_value_that_many_times() -> None:
    bulk = _bulk("w_seconds")
    bulk.observe_many(np.array([0.05]), weight=7)
    got = _samples(bulk.collect())
    assert got[("w_seconds_bucket", "0.01")] == 0
    assert got[("w_seconds_bucket", "0.1")] == 7
    assert got[("w_seconds_count", "")] == 7
    assert got[("w_seconds_sum", "")] == pytest.approx(0.35)


def test_no_metric_has_a_user_label_and_counters_start_at_zero_for_known_labels() -> None:
    from prometheus_client import REGISTRY

    exposed = {s.name: s for f in REGISTRY.collect() for s in f.samples}
    for family in REGISTRY.collect():
        for sample in family.samples:
            assert not {"user", "user_id"} & sample.labels.keys(), sample.name
    assert "segstream_build_info" in exposed
    assert exposed["segstream_build_info"].labels["version"]
    assert any(n.startswith("segstream_redis_errors_total") for n in exposed)
