"""State lost outside the service: it must stop loudly, tell the operator, and recover exactly.

Redis restarted without its data, the events topic deleted and recreated, a forged model
snapshot, and a broker that goes silent under a bounded run and under the probes.
"""

from __future__ import annotations

import signal
import subprocess
import urllib.request
from typing import Any
from urllib.error import HTTPError

import orjson
import pytest
from confluent_kafka.admin import AdminClient

from features import keys
from segments.snapshots import seal
from stream.kafka.topics import ensure_topics
from stream.settings import admin_config
from tests.cli_tools import segstream
from tests.faults.harness import Rig, Service, frozen, keep_for, keyed, wait_until
from tests.kafka_tools import changes_of, drain

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

# Readiness gives up on a silent broker after this long here (30 s by default).
SILENCE = {"SEGSTREAM_METRICS__KAFKA_SILENCE_S": "5"}


def probe(service: Service, path: str) -> tuple[int, dict[str, Any]]:
    url = f"http://127.0.0.1:{service.port}{path}"
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, orjson.loads(answer.read())
    except HTTPError as exc:
        return exc.code, orjson.loads(exc.read())
    except OSError:
        return 0, {}


def stopped_for(service: Service) -> str:
    """The reason the service's readiness gives for having stopped ("" while it has not)."""
    status, answer = probe(service, "/readyz")
    return str(answer.get("stopped", "")) if status == 503 else ""


def exit_code(service: Service, timeout_s: float = 60) -> int:
    """SIGTERM, then the process' exit code (a stopped service ends with 1, not 0)."""
    assert service.process is not None
    service.signal(signal.SIGTERM)
    return service.process.wait(timeout_s)


