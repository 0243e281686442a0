"""The service on a 3-primary Redis Cluster: kill -9, slots moving while it consumes, and a
primary that comes back empty.

Each run ends with the fault suite's checks (`Rig.verify`): every profile equals the hand count
of the records sent, no change lost or doubled, the population tallies (one hash per slot on a
cluster) equal to the users' segments.
"""

from __future__ import annotations

import signal

import orjson
import pytest

from features import keys
from tests.faults.conftest import RigFactory
from tests.faults.harness import keep_for, keyed, wait_until
from tests.faults.test_crashes import kill_at_random_moments
from tests.faults.test_lost_state import SILENCE, exit_code, recover, stopped_for

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]


def test_kill_9_on_a_cluster_loses_and_doubles_nothing(
    make_rig: RigFactory, events: list[bytes]
) -> None:
    kill_at_random_moments(make_rig(cluster=True), events, seed=11, lives=4)


def test_slots_moving_while_the_service_consumes_change_no_count(
    make_rig: RigFactory, events: list[bytes]
) -> None:
    rig = make_rig(cluster=True)
    assert rig.cluster is not None
    first, second, third = rig.cluster.nodes
    feeder = rig.feed.send_over(keyed(events), seconds=20)
    service = rig.service().start()
    rig.wait_consuming(service, at_least=200)
    # Users' states, tallies, timers and outboxes move under the running service: it meets
    # ASK while a slot migrates and MOVED once it has moved.
    rig.cluster.reshard(first, second, 2_000)
    rig.cluster.reshard(third, first, 1_000)
    consumed = service.metric("segstream_events_consumed_total") or 0
    feeder.finish()
    rig.wait_drained([service])
    redirected = service.metric("segstream_redis_redirects_total") or 0
    verdict = rig.finish(service)
    assert consumed < verdict.records, "the slots moved after the service had read everything"
    assert redirected > 0, "the service never met a moved slot: the test tested nothing"
    print(f"consumed before the moves ended: {consumed:.0f} of {verdict.records}; {redirected=}")


def test_a_primary_restarted_empty_stops_the_service_loudly_until_recover_rebuilds_it(
    make_rig: RigFactory, events: list[bytes]
) -> None:
    rig = make_rig(cluster=True)
    assert rig.cluster is not None
    # A primary without the origin record: only the slots' epoch marks can tell it lost data.
    holder = rig.client().get_node_from_key(keys.origin(rig.names))
    wiped = next(node for node in rig.cluster.nodes if node.port != holder.port)
    feeder = rig.feed.send_over(keyed(events), seconds=20)
    service = rig.service(**SILENCE).start()
    rig.wait_consuming(service, at_least=len(events) // 4)
    wiped.stop(signal.SIGKILL)
    wiped.start()  # no AOF, no RDB: it keeps its slots (nodes.conf) and comes back empty
    wait_until(lambda: bool(stopped_for(service)), "readiness to say it stopped", 60, [service])
    assert "lost its data" in stopped_for(service)
    feeder.finish()
    held = rig.committed()
    keep_for(3, [service])  # records keep arriving; none may be applied or committed now
    assert rig.committed() == held
    assert exit_code(service) == 1

    recover(rig, "--from-earliest")
    again = rig.service("after", **SILENCE).start()
    verdict = rig.finish(again)
    assert verdict.users == len({orjson.loads(line)["user_id"] for line in events})
