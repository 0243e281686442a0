"""`segstream audience` as an operator meets it without a running service: a bad condition
names the problem (exit 2), an unknown audience or a prefix no service ran under exit 1, and
`--wait` that runs out says so (exit 1) while the change itself stands."""

from __future__ import annotations

import subprocess

import orjson
import pytest

from features import keys
from stream.settings import Settings
from tests.cli_tools import env_for, segstream
from tests.stream.service.test_segments_e2e import client_for

pytestmark = pytest.mark.integration


@pytest.fixture(autouse=True)
def service_ran(settings: Settings) -> None:
    """The layout record a service writes at start: the audience commands ask for it."""
    client_for(settings).set(keys.layout(settings.key_prefix), b'{"format": 1}')


def audience(settings: Settings, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        segstream("audience", *args),
        env=env_for(settings),
        capture_output=True,
        timeout=60,
        check=False,
    )


def test_a_bad_condition_exits_2_naming_the_problem(settings: Settings) -> None:
    done = audience(settings, "add", "big", "spend_totl > 100")
    assert done.returncode == 2
    assert b"audience 'big': unknown feature 'spend_totl' (did you mean 'spend_total'?)" in (
        done.stderr
    )
    assert orjson.loads(audience(settings, "list").stdout)["audiences"] == []


def test_an_unknown_audience_exits_1(settings: Settings) -> None:
    assert audience(settings, "show", "nobody").returncode == 1
    removed = audience(settings, "remove", "nobody")
    assert removed.returncode == 1
    assert b"no audience 'nobody'" in removed.stderr


def test_a_prefix_no_service_ran_under_is_refused_naming_the_settings(settings: Settings) -> None:
    for args in (("add", "big", "spend_total > 1"), ("list",), ("preview", "spend_total > 1")):
        done = audience(settings, *args, "--key-prefix", "nothere")
        assert done.returncode == 1, args
        assert b"no segstream state under the key prefix 'nothere'" in done.stderr
        assert b"SEGSTREAM_KEY_PREFIX" in done.stderr
    assert not client_for(settings).exists("nothere:audiences")


def test_a_wait_without_a_service_ends_with_exit_1_and_the_audience_added(
    settings: Settings,
) -> None:
    client = client_for(settings)
    client.hset(keys.origin(settings.key_prefix), mapping={"epoch": 1, "partitions": 3})
    client.zadd(keys.timers(settings.key_prefix, 0), {"u1": 1, "u2": 2})
    done = audience(settings, "add", "big", "spend_total > 100", "--wait", "1")
    assert done.returncode == 1
    assert b"Is the service running?" in done.stderr
    result = orjson.loads(done.stdout)
    assert result["backfill"] == {
        "partitions": 3,
        "partitions_done": 0,
        "users": 2,
        "users_checked": 0,
        "complete": False,
    }
    shown = orjson.loads(audience(settings, "show", "big").stdout)
    assert (shown["condition"], shown["members"]) == ("spend_total > 100", 0)
