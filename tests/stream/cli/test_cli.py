"""The `segstream` command as a user runs it: a real process, real servers."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import orjson
import pytest

from stream.kafka.topics import ensure_topics
from stream.settings import Settings
from stream.tools.local_servers import free_port, redis_server
from tests.cli_tools import env_for, segstream
from tests.kafka_tools import committed, end_offsets, produce, read_topic, wait_committed

pytestmark = pytest.mark.integration


def event(i: int) -> bytes:
    return orjson.dumps(
        {"event_id": f"e{i}", "user_id": f"u{i % 11}", "type": "view", "ts": 1_764_201_600_000 + i}
    )


def test_sigterm_commits_and_exits_0_then_a_restart_drains_without_rereading(
    settings: Settings,
) -> None:
    ensure_topics(settings)
    bootstrap, topic = settings.kafka.bootstrap_servers, settings.topics.events
    placed: list[tuple[int, int]] = []

    def feed() -> None:
        for start in range(0, 20_000, 500):
            batch = [(f"u{i % 11}".encode(), event(i)) for i in range(start, start + 500)]
            placed.extend(produce(bootstrap, topic, batch))
            time.sleep(0.25)  # about 10 s of feeding in all

    feeder = threading.Thread(target=feed)
    feeder.start()
    service = subprocess.Popen(
        segstream("run", "--log-level", "WARNING"), env=env_for(settings), stdout=subprocess.PIPE
    )
    # Joined and busy: some batches committed while the feeder is still producing.
    wait_committed(bootstrap, settings.kafka.group_id, topic, 3, alive=service)
    service.send_signal(signal.SIGTERM)
    out, _ = service.communicate(timeout=60)
    feeder.join()
    first = orjson.loads(out)

    assert service.returncode == 0
    assert first["stopped_by"] == "SIGTERM"
    assert 0 < first["consumed"] < 20_000
    assert first["committed"] == first["consumed"]
    done = committed(bootstrap, settings.kafka.group_id, topic, 3)
    assert sum(done.values()) == first["consumed"]

    rerun = subprocess.run(
        segstream("run", "--until-idle", "3", "--log-level", "WARNING"),
        env=env_for(settings), capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    second = orjson.loads(rerun.stdout)
    assert first["consumed"] + second["consumed"] == 20_000
    assert committed(bootstrap, settings.kafka.group_id, topic, 3) == end_offsets(placed)


def test_replay_sends_every_line_keyed_by_user_and_holds_its_rate(
    settings: Settings, tmp_path: Path
) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(event(i) for i in range(1000)) + b"\n")
    started = time.monotonic()
    result = subprocess.run(
        segstream("replay", str(path), "--rate", "2000"),
        env=env_for(settings), capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    summary = orjson.loads(result.stdout)
    assert (summary["sent"], summary["errors"]) == (1000, 0)
    # Pacing correctness, not speed: 1000 events at 2000/s cannot finish in under 0.5 s.
    assert summary["elapsed_s"] >= 0.499
    assert elapsed >= 0.5
    got = read_topic(settings.kafka.bootstrap_servers, settings.topics.events, 1000, 3)
    assert sorted(r.value for r in got if r.value) == sorted(event(i) for i in range(1000))
    assert all(r.key == orjson.loads(r.value or b"{}")["user_id"].encode() for r in got)


def test_replay_dry_run_needs_no_broker(tmp_path: Path) -> None:
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(event(i) for i in range(10)))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGSTREAM_")}
    env["SEGSTREAM_KAFKA__BOOTSTRAP_SERVERS"] = "127.0.0.1:1"
    result = subprocess.run(
        segstream("replay", str(path), "--dry-run"),
        env=env, capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert orjson.loads(result.stdout)["sent"] == 10


def test_replay_of_a_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        segstream("replay", str(tmp_path / "nope.jsonl")),
        capture_output=True, timeout=30, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert b"no such file" in result.stderr


def test_demo_runs_end_to_end_on_its_own_stack(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    env = {**env_for(settings), "SEGSTREAM_METRICS__PORT": str(port)}
    result = subprocess.run(
        segstream("demo", "--users", "150", "--days", "7", "--workdir", str(tmp_path)),
        env=env, capture_output=True, timeout=300, check=False,
    )  # fmt: skip
    text = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert "segstream demo" in text
    assert "dead-lettered 9" in text
    assert "clean exit: True" in text
    assert f"http://localhost:{port}/metrics" in text
    assert (tmp_path / "personas.csv").is_file()


def test_a_wrong_redis_password_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    server = redis_server(tmp_path)
    server.argv += ["--requirepass", "right"]
    server.start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SEGSTREAM_")}
        env["SEGSTREAM_REDIS__URL"] = f"redis://:wrong@127.0.0.1:{server.port}/0"
        result = subprocess.run(
            segstream("profile", "u1"), env=env, capture_output=True, timeout=60, check=False
        )
    finally:
        server.stop()
    assert result.returncode == 1
    err = result.stderr.decode()
    assert "invalid username-password pair" in err
    assert "Traceback" not in err
    assert "wrong" not in err  # the password is not echoed
