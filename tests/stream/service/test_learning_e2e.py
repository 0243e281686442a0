"""Learning end to end on real servers, with the settings a user gets: a model from the first
events of a new stream, quiet users re-scored, rule memberships entered and left as events of
their own, and a model refused by an instance whose settings would misread it.
"""

from __future__ import annotations

import csv
import subprocess
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from features import keys
from features.events import decode_event
from segments import policy
from stream.kafka.handler import Batch
from stream.kafka.loop import Loop
from stream.kafka.partitioning import partition_of
from stream.kafka.topics import ensure_topics
from stream.segment_settings import SegmentSettings
from stream.service.wiring import build_handler
from stream.settings import Settings
from stream.tools.evaluate import FAR_FUTURE_MS, EvaluateOptions, Recorder, assess
from stream.tools.generate import DEFAULT_START_MS, generate
from tests.cli_tools import env_for, segstream
from tests.kafka_tools import changes_of, drain, produce, without_epoch
from tests.stream.service.test_segments_e2e import (
    DAY,
    HOUR,
    InProcess,
    client_for,
    event,
    generated,
    keyed,
    metric_value,
    wait_for_watermark,
    with_partitions,
    with_segments,
)

pytestmark = pytest.mark.integration

DEFAULTS = SegmentSettings()


def defaults(settings: Settings) -> Settings:
    """The test settings with the segmentation a user gets (the fixture's warm-up is short)."""
    return with_segments(settings, warmup=DEFAULTS.warmup)


def personas(path: Path) -> dict[str, str]:
    with path.open(newline="") as handle:
        return {row["user_id"]: row["persona"] for row in csv.DictReader(handle)}


def test_a_new_stream_gets_its_model_from_its_first_events(
    settings: Settings, tmp_path: Path
) -> None:
    """2,000 generated users over 28 days, replayed and consumed once with default learning
    settings: the first version with clusters comes within the first 5,000 events, the first
    propensity once labels resolve (a horizon of event time), and at the end every user has a
    cluster that tells the personas apart and a propensity scored within a horizon."""
    settings = defaults(settings)
    ensure_topics(settings)
    lines = generated(tmp_path, 2_000, 28, 11)
    produce(settings.kafka.bootstrap_servers, settings.topics.events, keyed(lines))
    handler = build_handler(settings)
    recorder = Recorder(handler)
    try:
        summary = Loop(settings, recorder).run(until_idle=3)
    finally:
        handler.close()
    assert summary.processed == len(lines)

    seen = recorder.observed
    assert seen.clusters_at is not None
    assert seen.clusters_at <= 5_000, seen.clusters_at
    assert seen.propensity_at is not None
    states = dict(handler.store.states())
    truth = personas(tmp_path / "p11.csv")
    evaluation = assess(recorder, states, truth, EvaluateOptions(), settings)
    assert evaluation.clustered == len(truth) == len(states)
    assert evaluation.ari > 0.4, evaluation.ari
    assert evaluation.propensity["auc"] > 0.7, evaluation.propensity

    # No stored propensity is older than the horizon: quiet users were re-scored by timers.
    horizon = settings.segments.config().horizon_ms
    marks = handler.store.stored_watermarks()
    records = {u: policy.load(s.segment) for u, s in states.items()}
    quiet = [u for u, s in states.items() if marks[s.partition] - s.last_seen > horizon]
    assert len(quiet) > 50
    assert seen.propensity_version is not None
    for user, state in states.items():
        record = records[user]
        # Timers fire in the batch whose watermark passes them: at most a batch late.
        assert marks[state.partition] - record.scored <= horizon + DAY, (user, record)
        if record.version >= seen.propensity_version:
            assert record.propensity >= 0, (user, record)
    assert all(records[u].scored > states[u].last_seen for u in quiet)
    # Users last scored before the first propensity get theirs within a horizon; most have it.
    assert sum(r.propensity >= 0 for r in records.values()) > 0.7 * len(records)