def recover(rig: Rig, how: str) -> dict[str, Any]:
    done = subprocess.run(
        segstream("recover", how, "--log-level", "WARNING"),
        env=rig.env(), capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    answer: dict[str, Any] = orjson.loads(done.stdout)
    return answer


def test_redis_restarted_empty_stops_the_service_loudly_until_recover_rebuilds_it(
    rig: Rig, events: list[bytes]
) -> None:
    feeder = rig.feed.send_over(keyed(events), seconds=20)
    service = rig.service(**SILENCE).start()
    rig.wait_consuming(service, at_least=len(events) // 4)
    rig.redis.stop(signal.SIGKILL)
    rig.redis.start()  # no AOF, no RDB: it comes back empty
    wait_until(lambda: bool(stopped_for(service)), "readiness to say it stopped", 60, [service])
    assert "holds no segstream state" in stopped_for(service) or "lost segstream's state" in (
        stopped_for(service)
    )
    assert service.metric("segstream_state_lost", kind="lost") == 1
    assert probe(service, "/healthz")[0] == 200, "a stopped service is alive, not stuck"
    feeder.finish()
    held = rig.committed()
    keep_for(3, [service])  # records keep arriving; none may be applied or committed now
    assert rig.committed() == held
    assert exit_code(service) == 1
    assert service.logged("stopped consuming")

    epoch = recover(rig, "--from-earliest")["epoch"]
    again = rig.service("after", **SILENCE).start()
    verdict = rig.finish(again)
    assert any(f":{epoch}:" in i for i in change_ids(rig)), "no change under the new epoch"
    assert verdict.users == len({orjson.loads(line)["user_id"] for line in events})


def test_a_recreated_events_topic_stops_the_service_instead_of_dropping_its_events(
    rig: Rig, events: list[bytes]
) -> None:
    half = len(events) // 2
    rig.feed.send(keyed(events[:half]))
    service = rig.service().start()
    rig.wait_drained([service])
    rig.stop(service)
    # As `docker compose down/up` with Kafka on no volume and Redis on one: every topic anew.
    admin = AdminClient(admin_config(rig.settings))
    topics = rig.settings.topics
    gone = [topics.events, topics.segments, topics.dlq]
    for future in admin.delete_topics(gone).values():
        future.result(timeout=30)
    wait_until(lambda: not set(gone) & set(admin.list_topics(timeout=10).topics), "the topics gone")
    ensure_topics(rig.settings)
    rig.feed.sent.clear()
    rig.summaries.clear()
    rig.feed.send(keyed(events[half:]))

    stopped = rig.service("after-recreate").start()
    wait_until(lambda: bool(stopped_for(stopped)), "the service to stop", 60, [stopped])
    assert "not the one the state was built from" in stopped_for(stopped)
    assert stopped.metric("segstream_state_lost", kind="topic") == 1
    assert exit_code(stopped) == 1

    recover(rig, "--from-earliest")
    again = rig.service("rebuilt").start()
    rig.wait_drained([again])
    rig.stop(again)
    rig.verify()  # the profiles are those of the new topic's events, none dropped


def test_a_forged_snapshot_is_refused_and_scoring_goes_on_with_the_last_good_one(
    rig: Rig, events: list[bytes]
) -> None:
    client, prefix = rig.client(), rig.names
    half = len(events) // 2
    rig.feed.send(keyed(events[:half]))
    service = rig.service().start()
    rig.wait_drained([service])
    rig.stop(service)
    good = int(client.get(keys.model_current(prefix)) or 0)
    assert good >= 2
    # Signed with another key, made the current version and the trainer's state.
    forged = seal({"not": "a model"}, b"someone-else-key-0123456789")
    client.set(keys.model_snapshot(prefix, good + 50), forged)
    client.set(keys.model_trainer(prefix), forged)
    client.set(keys.model_current(prefix), good + 50)

    rig.feed.send(keyed(events[half:]))
    service.start()
    rig.wait_drained([service])
    assert (service.metric("segstream_snapshots_refused_total", kind="scoring") or 0) > 0
    assert (service.metric("segstream_snapshots_refused_total", kind="trainer") or 0) > 0
    assert service.metric("segstream_model_version") == good
    assert service.metric("segstream_trainer") == 0, "it trained on a forged state"
    rig.stop(service)
    rig.verify()


def test_a_silent_broker_makes_the_service_unready_not_dead_and_a_bounded_run_unclean(
    rig: Rig, events: list[bytes]
) -> None:
    # A slow consumer (small fetches) so that records are still on the broker when it freezes.
    slow = {
        **SILENCE,
        "SEGSTREAM_KAFKA__CONFIG__MAX_PARTITION_FETCH_BYTES": "2000",
        "SEGSTREAM_KAFKA__CONFIG__QUEUED_MAX_MESSAGES_KBYTES": "1",
        "SEGSTREAM_LOOP__BATCH_SIZE": "20",
        "SEGSTREAM_LOOP__FLUSH_TIMEOUT_S": "5",
    }
    rig.feed.send(keyed(events))
    bounded = rig.service("bounded", "--until-idle", "2", **slow).start()
    rig.wait_consuming(bounded, at_least=100)
    with frozen(rig.kafka):
        wait_until(lambda: probe(bounded, "/readyz")[0] == 503, "unready", 30, [bounded])
        _, answer = probe(bounded, "/readyz")
        assert answer["kafka"] == "down", answer
        assert probe(bounded, "/healthz")[0] == 200, "waiting on the broker is not being stuck"
        wait_until(
            lambda: bounded.logged("no broker answered"),
            "the bounded run to give up",
            90,
            [bounded],
        )
    # Closing its consumer needs the broker: the process ends once it answers again.
    assert bounded.process is not None
    bounded.process.wait(120)
    assert bounded.out_path.read_bytes(), bounded.log_tail()
    summary = orjson.loads(bounded.out_path.read_bytes())
    assert bounded.process.returncode == 3, bounded.log_tail()
    assert not summary["clean_exit"]
    assert summary["stopped_by"].startswith("broker silent"), summary
    assert summary["consumed"] < len(events)

    again = rig.service("after", "--until-idle", "2").start()
    summary = again.wait(180)
    rig.summaries.append(summary)
    rig.verify()


def change_ids(rig: Rig) -> list[str]:
    records = drain(rig.bootstrap, rig.settings.topics.segments, 3, quiet_s=1.0)
    return [c["change_id"] for c in changes_of(records)]
