"""The layout record readers need: written by every start of the service, a warning when the
stored one says other windows, and written once Redis answers when it did not at start."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import pytest
import redis

from features import keys
from features.definitions import Rules
from features.layout import Layout
from features.store import FeatureStore
from stream.service.wiring import build_handler, layout_of, publish_layout
from stream.settings import FeatureSettings, Settings
from stream.tools.local_servers import free_port, redis_server

pytestmark = pytest.mark.integration


def stored_layout(settings: Settings) -> Layout | None:
    raw = redis.Redis.from_url(settings.redis.url).get(keys.layout(settings.key_prefix))
    return None if raw is None else Layout.decode(raw)


def test_building_the_service_writes_its_layout_and_other_windows_warn(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    assert stored_layout(settings) is None
    build_handler(settings).close()
    layout = stored_layout(settings)
    assert layout == layout_of(settings)
    assert layout is not None and layout.windows == ["1h", "24h", "7d", "30d"]
    assert "seq" in layout.segment_fields

    with caplog.at_level(logging.WARNING, logger="stream.service.wiring"):
        build_handler(settings).close()  # the same settings again: nothing to say
        assert not [r for r in caplog.records if "layout" in r.getMessage()]
        other = settings.model_copy(update={"features": FeatureSettings(windows="1h,30d")})
        build_handler(other).close()
    warned = [r.getMessage() for r in caplog.records if "layout record differs" in r.getMessage()]
    assert len(warned) == 1
    assert "windows 1h,24h,7d,30d (here 1h,30d)" in warned[0]
    assert stored_layout(settings) == layout_of(other)


def test_a_layout_not_written_at_start_is_written_once_redis_answers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()
    client = redis.Redis.from_url(
        f"redis://127.0.0.1:{port}/0", socket_timeout=0.5, socket_connect_timeout=0.5
    )
    store = FeatureStore(client, "late")
    with caplog.at_level(logging.WARNING, logger="stream.service.wiring"):
        publish_layout(store, Layout.of(Rules(), "late"), retry_s=0.1)
    assert any("layout record not written yet" in r.getMessage() for r in caplog.records)
    server = redis_server(tmp_path, port).start()
    try:
        deadline = time.monotonic() + 20
        while not (found := client.get(keys.layout("late"))) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert found == Layout.of(Rules(), "late").encode()
    finally:
        server.stop()