def test_rule_segments_are_entered_and_left_as_events_of_their_own(settings: Settings) -> None:
    """V buys three times 200 within two days: `vip` (spend_30d > 500 and orders_30d >= 3)
    matches at once, so V enters it (a segment change to vip and a membership event). Other
    users' events then carry the watermark on; about 30 days after the purchases the 30-day
    window no longer holds them, V is re-scored by a timer and leaves vip: a membership event
    again, and a segment change back to an RFM segment."""
    settings = with_segments(
        with_partitions(settings, 1), learn_per_s=0.0, young_samples=0, label_rate=0.0
    )
    ensure_topics(settings)
    bootstrap, topic = settings.kafka.bootstrap_servers, settings.topics.events
    base = (int(time.time() * 1000) - 80 * DAY) // HOUR * HOUR
    buys = [
        event(f"V-p{n}", "V", "purchase", base + n * DAY, price=200.0, quantity=1,
              order_id=f"V-o{n}")
        for n in range(3)
    ]  # fmt: skip
    later = [
        event(f"W-{day}", "W", "view", base + day * DAY, price=10.0) for day in range(3, 47, 4)
    ]
    # Scored as of the partition's watermark: the events go in step by step, as they would live.
    service = InProcess(settings).start()
    try:
        produce(bootstrap, topic, buys)
        wait_for_watermark(settings, 0, base + 2 * DAY)
        for key, value in later:
            produce(bootstrap, topic, [(key, value)])
            wait_for_watermark(settings, 0, orjson.loads(value)["ts"])
    finally:
        service.stop()

    mine = [
        c for c in changes_of(drain(bootstrap, settings.topics.segments, 1)) if c["user_id"] == "V"
    ]
    ids = [without_epoch(c["change_id"]) for c in mine]
    assert ids == [f"V:{n}" for n in range(1, len(mine) + 1)], ids
    memberships = [c for c in mine if c["type"] == "membership"]
    assert [(c["segment"], c["entered"]) for c in memberships] == [("vip", True), ("vip", False)]
    entered, left = memberships
    assert entered["actions"] == list(DEFAULTS.config().playbook["vip"])
    assert left["actions"] == []
    assert left["reason"] == "timer"
    assert left["features"]["spend_30d"] == 0.0
    assert left["event_time_ms"] > base + 2 * DAY + 30 * DAY - 2 * DAY
    segments = [c for c in mine if c["type"] == "segment"]
    assert any(c["current"]["segment"] == "vip" for c in segments)
    assert segments[-1]["current"]["segment"] != "vip"
    assert segments[-1]["current"]["rules"] == []
    # Each membership event comes with the segment change decided at the same scoring.
    for membership in memberships:
        same = [c for c in segments if c["event_time_ms"] == membership["event_time_ms"]]
        assert same, membership


def _run(settings: Settings, *extra: str, **env: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        segstream(*extra),
        env={**env_for(settings), **env},
        capture_output=True,
        timeout=120,
        check=False,
    )


def _json(done: subprocess.CompletedProcess[bytes]) -> Any:
    return orjson.loads(done.stdout)


