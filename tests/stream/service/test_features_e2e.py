"""The service with its feature store, driven as a user would: real processes, real servers."""

from __future__ import annotations

import signal
import subprocess
import threading
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream.admin.profiles import profile
from stream.kafka.topics import ensure_topics
from stream.settings import Settings
from stream.tools.generate import generate
from tests.cli_tools import env_for, segstream
from tests.kafka_tools import drain, produce, read_topic, wait_committed

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def events(tmp_path_factory: pytest.TempPathFactory) -> list[bytes]:
    out = tmp_path_factory.mktemp("gen")
    generate(300, 3, 11, out / "e.jsonl", out / "p.csv")
    return (out / "e.jsonl").read_bytes().splitlines()


def hand_count(lines: list[bytes]) -> dict[str, dict[str, Any]]:
    """Per user, counted straight from the input: unique event ids only."""
    seen: set[str] = set()
    users: dict[str, dict[str, Any]] = defaultdict(
        lambda: {"events_total": 0, "purchases_total": 0, "spend": 0.0, "first": None, "last": 0}
    )
    for line in lines:
        event = orjson.loads(line)
        if event["event_id"] in seen:
            continue
        seen.add(event["event_id"])
        user = users[event["user_id"]]
        user["events_total"] += 1
        if event["type"] == "purchase":
            user["purchases_total"] += 1
            user["spend"] += event["price"] * event.get("quantity", 1)
        user["first"] = event["ts"] if user["first"] is None else min(user["first"], event["ts"])
        user["last"] = max(user["last"], event["ts"])
    return users


def assert_profiles_match(settings: Settings, lines: list[bytes]) -> None:
    for user_id, expected in hand_count(lines).items():
        features = profile(settings, user_id)["features"]
        assert features is not None, user_id
        got = (
            features["events_total"],
            features["purchases_total"],
            features["spend_total"],
            features["first_seen"],
            features["last_seen"],
        )
        want = (
            expected["events_total"],
            expected["purchases_total"],
            round(expected["spend"], 2),
            expected["first"],
            expected["last"],
        )
        assert got == want, user_id


def keyed(lines: list[bytes]) -> list[tuple[bytes | None, bytes]]:
    return [(orjson.loads(line)["user_id"].encode(), line) for line in lines]


def run_until_idle(settings: Settings) -> dict[str, Any]:
    done = subprocess.run(
        segstream("run", "--until-idle", "3", "--log-level", "WARNING"),
        env=env_for(settings), capture_output=True, timeout=180, check=True,
    )  # fmt: skip
    summary: dict[str, Any] = orjson.loads(done.stdout)
    return summary


