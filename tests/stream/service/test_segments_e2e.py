"""Segments end to end: timers move quiet users, one shared model, restarts, kill -9, signatures.

Real servers (the `servers` fixture), the real service: in-process `Loop`s where a test needs to
see inside an instance, `segstream run` subprocesses where the process boundary is the point.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import subprocess
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from prometheus_client import REGISTRY

import features.tallies
from features import keys, resp
from segments.engine import Engine
from segments.errors import SnapshotError
from segments.fingerprint import fingerprint
from segments.scoring import RFM_GRID, score
from segments.snapshots import seal, unseal
from stream.admin.profiles import all_profiles, profile
from stream.kafka.loop import Loop, RunSummary
from stream.kafka.topics import ensure_topics
from stream.service.model_store import ModelStore
from stream.service.segment_handler import SegmentHandler
from stream.service.wiring import build_handler, redis_client
from stream.settings import Settings
from stream.tools.generate import generate
from tests.cli_tools import env_for, segstream
from tests.conftest import SIGNING_KEY
from tests.kafka_tools import (
    changes_of,
    drain,
    produce,
    read_topic,
    wait_committed,
    without_epoch,
)
from tests.stream.service.campaign_count import expected_tallies

pytestmark = pytest.mark.integration

DAY = 86_400_000
HOUR = 3_600_000
MINUTE = 60_000
RECENCY_SEGMENTS = {"At Risk", "Can't Lose", "Hibernating", "About to Sleep", "Lost"}


# -- helpers -----------------------------------------------------------------------------------


def with_segments(settings: Settings, **changes: Any) -> Settings:
    return settings.model_copy(update={"segments": settings.segments.model_copy(update=changes)})


def with_partitions(settings: Settings, partitions: int) -> Settings:
    topics = settings.topics.model_copy(update={"partitions": partitions})
    return settings.model_copy(update={"topics": topics})


def client_for(settings: Settings) -> resp.Client:
    return redis_client(settings)


def store_for(settings: Settings, client: resp.Client | None = None) -> ModelStore:
    return ModelStore(client or client_for(settings), settings.key_prefix, SIGNING_KEY.encode())


def keyed(lines: list[bytes]) -> list[tuple[bytes | None, bytes]]:
    return [(orjson.loads(line)["user_id"].encode(), line) for line in lines]


def generated(tmp: Path, users: int, days: float, seed: int) -> list[bytes]:
    generate(users, days, seed, tmp / f"e{seed}.jsonl", tmp / f"p{seed}.csv")
    return (tmp / f"e{seed}.jsonl").read_bytes().splitlines()


def event(
    event_id: str,
    user: str,
    kind: str,
    ts: int,
    *,
    session: str = "",
    category: str = "books",
    price: float = 0.0,
    quantity: int = 0,
    order_id: str = "",
) -> tuple[bytes | None, bytes]:
    value: dict[str, Any] = {
        "event_id": event_id,
        "user_id": user,
        "type": kind,
        "ts": ts,
        "session_id": session or f"{user}-s{ts // DAY}",
        "category": category,
    }
    if kind in {"view", "add_to_cart", "purchase"}:
        value["price"] = price
    if kind in {"add_to_cart", "purchase"}:
        value["quantity"] = quantity
    if kind == "purchase":
        value["order_id"] = order_id
    return user.encode(), orjson.dumps(value)


class InProcess:
    """One instance of the service in a thread: `Loop(settings, build_handler(settings))`."""

    def __init__(self, settings: Settings) -> None:
        self.handler: SegmentHandler = build_handler(settings)
        self.loop = Loop(settings, self.handler)
        self.summary: RunSummary | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self.summary = self.loop.run()
        except BaseException as exc:  # re-raised in the test's thread
            self.error = exc

    def start(self) -> InProcess:
        self._thread.start()
        return self

    def stop(self) -> RunSummary:
        self.loop.stop("test done")
        self._thread.join(60)
        self.handler.close()
        assert not self._thread.is_alive(), "the loop did not stop"
        if self.error is not None:
            raise self.error
        assert self.summary is not None
        return self.summary


def wait_for_watermark(settings: Settings, partition: int, ts: int, timeout_s: float = 30) -> None:
    """Until the service has applied a batch whose partition watermark reached `ts` (the user
    writes of a batch land before its watermark is stored)."""
    client = client_for(settings)
    key = keys.watermarks(settings.key_prefix)
    deadline = time.monotonic() + timeout_s
    while int(client.hget(key, str(partition)) or 0) < ts:
        assert time.monotonic() < deadline, f"watermark of partition {partition} never reached {ts}"
        time.sleep(0.05)


# -- 1. timers move quiet users ----------------------------------------------------------------


def test_a_quiet_user_moves_to_at_risk_without_an_event_of_their_own(settings: Settings) -> None:
    """A buys six times over 20 days, then goes quiet; other users' events on A's partition
    carry the event-time watermark past A's recency thresholds (7, 14, 30, 60 days).

    What the policy gives, derived from the code: no model is ever published here
    (learn_per_s=0 and young_samples=0, so no samples, no centres, no labels, no publish), so
    scoring uses the cold params: no F/M quantiles, hence F = M = 1 and the grid's first column
    by R: R5 "New" (< 7 days), R4 "Promising", R3 "About to Sleep" (14-30), R2 "Hibernating"
    (30-60), R1 "Lost" (>= 60). Rules are switched off so only recency decides (the default
    `vip` rule would hold A while its 30-day spend lasts). A is due (its timer: a recency
    threshold, or a horizon after its last scoring) at each step below:
    - +15 d: 15 days are R3 even nudged by the segment margin (13.6 and 16.5 days give R4 and
      R3, never New): a clear move, taken at once;
    - +31 d: R2, but nudged (28.2 days) it is still About to Sleep: marginal, so only proposed;
      confirmed by the timer a dwell later (+32 d 1 h, the second scoring over a day);
    - +61 d: likewise R1, marginal (55.5 days: Hibernating), confirmed at +62 d 1 h.
    The steps in between (+16 d 1 h) change nothing.
    """
    settings = with_segments(
        with_partitions(settings, 1), learn_per_s=0.0, young_samples=0, label_rate=0.0, rules=""
    )
    config = settings.segments.config()
    assert config.recency_days == (7.0, 14.0, 30.0, 60.0)
    assert (config.confirmations, config.dwell_ms) == (2, DAY), "the steps assume these"
    assert config.segment_margin == 0.1, "the steps assume this"
    assert RFM_GRID[3][0] == "About to Sleep"
    assert RFM_GRID[2][0] == "Hibernating"
    assert RFM_GRID[1][0] == "Lost"
    ensure_topics(settings)
    bootstrap, topic = settings.kafka.bootstrap_servers, settings.topics.events
    base = (int(time.time() * 1000) - 100 * DAY) // HOUR * HOUR

    history: list[tuple[bytes | None, bytes]] = []
    for n, day in enumerate((0, 4, 8, 12, 16, 20)):
        at = base + day * DAY
        session = f"A-s{n}"
        history.append(event(f"A-v{n}", "A", "view", at, session=session, price=150.0))
        history.append(
            event(f"A-c{n}", "A", "add_to_cart", at + MINUTE, session=session, price=150.0,
                  quantity=1)
        )  # fmt: skip
        history.append(
            event(f"A-p{n}", "A", "purchase", at + 5 * MINUTE, session=session,
                  price=100.0 + 20 * n, quantity=1, order_id=f"A-o{n}")
        )  # fmt: skip
    last_purchase = base + 20 * DAY + 5 * MINUTE
    assert max(orjson.loads(v)["ts"] for _, v in history) == last_purchase

    confirm = config.dwell_ms + HOUR
    plan = [
        (15 * DAY, ("About to Sleep", 2)),
        (16 * DAY + HOUR, ("About to Sleep", 2)),
        (31 * DAY, ("About to Sleep", 2)),
        (31 * DAY + confirm, ("Hibernating", 3)),
        (61 * DAY, ("Hibernating", 3)),
        (61 * DAY + confirm, ("Lost", 4)),
    ]
    steps = [step for step, _ in plan]
    expected_after_step = [expected for _, expected in plan]
    confirming = [15 * DAY, 31 * DAY + confirm, 61 * DAY + confirm]
    assert last_purchase + steps[-1] < time.time() * 1000  # not in the future
    others = ("B", "C", "D")

    service = InProcess(settings).start()
    try:
        produce(bootstrap, topic, history)
        wait_for_watermark(settings, 0, last_purchase, timeout_s=60)
        first = profile(settings, "A")
        assert first["segment"]["segment"] == "New"
        assert first["changes"] == 1
        for n, (step, (segment, changes)) in enumerate(
            zip(steps, expected_after_step, strict=True)
        ):
            at = last_purchase + step
            produce(
                bootstrap, topic,
                [event(f"{u}-{n}", u, "view", at + i * 10_000, price=20.0)
                 for i, u in enumerate(others)],
            )  # fmt: skip
            wait_for_watermark(settings, 0, at + 20_000)
            now = profile(settings, "A")
            assert (now["segment"]["segment"], now["changes"]) == (segment, changes), (n, now)
    finally:
        summary = service.stop()

    assert summary.dead_lettered == {}, summary.dead_lettered
    shown = profile(settings, "A")
    features = shown["features"]
    # A produced nothing after its last purchase: the moves came from timers alone.
    assert features["events_total"] == len(history)
    assert features["purchases_total"] == 6
    assert features["last_seen"] == last_purchase
    assert features["days_since_last_seen"] >= 61
    assert shown["segment"]["segment"] == "Lost"
    assert shown["segment"]["segment"] in RECENCY_SEGMENTS
    assert shown["model_version"] == 0

    users = ["A", *others]
    total = sum(profile(settings, u)["changes"] for u in users)
    records = read_topic(bootstrap, settings.topics.segments, total, 1)
    assert len(records) == total
    mine = [orjson.loads(r.value or b"") for r in records if r.key == b"A"]
    assert [without_epoch(c["change_id"]) for c in mine] == ["A:1", "A:2", "A:3", "A:4"]
    assert [(c["previous"] or {}).get("segment") for c in mine] == [
        None, "New", "About to Sleep", "Hibernating",
    ]  # fmt: skip
    assert [c["current"]["segment"] for c in mine] == [
        "New", "About to Sleep", "Hibernating", "Lost",
    ]  # fmt: skip
    assert [c["reason"] for c in mine] == ["first_seen", "timer", "timer", "timer"]
    assert {c["model_version"] for c in mine} == {0}
    # Each move was decided at the confirming step's watermark, with A's last event long past.
    confirmed = [last_purchase + s for s in confirming]
    for change, at in zip(mine[1:], confirmed, strict=True):
        assert at <= change["event_time_ms"] <= at + 20_000
        assert change["features"]["frequency"] == 6
        assert change["features"]["days_since_last_seen"] > (at - last_purchase) / DAY - 1
    # Each change is published once: key A's timer changes are not repeated by later batches.
    assert len({c["change_id"] for c in mine}) == len(mine)


# -- 2. two instances, one model ---------------------------------------------------------------


def _spawn(env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as err:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            segstream("run", "--until-idle", "6", "--log-level", "INFO"),
            env=env, stdout=subprocess.PIPE, stderr=err,
        )  # fmt: skip


def _wait_for_log(log: Path, pattern: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not re.search(pattern, log.read_text(errors="replace")):
        assert time.monotonic() < deadline, f"{log.name}: never logged {pattern!r}"
        time.sleep(0.1)


def _hand_made_rows(engine: Engine) -> tuple[np.ndarray, np.ndarray]:
    """A few users as raw feature rows: a window shopper, a steady buyer, a big spender, a
    lapsed buyer, a brand-new visitor."""
    names = engine.config.features
    people = [
        {"events_total": 40, "views_total": 38, "searches_total": 2, "sessions": 9,
         "distinct_categories": 5, "price_level": 30.0, "recency_days": 365,
         "days_since_last_seen": 0.5},
        {"events_total": 60, "views_total": 35, "add_to_cart_total": 12, "purchases_total": 8,
         "orders_total": 8, "sessions": 14, "spend_total": 640.0, "avg_order_value": 80.0,
         "price_level": 70.0, "view_to_cart": 0.34, "cart_to_purchase": 0.67,
         "recency_days": 3, "days_since_last_seen": 1, "distinct_categories": 4},
        {"events_total": 120, "views_total": 70, "add_to_cart_total": 25, "purchases_total": 20,
         "orders_total": 18, "reviews_total": 5, "review_count": 5, "mean_rating": 4.6,
         "sessions": 30, "spend_total": 9_000.0, "avg_order_value": 500.0, "price_level": 400.0,
         "view_to_cart": 0.36, "cart_to_purchase": 0.8, "recency_days": 1,
         "days_since_last_seen": 0.2, "distinct_categories": 8},
        {"events_total": 25, "views_total": 18, "add_to_cart_total": 4, "purchases_total": 3,
         "orders_total": 3, "sessions": 6, "spend_total": 150.0, "avg_order_value": 50.0,
         "price_level": 45.0, "view_to_cart": 0.22, "cart_to_purchase": 0.75,
         "recency_days": 80, "days_since_last_seen": 75, "distinct_categories": 2},
        {"events_total": 1, "views_total": 1, "sessions": 1, "distinct_categories": 1,
         "price_level": 10.0, "recency_days": 365, "days_since_last_seen": 0},
    ]  # fmt: skip
    raw = np.array([[float(p.get(n, 0.0)) for n in names] for p in people])
    rfm_values = np.array(
        [[p["days_since_last_seen"], p.get("orders_total", 0), p.get("spend_total", 0.0)]
         for p in people]
    )  # fmt: skip
    return engine.inputs(raw), rfm_values


def test_two_instances_share_one_model_version_and_agree(
    settings: Settings, tmp_path: Path
) -> None:
    settings = with_segments(settings, snapshot_interval_s=0.5, refresh_interval_s=0.2)
    ensure_topics(settings)
    lines = generated(tmp_path, 400, 20, 5)
    env = {
        **env_for(settings),
        "SEGSTREAM_SEGMENTS__SNAPSHOT_INTERVAL_S": "0.5",
        "SEGSTREAM_SEGMENTS__REFRESH_INTERVAL_S": "0.2",
        "SEGSTREAM_LOOP__BATCH_SIZE": "200",
        "SEGSTREAM_LOOP__COMMIT_INTERVAL_S": "0.2",
    }
    logs = [tmp_path / "one.log", tmp_path / "two.log"]
    services = [_spawn(env, logs[0]), _spawn(env, logs[1])]
    try:
        # Both members hold partitions before any event exists, so both do real work.
        for log in logs:
            _wait_for_log(log, r"assigned \S+\[\d")
        # A live stream over about 4 s: several snapshots, and refreshes on both instances.
        for start in range(0, len(lines), len(lines) // 12 + 1):
            chunk = lines[start : start + len(lines) // 12 + 1]
            produce(settings.kafka.bootstrap_servers, settings.topics.events, keyed(chunk))
            time.sleep(0.3)
        outputs = [s.communicate(timeout=150)[0] for s in services]
    finally:
        for s in services:
            if s.poll() is None:
                s.kill()
                s.communicate()
    assert [s.returncode for s in services] == [0, 0], [log.read_text()[-2000:] for log in logs]
    summaries = [orjson.loads(out) for out in outputs]
    texts = [log.read_text() for log in logs]

    assert all(s["consumed"] > 0 for s in summaries), summaries
    assert sum(s["consumed"] for s in summaries) == len(lines)

    published = [[int(v) for v in re.findall(r"published model v(\d+)", t)] for t in texts]
    trainers = [i for i, p in enumerate(published) if p]
    assert len(trainers) == 1, published
    trainer = trainers[0]
    follower = 1 - trainer
    store = store_for(settings)
    latest = store.current()
    assert latest >= 2
    # One writer: versions 1..latest, each published once, in order.
    assert published[trainer] == list(range(1, latest + 1))
    assert "holding the trainer lease" in texts[trainer]
    assert "holding the trainer lease" not in texts[follower]
    assert not client_for(settings).exists(keys.model_lease(settings.key_prefix))

    # Both ended scoring with a published version: the trainer with the latest; the follower
    # with whatever was latest at its last refresh (it does not refresh without batches).
    followed = [int(v) for v in re.findall(r"scoring with model v(\d+)", texts[follower])]
    assert followed, "the follower never loaded a snapshot"
    assert followed == sorted(set(followed))
    assert set(followed) <= set(published[trainer])
    assert summaries[trainer]["model_version"] == latest
    assert summaries[follower]["model_version"] == followed[-1]
    assert 1 <= summaries[follower]["model_version"] <= latest

    # Every change on the topic was decided with a published version (or before the first).
    changes = changes_of(drain(settings.kafka.bootstrap_servers, settings.topics.segments, 3))
    assert changes
    assert {c["model_version"] for c in changes} <= {0, *published[trainer]}

    # Two instances loading the current version independently score alike.
    a = store_for(settings).load(latest)
    b = store_for(settings).load(latest)
    assert a is not None and b is not None
    assert a.clusters_ready
    assert np.array_equal(a.centers, b.centers)
    assert np.array_equal(a.cluster_ids, b.cluster_ids)
    engine = Engine(settings.segments.config())
    inputs, rfm_values = _hand_made_rows(engine)
    recency = settings.segments.config().recency_days
    one, two = (
        score(a, inputs, rfm_values, recency),
        score(b, inputs, rfm_values, recency),
    )
    assert np.array_equal(a.cluster_ids[one.nearest], b.cluster_ids[two.nearest])
    assert np.array_equal(one.distances, two.distances)
    assert one.rfm == two.rfm
    assert np.array_equal(one.propensity, two.propensity, equal_nan=True)
    # The scores do tell users apart (a model, not a constant).
    assert len(set(a.cluster_ids[one.nearest].tolist())) >= 2


# -- 3. the model survives a restart -----------------------------------------------------------


def test_the_model_survives_a_restart(settings: Settings, tmp_path: Path) -> None:
    settings = with_segments(settings, snapshot_interval_s=0.5, refresh_interval_s=0.2)
    ensure_topics(settings)
    bootstrap, topic = settings.kafka.bootstrap_servers, settings.topics.events
    produce(bootstrap, topic, keyed(generated(tmp_path, 150, 5, 3)))

    handler = build_handler(settings)
    try:
        first = Loop(settings, handler).run(until_idle=2)
    finally:
        handler.close()
    assert first.processed > 0
    store = store_for(settings)
    version = store.current()
    assert version >= 1
    assert handler.sync.params.version == version
    snapshot = store.load(version)
    trainer = store.trainer()
    assert snapshot is not None and trainer is not None
    learned = trainer.learned
    assert learned > 0

    restarted = build_handler(settings)
    try:
        assert restarted.sync.params.version == 0  # nothing loaded until the first refresh
        restarted.sync.refresh()  # what the first batch does, before any new event
        params = restarted.sync.params
        assert params.version == version
        assert np.array_equal(params.centers, snapshot.centers)
        assert np.array_equal(params.cluster_ids, snapshot.cluster_ids)
        assert np.array_equal(params.mean, snapshot.mean)
        assert np.array_equal(params.scale, snapshot.scale)
        assert np.array_equal(params.centers, handler.sync.params.centers)
        assert params.cluster_labels == snapshot.cluster_labels
        assert restarted.sync.trainer  # the lease was released at close; training resumes

        # New events: training continues from the snapshot, versions continue after it.
        produce(bootstrap, topic, keyed(generated(tmp_path, 150, 5, 4)))
        second = Loop(settings, restarted).run(until_idle=2)
    finally:
        restarted.close()
    assert second.processed > 0
    after = store.current()
    assert after > version
    resumed = store.trainer()
    assert resumed is not None
    assert resumed.learned > learned


# -- 4. kill -9: no change lost or duplicated with a different meaning -------------------------


def test_no_change_is_lost_or_duplicated_after_kill_9(settings: Settings, tmp_path: Path) -> None:
    ensure_topics(settings)
    lines = generated(tmp_path, 300, 15, 9)
    bootstrap, topic = settings.kafka.bootstrap_servers, settings.topics.events
    env = {
        **env_for(settings),  # batches of 50
        "SEGSTREAM_LOOP__COMMIT_INTERVAL_S": "0.2",
        # Models are published while the kill lands, so segments move for many users at once.
        "SEGSTREAM_SEGMENTS__SNAPSHOT_INTERVAL_S": "1",
    }

    def feed() -> None:  # about 15 s of live traffic
        for start in range(0, len(lines), 150):
            produce(bootstrap, topic, keyed(lines[start : start + 150]))
            time.sleep(0.25)

    feeder = threading.Thread(target=feed)
    feeder.start()
    service = subprocess.Popen(
        segstream("run", "--log-level", "WARNING"), env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not read_topic(bootstrap, settings.topics.segments, 1, 3, timeout_s=1):
            assert time.monotonic() < deadline, "no segment change was ever published"
            assert service.poll() is None, "the service exited before the kill"
        # A few more batches: some committed, some not.
        group = settings.kafka.group_id
        seen = wait_committed(bootstrap, group, settings.topics.events, 3, alive=service)
        wait_committed(bootstrap, group, settings.topics.events, 3, beyond=seen, alive=service)
        service.send_signal(signal.SIGKILL)
        service.wait(timeout=30)
    finally:
        if service.poll() is None:
            service.kill()
            service.wait()
        feeder.join()

    rerun = subprocess.run(
        segstream("run", "--until-idle", "3", "--log-level", "WARNING"),
        env=env, capture_output=True, timeout=180, check=True,
    )  # fmt: skip
    assert orjson.loads(rerun.stdout)["consumed"] > 0, "the kill did not land mid-stream"

    records = drain(bootstrap, settings.topics.segments, 3)
    by_id: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for change in changes_of(records):
        # One epoch here (the state is never lost): `<user>:<seq>` names a change.
        by_id[without_epoch(change["change_id"])].append(change)
    # A duplicate is the same decision published again.
    for change_id, copies in by_id.items():
        assert len({orjson.dumps(decision(c)) for c in copies}) == 1, (change_id, copies)

    users = {orjson.loads(line)["user_id"] for line in lines}
    profiles = {p["user_id"]: p for p in all_profiles(settings)}
    assert set(profiles) == users
    seqs: dict[str, list[int]] = defaultdict(list)
    for change_id in by_id:
        user, _, seq = change_id.rpartition(":")
        seqs[user].append(int(seq))
    problems = []
    for user in sorted(users):
        shown = profiles[user]
        n = shown["changes"]
        if sorted(seqs[user]) != list(range(1, n + 1)):
            problems.append((user, n, sorted(seqs[user])))
            continue
        last = segment_changes(by_id, user, n)[-1]["current"]
        if (last["segment"], last["propensity_band"]) != (
            shown["segment"]["segment"],
            shown["segment"]["propensity_band"],
        ):
            problems.append((user, last, shown["segment"]))
    assert not problems, problems[:10]
    # The chain of each user's segment changes links up: each one's current is the next one's
    # previous (membership events in between are numbered in the same sequence).
    for user in users:
        chain = segment_changes(by_id, user, profiles[user]["changes"])
        for before, after in itertools.pairwise(chain):
            assert before["current"]["segment"] == after["previous"]["segment"], user
    # The population tallies count every user once, in their current segment and cluster,
    # and every campaign offer once, through the kill, the re-read batches and the retries.
    assert populations(settings) == truth(profiles.values())
    decided = [copies[0] for copies in by_id.values()]
    offers = {k: v for k, v in tallies(settings).items() if k.startswith("offer:")}
    assert offers == expected_tallies(decided, None, 0)
    # Erasure takes the user out of the counts too (not out of the campaigns' history).
    gone = sorted(users)[0]
    forget = subprocess.run(segstream("forget", gone), env=env, capture_output=True, check=False)
    assert forget.returncode == 0, forget.stderr.decode()[-2000:]
    del profiles[gone]
    assert populations(settings) == truth(profiles.values())


def decision(change: dict[str, Any]) -> Any:
    """What a change says, without when it was sent: a segment change's before and after, a
    membership's segment and direction."""
    if change["type"] == "membership":
        return change["segment"], change["entered"]
    return change["previous"], change["current"]