def test_a_model_is_refused_by_an_instance_with_other_settings(
    settings: Settings, tmp_path: Path
) -> None:
    ensure_topics(settings)
    produce(
        settings.kafka.bootstrap_servers,
        settings.topics.events,
        keyed(generated(tmp_path, 300, 10, 13)),
    )
    built = _run(settings, "run", "--until-idle", "3")
    assert built.returncode == 0, built.stderr.decode()[-2000:]
    shown = _json(_run(settings, "model", "show"))
    assert shown["current_version"] >= 1
    assert shown["usable_here"] is True
    assert shown["model"]["fingerprint"]["k"] == str(DEFAULTS.k)
    assert shown["model"]["samples_learned"] > 0
    assert shown["model"]["placement"] >= 1  # the first centres are one

    refused = _run(settings, "run", "--until-idle", "3", SEGSTREAM_SEGMENTS__K="8")
    assert refused.returncode == 2, refused.stderr.decode()[-2000:]
    message = refused.stderr.decode()
    assert "SEGSTREAM_SEGMENTS__K is '8' here but '7' in the stored model" in message
    assert "segstream model reset --yes" in message
    features = _run(
        settings, "run", "--until-idle", "3", SEGSTREAM_SEGMENTS__FEATURES="sessions,tenure_days"
    )
    assert features.returncode == 2
    assert "SEGSTREAM_SEGMENTS__FEATURES is 'sessions,tenure_days' here" in features.stderr.decode()
    other = _json(_run(settings, "model", "show", SEGSTREAM_SEGMENTS__K="8"))
    assert other["usable_here"] is False
    assert "SEGSTREAM_SEGMENTS__K" in other["problem"]

    unconfirmed = _run(settings, "model", "reset")
    assert unconfirmed.returncode == 2
    assert "--yes" in unconfirmed.stderr.decode()
    assert _json(_run(settings, "model", "show"))["current_version"] == shown["current_version"]
    reset = _run(settings, "model", "reset", "--yes")
    assert reset.returncode == 0, reset.stderr.decode()
    assert _json(reset)["deleted_keys"] >= 3
    client = client_for(settings)
    assert not client.exists(keys.model_meta(settings.key_prefix))
    assert not client.exists(keys.model_current(settings.key_prefix))

    # After the reset, the new settings build a model of their own (from later events: the
    # earlier ones are behind the partitions' watermarks now).
    later = tmp_path / "later.jsonl"
    generate(300, 10, 14, later, tmp_path / "later.csv", start_ms=DEFAULT_START_MS + 11 * DAY)
    produce(
        settings.kafka.bootstrap_servers,
        settings.topics.events,
        keyed(later.read_bytes().splitlines()),
    )
    rebuilt = _run(settings, "run", "--until-idle", "3", SEGSTREAM_SEGMENTS__K="8")
    assert rebuilt.returncode == 0, rebuilt.stderr.decode()[-2000:]
    assert _json(rebuilt)["processed"] > 1_000
    fingerprint = _json(_run(settings, "model", "show", SEGSTREAM_SEGMENTS__K="8"))["model"]
    assert fingerprint["fingerprint"]["k"] == "8"


def test_users_scored_before_the_clusters_came_get_one_without_an_event_of_theirs(
    settings: Settings,
) -> None:
    """The first version with clusters is a placement of the clusters: the users scored before
    it (no cluster) are swept at the next batch, in every partition, though they send nothing
    and the batch has events of one partition only. Only their clusters change: no change is
    published for them, and their segments and timers wait for their own events or timers."""
    handler = build_handler(settings)
    partitions = settings.topics.partitions
    handler.partitions_assigned(list(range(partitions)))
    offsets = [0] * partitions

    def handle(lines: list[tuple[bytes | None, bytes]]) -> None:
        events = [decode_event(value, now_ms=FAR_FUTURE_MS) for _, value in lines]
        where = [partition_of(e.user_id.encode(), partitions) for e in events]
        at = []
        for partition in where:
            at.append(offsets[partition])
            offsets[partition] += 1
        handler.handle(Batch(settings.topics.events, events, where, at))
        handler.committed(dict(enumerate(offsets)))

    early = [f"early-{i}" for i in range(3 * settings.segments.warmup)]
    swept_before = metric_value("segstream_users_scored_total", {"trigger": "sweep"})
    try:
        handle([event(f"{u}-v", u, "view", DEFAULT_START_MS, price=20.0) for u in early])
        assert handler.sync.params.clusters_ready  # published after the batch, from its samples
        before = {u: policy.load(handler.store.state(u).segment) for u in early}
        assert {r.cluster for r in before.values()} == {-1}
        assert {partition_of(u.encode(), partitions) for u in early} == set(range(partitions))
        handle([event("late-v", "late", "view", DEFAULT_START_MS + HOUR, price=20.0)])
        published = {c.user_id for c in handler.decided}
        states = {u: handler.store.state(u) for u in early}
    finally:
        handler.close()
    after = {u: policy.load(s.segment) for u, s in states.items()}
    assert all(r.cluster >= 0 for r in after.values()), [u for u, r in after.items()]
    assert published == {"late"}
    for user, record in after.items():
        kept = (record.segment, record.band, record.version, record.due, record.seq)
        assert kept == (before[user].segment, before[user].band, before[user].version,
                        before[user].due, before[user].seq), user  # fmt: skip
    assert {s.last_seen for s in states.values()} == {DEFAULT_START_MS}
    swept = metric_value("segstream_users_scored_total", {"trigger": "sweep"}) - swept_before
    assert swept == len(early)
