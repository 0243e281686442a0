"""Audiences end to end on real servers: added with `segstream audience add` while the service
runs, backfilled over the stored users without an event of theirs, entered by live events, shown
with their sizes, and removed with every member's leave published.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

import features.tallies
from stream.admin.profiles import all_profiles
from stream.kafka.topics import ensure_topics
from stream.service.wiring import feature_store
from stream.settings import Settings
from tests.cli_tools import env_for, segstream
from tests.kafka_tools import changes_of, drain, produce
from tests.stream.service.test_schemas_e2e import problems
from tests.stream.service.test_segments_e2e import (
    InProcess,
    client_for,
    event,
    generated,
    keyed,
)

pytestmark = pytest.mark.integration


# README example
AUDIENCE_EXAMPLE = """\
segstream audience preview "spend_total > 100 and 'books' in categories"
segstream audience add big_readers "spend_total > 100 and 'books' in categories" --wait 60
segstream audience list
segstream audience show big_readers
segstream audience remove big_readers --wait 60
"""

# README example
CONSUMER_EXAMPLE = """\
import json

from confluent_kafka import Consumer

consumer = Consumer(
    {"bootstrap.servers": "localhost:9092", "group.id": "offers", "auto.offset.reset": "earliest"}
)
consumer.subscribe(["user-segments"])
try:
    while True:
        msg = consumer.poll(1.0)
        if msg is None or msg.error():
            continue
        user = msg.key().decode()
        if msg.value() is None:  # erased: forget everything about the user
            print(user, "erased")
        elif (change := json.loads(msg.value()))["type"] == "segment":
            print(user, "is now", change["current"]["segment"], change["actions"])
        elif change["type"] == "audience":
            print(user, "entered" if change["entered"] else "left", change["audience"])
finally:
    consumer.close()