def segment_changes(
    by_id: dict[str, list[dict[str, Any]]], user: str, n: int
) -> list[dict[str, Any]]:
    """The user's segment changes 1..n in order (membership events left out)."""
    found = [by_id[f"{user}:{k}"][0] for k in range(1, n + 1)]
    return [c for c in found if c["type"] == "segment"]


def tallies(settings: Settings) -> dict[str, int]:
    counts = features.tallies.read(client_for(settings), settings.key_prefix)
    return {k: v for k, v in counts.items() if v}


def populations(settings: Settings) -> dict[str, int]:
    """The tallies of users by segment and cluster."""
    return {k: v for k, v in tallies(settings).items() if k.startswith(("segment:", "cluster:"))}


def truth(profiles: Iterable[dict[str, Any]]) -> dict[str, int]:
    counted: Counter[str] = Counter()
    for shown in profiles:
        segment = shown["segment"]
        counted[f"segment:{segment['segment']}"] += 1
        if segment["cluster"] is not None:
            counted[f"cluster:{segment['cluster']}"] += 1
    return dict(counted)


# -- 5. signatures -----------------------------------------------------------------------------


class _Canary:
    """Unpickling this creates a directory: proof that a blob was (or was not) unpickled."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.mkdir, (str(self.path),)


def metric_value(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_bad_signature_is_refused_and_scoring_falls_back_to_the_last_good_version(
    settings: Settings, tmp_path: Path
) -> None:
    client = client_for(settings)
    prefix = settings.key_prefix
    # The canary works: a blob sealed with our key is unpickled (and is not a model).
    control = tmp_path / "control"
    client.set(keys.model_snapshot(prefix, 7), seal(_Canary(control), SIGNING_KEY.encode()))
    with pytest.raises(SnapshotError, match="does not hold a Params"):
        store_for(settings).load(7)
    assert control.is_dir()

    # Signed with another key and made the current version and the trainer's state: refused
    # before pickle runs, by the store, by an instance following the model, and by one taking
    # the trainer lease.
    canary = tmp_path / "canary"
    forged = seal(_Canary(canary), b"someone-else-key-0123456789")
    client.set(keys.model_snapshot(prefix, 8), forged)
    client.set(keys.model_trainer(prefix), forged)
    client.set(keys.model_current(prefix), 8)
    # With the meta of a model of these settings, so that the signature is what refuses it.
    ours = fingerprint(settings.segments.config(), settings.features.rules().windows)
    client.set(keys.model_meta(prefix), orjson.dumps({"version": 8, "fingerprint": ours}))
    with pytest.raises(SnapshotError, match="signature"):
        store_for(settings).load(8)
    with pytest.raises(SnapshotError, match="signature"):
        store_for(settings).trainer()
    # Neither stops: they go on scoring with the newest good version kept (here v6), and the
    # one that took the lease gives it back instead of training on a forged state.
    client.delete(keys.model_snapshot(prefix, 7))  # the canary above: unpickled once is enough
    follower, trainer = build_handler(settings), build_handler(settings)
    good = replace(follower.sync.params, version=6)
    client.set(keys.model_snapshot(prefix, 6), seal(good, SIGNING_KEY.encode()))
    refused = metric_value("segstream_snapshots_refused_total", {"kind": "scoring"})
    try:
        assert store_for(settings).hold_lease("another-instance", 60_000)
        follower.sync.refresh()  # not the trainer: follows the current version
        assert not follower.sync.trainer
        assert follower.sync.params.version == 6
        store_for(settings).release("another-instance")
        trainer.sync.refresh()  # takes the free lease and resumes from the current version
        assert not trainer.sync.trainer
        assert store_for(settings).lease_holder() is None
        assert not canary.exists()
        assert trainer.sync.params.version == 6
        after = metric_value("segstream_snapshots_refused_total", {"kind": "scoring"})
        assert after - refused == 2  # v8, by each instance
        assert metric_value("segstream_snapshots_refused_total", {"kind": "trainer"}) >= 1
    finally:
        follower.close()
        trainer.close()

    # A genuine snapshot with one byte of its body changed is refused too.
    genuine = seal(follower.sync.params, SIGNING_KEY.encode())
    tampered = genuine[:-1] + bytes([genuine[-1] ^ 1])
    client.set(keys.model_snapshot(prefix, 9), tampered)
    with pytest.raises(SnapshotError, match="signature"):
        store_for(settings).load(9)
    with pytest.raises(SnapshotError, match="bad header"):
        unseal(b"not a snapshot", SIGNING_KEY.encode())
