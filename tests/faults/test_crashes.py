"""The service's own processes failing: kill -9, members coming and going, a frozen member."""

from __future__ import annotations

import random
import re
import signal

import pytest

from tests.faults.harness import Rig, Service, frozen, keyed, wait_until

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]

FAST_SESSIONS = {
    "SEGSTREAM_KAFKA__SESSION_TIMEOUT_MS": "3000",
    "SEGSTREAM_KAFKA__CONFIG__HEARTBEAT_INTERVAL_MS": "500",
}


def test_kill_9_at_random_moments_loses_and_doubles_nothing(rig: Rig, events: list[bytes]) -> None:
    kill_at_random_moments(rig, events, seed=9, lives=6)


def kill_at_random_moments(rig: Rig, events: list[bytes], *, seed: int, lives: int) -> None:
    """The input in `lives` parts; during each but the last the service is killed at a random
    moment; then it reads the rest, and the run is checked (`Rig.finish`)."""
    rng = random.Random(seed)
    records = keyed(events)
    size = len(records) // lives + 1
    parts = [records[start : start + size] for start in range(0, len(records), size)]
    # The group notices a dead member after its session timeout: short, so a restart rejoins
    # in seconds (the kill is the fault under test, not the wait).
    service = rig.service(**FAST_SESSIONS)
    for part in parts[:-1]:
        feeder = rig.feed.send_over(part, seconds=3, chunks=10)
        service.start()
        # A random moment of its consumption: after this many records of this life (records
        # read again after the previous kill count too, so the part always gets there).
        rig.wait_consuming(service, at_least=rng.randrange(1, len(part)))
        service.kill()
        feeder.finish()
    rig.feed.send(parts[-1])
    service.start()
    rig.finish(service)


def test_a_storm_of_rebalances_loses_and_doubles_nothing(rig: Rig, events: list[bytes]) -> None:
    feeder = rig.feed.send_over(keyed(events), seconds=40)
    first = rig.service("first").start()
    rig.wait_consuming(first)
    second = rig.service("second")
    for _ in range(6):
        second.start()
        rig.wait_assigned(second)
        rig.stop(second)  # its partitions go back to the first, committed
    feeder.finish()
    rig.finish(first)


def test_a_frozen_member_coming_back_as_a_zombie_is_fenced(rig: Rig, events: list[bytes]) -> None:
    feeder = rig.feed.send_over(keyed(events), seconds=30)
    zombie, heir = rig.service("zombie").start(), rig.service("heir").start()
    rig.wait_assigned(zombie)
    rig.wait_assigned(heir)
    rig.wait_consuming(zombie)
    zombie.signal(signal.SIGSTOP)
    try:
        # Past its session timeout (6 s): the heir owns every partition and works on them.
        rig.wait_assigned(heir, partitions=3, timeout_s=60)
        consumed = heir.metric("segstream_events_consumed_total") or 0
        rig.wait_consuming(heir, at_least=consumed + 100)
    finally:
        zombie.signal(signal.SIGCONT)
    wait_until(lambda: bool(zombie.metrics()), "the zombie to answer again", 30, [zombie])
    feeder.finish()
    rig.wait_drained([zombie, heir], timeout_s=60)
    refused = zombie.metric("segstream_writes_refused_total")
    assert refused is not None, "segstream_writes_refused_total is not exported"
    print(
        f"zombie: writes refused {refused}, heir: {heir.metric('segstream_writes_refused_total')}"
    )
    rig.stop(zombie)
    rig.stop(heir)
    rig.verify()


def test_a_member_frozen_while_paused_on_redis_consumes_again_when_it_comes_back(
    rig: Rig, events: list[bytes]
) -> None:
    """The zombie's worst moment, made certain: it froze while paused by backpressure, so its
    partitions were paused when it lost them; given one back, it must consume it."""
    half = len(events) // 2
    rig.feed.send(keyed(events[:half]))
    zombie = rig.service("zombie").start()
    rig.wait_consuming(zombie)
    with frozen(rig.redis):
        wait_until(lambda: zombie.metric("segstream_paused") == 1, "backpressure", alive=[zombie])
        zombie.signal(signal.SIGSTOP)
        try:
            heir = rig.service("heir").start()
            rig.wait_assigned(heir, partitions=3)
        finally:
            zombie.signal(signal.SIGCONT)
    # Back in the group, the zombie is given a share of the partitions again; then new records
    # arrive on every partition.
    wait_until(lambda: reassigned(zombie), "the zombie to be given partitions again", 60, [zombie])
    rig.feed.send(keyed(events[half:]))
    rig.finish(zombie, heir, timeout_s=60)


def reassigned(service: Service) -> bool:
    """The service logged an assignment of partitions after it lost its own."""
    _, _, after = service.log_text().partition("without a chance to commit")
    return re.search(r"assigned \S+\[\d", after) is not None
