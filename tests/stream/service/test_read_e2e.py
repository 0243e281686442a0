"""The read path end to end: `segstream run` with the read API on, real broker and Redis; the
HTTP answers, the Python client's views and `segstream profile`'s shape agree. The README's
examples (`# README example` below) run here as written, with the address, port and prefix of
the test's servers put in."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.error import URLError

import orjson
import pytest

from stream.admin.profiles import profile
from stream.client import SegmentClient
from stream.kafka.topics import ensure_topics
from stream.settings import Settings
from stream.tools.generate import generate
from stream.tools.local_servers import free_port
from tests.cli_tools import env_for, segstream
from tests.http_tools import get
from tests.kafka_tools import produce, wait_committed

pytestmark = pytest.mark.integration

# README example
PYTHON_EXAMPLE = """\
from stream.client import SegmentClient

client = SegmentClient("redis://localhost:6379/0", prefix="seg")
view = client.user("u0000042")  # None when the user is unknown or was erased
if view is not None:
    print(view.segment, view.propensity_band, view.rules, view.audiences)
    print(view.features["orders_30d"], view.features["spend_30d"], "as of", view.as_of)
    print(view.to_dict())  # JSON-ready: what GET /v1/users/{id} answers
views = client.users(["u0000042", "u0000043"])  # many users, still one Redis round trip
"""

# README example
CURL_EXAMPLE = """\
curl -s http://localhost:9400/v1/users/u0000042
curl -s 'http://localhost:9400/v1/users?id=u0000042&id=u0000043'
"""


def start(settings: Settings, workdir: Path, port: int, *, api: bool) -> subprocess.Popen[bytes]:
    env = {**env_for(settings), "SEGSTREAM_METRICS__PORT": str(port)}
    if api:
        env["SEGSTREAM_API__ENABLED"] = "true"
    with (workdir / f"run-{port}.log").open("wb") as log:
        return subprocess.Popen(
            segstream("run", "--log-level", "WARNING"), env=env, stdout=log, stderr=log
        )


def wait_serving(port: int, service: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while True:
        assert service.poll() is None, "the service exited"
        try:
            if get(port, "/healthz")[0] == 200:
                return
        except URLError:
            pass
        assert time.monotonic() < deadline, "no /healthz within 60 s"
        time.sleep(0.1)


def stop(service: subprocess.Popen[bytes]) -> None:
    service.send_signal(signal.SIGTERM)
    assert service.wait(timeout=60) == 0


def test_the_read_api_answers_what_the_client_and_profile_read(
    settings: Settings, workdir: Path
) -> None:
    generate(300, 3, 11, workdir / "e.jsonl", workdir / "p.csv")
    lines = (workdir / "e.jsonl").read_bytes().splitlines()
    ensure_topics(settings)
    produce(
        settings.kafka.bootstrap_servers,
        settings.topics.events,
        [(orjson.loads(line)["user_id"].encode(), line) for line in lines],
    )
    port = free_port()
    service = start(settings, workdir, port, api=True)
    try:
        wait_committed(
            settings.kafka.bootstrap_servers, settings.kafka.group_id, settings.topics.events, 3,
            beyond=len(lines) - 1, alive=service, timeout_s=120,
        )  # fmt: skip
        client = SegmentClient(settings.redis.url, settings.key_prefix)
        users = sorted({orjson.loads(line)["user_id"] for line in lines})[:40]
        for user in users:
            status, body = get(port, f"/v1/users/{user}")
            assert status == 200, user
            answer = orjson.loads(body)
            view = client.user(user)
            assert view is not None
            assert answer == view.to_dict() == profile(settings, user)
            assert answer["segment"]["segment"], user  # every user with events was scored
            assert answer["features"]["events_total"] > 0
        assert get(port, "/v1/users/nobody") == (404, b'{"error":"unknown user"}')
        status, body = get(port, f"/v1/users?id={users[0]}&id=nobody")
        assert (status, orjson.loads(body)) == (
            200,
            {"users": {users[0]: profile(settings, users[0]), "nobody": None}},
        )
        run_readme_examples(settings, port, client)
        in_three_audiences(settings, port, client, users[0])
    finally:
        stop(service)

    # The same state, the API off: the /v1/ tree is not there, the probes are.
    port = free_port()
    service = start(settings, workdir, port, api=False)
    try:
        wait_serving(port, service)
        status, body = get(port, "/v1/users/u0000042")
        assert status == 404 and b"not found: try /metrics" in body
    finally:
        stop(service)


def in_three_audiences(settings: Settings, port: int, client: SegmentClient, user: str) -> None:
    """Three audiences every user with events is in, added while the service runs: the
    backfill makes the user a member of all three, which the client and HTTP both show."""
    names = ["active", "visitors", "known"]
    conditions = ["events_total >= 1", "sessions >= 1", "days_since_last_seen >= 0"]
    for name, condition in zip(names, conditions, strict=True):
        subprocess.run(
            segstream("audience", "add", name, condition, "--wait", "60"),
            env=env_for(settings), capture_output=True, timeout=120, check=True,
        )  # fmt: skip
    deadline = time.monotonic() + 30
    while (view := client.user(user)) is None or len(view.audiences) < 3:
        assert time.monotonic() < deadline, f"{user} is in {view and view.audiences}"
        time.sleep(0.2)
    assert view.audiences == names
    status, body = get(port, f"/v1/users/{user}")
    assert status == 200
    assert orjson.loads(body)["segment"]["audiences"] == names
    assert profile(settings, user)["segment"]["audiences"] == names


def run_readme_examples(settings: Settings, port: int, client: SegmentClient) -> None:
    url, prefix = settings.redis.url, settings.key_prefix
    assert PYTHON_EXAMPLE.count('"redis://localhost:6379/0"') == 1
    assert PYTHON_EXAMPLE.count('prefix="seg"') == 1
    python = PYTHON_EXAMPLE.replace('"redis://localhost:6379/0"', repr(url)).replace(
        'prefix="seg"', f"prefix={prefix!r}"
    )
    shown = subprocess.run(
        [sys.executable, "-c", python], capture_output=True, timeout=60, check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[3])},
    )  # fmt: skip
    view = client.user("u0000042")
    assert view is not None
    first, second, third = shown.stdout.decode().splitlines()
    assert first == f"{view.segment} {view.propensity_band} {view.rules} {view.audiences}"
    assert second.endswith(f"as of {view.as_of}")
    assert third == str(view.to_dict())

    commands = CURL_EXAMPLE.replace("localhost:9400", f"127.0.0.1:{port}").splitlines()
    assert len(commands) == 2 and all("127.0.0.1" in c for c in commands)
    one = subprocess.run(shlex.split(commands[0]), capture_output=True, timeout=30, check=True)
    assert orjson.loads(one.stdout) == view.to_dict()
    two = subprocess.run(shlex.split(commands[1]), capture_output=True, timeout=30, check=True)
    assert orjson.loads(two.stdout) == {
        "users": {u: v.to_dict() for u, v in client.users(["u0000042", "u0000043"]).items() if v}
    }
