"""The bench's read figures, on a few users stored as the service stores them."""

from __future__ import annotations

import orjson
import pytest

from features.events import Event
from stream.service.wiring import feature_store, layout_of
from stream.settings import Settings
from stream.tools import bench

pytestmark = pytest.mark.integration

T0 = 1_767_225_600_000


def test_reads_are_timed_for_single_users_batches_and_http(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    events = [
        Event(event_id=f"e{i}", user_id=f"u{i % 20}", type="view", ts=T0 + i, ts_ms=T0 + i)
        for i in range(60)
    ]
    store = feature_store(settings)
    store.publish_layout(layout_of(settings))
    store.apply(events, [0] * len(events), range(len(events)))
    for name, value in {"READS": 50, "READ_BATCH": 10, "READ_BATCHES": 5, "HTTP_READS": 20}.items():
        monkeypatch.setattr(bench, name, value)
    values = [orjson.dumps({"user_id": e.user_id}) for e in events]

    figures = bench._bench_reads(settings, values)

    assert figures["users"] == 20
    for kind in ("user", "users_batch", "http"):
        timed = figures[kind]
        assert isinstance(timed, dict)
        assert 0 < timed["p50_ms"] <= timed["p99_ms"], kind
    assert figures["users_batch"] == {**figures["users_batch"], "batches": 5, "batch_size": 10}


def test_a_read_that_finds_nothing_fails_the_bench(settings: Settings) -> None:
    store = feature_store(settings)
    store.publish_layout(layout_of(settings))
    with pytest.raises(RuntimeError, match="found nothing for 'nobody'"):
        bench._bench_reads(settings, [orjson.dumps({"user_id": "nobody"})])