def test_kill_9_mid_stream_then_restart_counts_every_event_once(
    settings: Settings, events: list[bytes]
) -> None:
    ensure_topics(settings)
    bootstrap, topic = settings.kafka.bootstrap_servers, settings.topics.events
    # The first 300 events are sent again at later offsets, as a retrying producer would.
    stream = events + events[:300]

    def feed() -> None:
        for start in range(0, len(stream), 200):
            produce(bootstrap, topic, keyed(stream[start : start + 200]))
            time.sleep(0.5)  # about 6 s of feeding: the kill lands mid-stream

    feeder = threading.Thread(target=feed)
    feeder.start()
    service = subprocess.Popen(
        segstream("run", "--log-level", "WARNING"), env=env_for(settings),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    # Killed once some batches are committed, while the feeder is still producing.
    wait_committed(bootstrap, settings.kafka.group_id, topic, 3, alive=service)
    service.send_signal(signal.SIGKILL)
    service.wait(timeout=30)
    feeder.join()

    restart = run_until_idle(settings)

    assert restart["consumed"] > 0, "the kill did not land mid-stream"
    assert_profiles_match(settings, events)


def test_the_same_input_twice_changes_no_profile(settings: Settings, events: list[bytes]) -> None:
    ensure_topics(settings)
    produce(settings.kafka.bootstrap_servers, settings.topics.events, keyed(events))
    first = run_until_idle(settings)
    users = sorted(hand_count(events))
    before = [profile(settings, u) for u in users]

    produce(settings.kafka.bootstrap_servers, settings.topics.events, keyed(events))
    second = run_until_idle(settings)

    assert first["processed"] == len(events)
    assert second["consumed"] == len(events)
    assert [profile(settings, u) for u in users] == before
    assert_profiles_match(settings, events)


def test_profile_command_matches_a_hand_count(
    settings: Settings, events: list[bytes], tmp_path: Path
) -> None:
    ensure_topics(settings)
    produce(settings.kafka.bootstrap_servers, settings.topics.events, keyed(events))
    run_until_idle(settings)
    user = orjson.loads(events[len(events) // 2])["user_id"]
    mine = [orjson.loads(line) for line in events if orjson.loads(line)["user_id"] == user]

    shown = subprocess.run(
        segstream("profile", user), env=env_for(settings), capture_output=True, timeout=60,
        check=True,
    )  # fmt: skip
    line = orjson.loads(shown.stdout)
    features = line["features"]
    assert line["user_id"] == user
    assert features["events_total"] == len(mine)
    assert features["views_total"] == sum(e["type"] == "view" for e in mine)
    assert features["add_to_cart_total"] == sum(e["type"] == "add_to_cart" for e in mine)
    assert features["sessions"] == len({e["session_id"] for e in mine})
    assert features["last_seen"] == max(e["ts"] for e in mine)
    assert {"segment", "model_version"} <= line.keys()


def test_forget_then_replay_keeps_the_user_gone(settings: Settings, events: list[bytes]) -> None:
    ensure_topics(settings)
    produce(settings.kafka.bootstrap_servers, settings.topics.events, keyed(events))
    run_until_idle(settings)
    user = orjson.loads(events[0])["user_id"]

    forgot = subprocess.run(
        segstream("forget", user), env=env_for(settings), capture_output=True, timeout=60,
        check=True,
    )  # fmt: skip
    assert orjson.loads(forgot.stdout) == {"user_id": user, "had_data": True, "tombstone": True}
    produce(settings.kafka.bootstrap_servers, settings.topics.events, keyed(events))
    replayed = run_until_idle(settings)

    assert replayed["consumed"] == len(events)
    assert profile(settings, user)["features"] is None
    # Everything on the topic, not the first records read: the tombstone is among the last.
    mine = [
        r for r in drain(settings.kafka.bootstrap_servers, settings.topics.segments, 3)
        if r.key() == user.encode()
    ]  # fmt: skip
    assert mine and mine[-1].value() is None
    other = orjson.loads(next(e for e in events if orjson.loads(e)["user_id"] != user))["user_id"]
    assert profile(settings, other)["features"] is not None


def test_late_events_go_to_the_dlq_and_are_not_applied(settings: Settings) -> None:
    ensure_topics(settings)
    hour = 3_600_000
    t0 = 1_767_225_600_000

    def view(event_id: str, ts: int) -> tuple[bytes | None, bytes]:
        value = {"event_id": event_id, "user_id": "late-user", "type": "view", "ts": ts}
        return b"late-user", orjson.dumps(value)

    # Same key, so one partition: its watermark reaches t0 + 5h before the stragglers arrive.
    records = [view("a", t0), view("b", t0 + 5 * hour), view("c", t0 + 4 * hour + 1)]
    records += [view("d", t0 + 3 * hour)]  # two hours behind the watermark: late (1 h allowed)
    produce(settings.kafka.bootstrap_servers, settings.topics.events, records)

    summary = run_until_idle(settings)

    assert summary["dead_lettered_by_reason"] == {"late": 1}
    features = profile(settings, "late-user")["features"]
    assert features is not None
    assert features["events_total"] == 3
    dead = read_topic(settings.kafka.bootstrap_servers, settings.topics.dlq, 1, 3)
    assert [orjson.loads(d.value or b"")["event_id"] for d in dead] == ["d"]
    assert dict(dead[0].headers)["segstream.stage"] == b"late"


def test_pseudonymised_ids_never_reach_redis(settings: Settings, events: list[bytes]) -> None:
    import redis as redis_lib

    ensure_topics(settings)
    produce(settings.kafka.bootstrap_servers, settings.topics.events, keyed(events[:200]))
    key = "k" * 32
    env = {**env_for(settings), "SEGSTREAM_PRIVACY__PSEUDONYMIZE_KEY": key}
    subprocess.run(
        segstream("run", "--until-idle", "3", "--log-level", "WARNING"),
        env=env, capture_output=True, timeout=180, check=True,
    )  # fmt: skip
    raw_ids = {orjson.loads(line)["user_id"] for line in events[:200]}
    client = redis_lib.Redis.from_url(settings.redis.url)
    stored = [k.decode() for k in client.scan_iter(match=f"{settings.key_prefix}:*")]
    assert stored, "nothing was stored"
    assert not [k for k in stored for raw in raw_ids if f"{{u:{raw}}}" in k]
    user = sorted(raw_ids)[0]
    shown = subprocess.run(
        segstream("profile", user), env=env, capture_output=True, timeout=60, check=True
    )
    assert orjson.loads(shown.stdout)["features"]["events_total"] > 0