"""


def audience(settings: Settings, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        segstream("audience", *args),
        env=env_for(settings),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    result: dict[str, Any] = orjson.loads(done.stdout)
    return result


def audience_changes(settings: Settings, name: str) -> list[dict[str, Any]]:
    records = drain(settings.kafka.bootstrap_servers, settings.topics.segments, 3, quiet_s=1.5)
    changes = changes_of(records)
    return [c for c in changes if c["type"] == "audience" and c["audience"] == name]


def members(changes: list[dict[str, Any]]) -> set[str]:
    """Who is in, from the enters and leaves in topic order (a user's changes share a key, so
    a partition, so their order)."""
    inside: set[str] = set()
    for change in changes:
        (inside.add if change["entered"] else inside.discard)(change["user_id"])
    return inside


def wait_until(check: Any, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_an_audience_added_while_running_is_backfilled_entered_live_and_left_on_removal(
    settings: Settings, tmp_path: Path
) -> None:
    ensure_topics(settings)
    lines = generated(tmp_path, 300, 14, 5)
    produce(settings.kafka.bootstrap_servers, settings.topics.events, keyed(lines))
    service = InProcess(settings).start()
    try:
        last_ts = max(orjson.loads(line)["ts"] for line in lines)
        wait_until(lambda: len(list(all_profiles(settings))) == 300, 60)

        # 1. Added while the service runs, with no event coming: the backfill makes the members.
        added = audience(settings, "add", "big", "spend_total > 100", "--wait", "60")
        assert added["added"] == {"name": "big", "condition": "spend_total > 100", "version": 1}
        assert added["backfill"]["complete"]
        assert added["backfill"]["users_checked"] == added["backfill"]["users"] == 300
        truth = {p["user_id"] for p in all_profiles(settings) if p["features"]["spend_total"] > 100}
        assert 0 < len(truth) < 300
        wait_until(lambda: members(audience_changes(settings, "big")) == truth)
        backfilled = audience_changes(settings, "big")
        assert {c["reason"] for c in backfilled} == {"backfill"}
        assert all(c["audience_version"] == 1 and c["schema_version"] == 1 for c in backfilled)
        shown = audience(settings, "show", "big")
        assert shown["members"] == len(truth)

        # 2. A live event makes a new member, published with the batch that carried it.
        outsider = sorted(set(p["user_id"] for p in all_profiles(settings)) - truth)[0]
        at = last_ts + 1
        purchase = event("live-1", outsider, "purchase", at, price=500.0, quantity=1,
                         order_id="live-order")  # fmt: skip
        produce(settings.kafka.bootstrap_servers, settings.topics.events, [purchase])
        wait_until(lambda: outsider in members(audience_changes(settings, "big")))
        entered = [c for c in audience_changes(settings, "big") if c["user_id"] == outsider]
        assert [(c["entered"], c["reason"]) for c in entered] == [(True, "activity")]

        # 3. A preview before adding estimates the size from a sample; here every user.
        estimate = audience(settings, "preview", "orders_total >= 1", "--sample", "1000")
        buyers = sum(1 for p in all_profiles(settings) if p["features"]["orders_total"] >= 1)
        assert estimate["users"] == 300
        assert estimate["low"] <= buyers <= estimate["high"]

        # 4. Removed: every member's leave goes out, and nobody is counted in it any more.
        audience(settings, "remove", "big", "--wait", "60")
        wait_until(lambda: not members(audience_changes(settings, "big")))
        leaves = [c for c in audience_changes(settings, "big") if not c["entered"]]
        assert {c["user_id"] for c in leaves} == truth | {outsider}
        assert {c["reason"] for c in leaves} == {"removed"}
        counts = features.tallies.read(client_for(settings), settings.key_prefix)
        assert counts.get("audience:big", 0) == 0
        assert audience(settings, "list")["audiences"] == []
        run_audience_example(settings)
    finally:
        service.stop()
    run_readme_examples(settings)
    # Every change id names one change (the backfill and the live path share the numbering),
    # and every change, audiences' too, is what the published schema describes.
    every = changes_of(drain(settings.kafka.bootstrap_servers, settings.topics.segments, 3, 1.0))
    by_id: dict[str, bytes] = {}
    for change in every:
        body = orjson.dumps(change)
        assert by_id.setdefault(change["change_id"], body) == body
        assert problems("user-segments", change) == []


def run_audience_example(settings: Settings) -> None:
    """The README's audience commands, as written, against the running service."""
    outputs = []
    for line in AUDIENCE_EXAMPLE.splitlines():
        words = shlex.split(line)
        assert words[:2] == ["segstream", "audience"]
        outputs.append(audience(settings, *words[2:]))
    preview, added, listed, shown, removed = outputs
    store = feature_store(settings)
    truth = sum(
        1
        for p in all_profiles(settings)
        if p["features"]["spend_total"] > 100 and "books" in store.state(p["user_id"]).categories
    )
    assert preview["low"] <= truth <= preview["high"]
    assert added["backfill"]["complete"]
    assert [a["name"] for a in listed["audiences"]] == ["big_readers"]
    assert shown["members"] == truth
    assert removed["removed"] == "big_readers"
    assert removed["backfill"]["complete"]


def run_readme_examples(settings: Settings) -> None:
    """The README's consumer, as written, on the test's broker and topic, until it has printed
    a segment change, an audience enter and a leave (then interrupted, as a person would)."""
    code = CONSUMER_EXAMPLE.replace('"localhost:9092"', repr(settings.kafka.bootstrap_servers))
    code = code.replace('["user-segments"]', repr([settings.topics.segments]))
    code = code.replace('"group.id": "offers"', f'"group.id": "{settings.key_prefix}-readme"')
    assert code.count(settings.topics.segments) == 1
    consumer = subprocess.Popen(
        [sys.executable, "-c", code],
        stdout=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert consumer.stdout is not None
    wanted = {" is now ": False, " entered big": False, " left big": False}
    deadline = time.monotonic() + 90
    try:
        while not all(wanted.values()) and time.monotonic() < deadline:
            line = consumer.stdout.readline().decode()
            assert line, "the example exited"
            wanted.update({k: True for k in wanted if k in line})
    finally:
        consumer.send_signal(signal.SIGINT)
        consumer.communicate(timeout=30)
    assert all(wanted.values()), wanted
