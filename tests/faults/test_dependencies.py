"""Redis and the broker failing under the running service: frozen, killed, full, slow, lossy."""

from __future__ import annotations

import signal
from functools import partial

import pytest

from tests.faults.conftest import RigFactory
from tests.faults.harness import Rig, Service, frozen, keep_for, keyed, wait_until
from tests.faults.proxy import RedisProxy

pytestmark = [pytest.mark.faults, pytest.mark.timeout(300)]


def noticed(service: Service) -> bool:
    """The service met a Redis failure: a step retried or a Redis call failed (some calls,
    such as the outbox cleanup, are put off rather than retried)."""
    failures = service.metric("segstream_retries_total") or 0
    return failures + (service.metric("segstream_redis_errors_total") or 0) > 0


def test_a_broker_frozen_for_20_s_mid_stream(rig: Rig, events: list[bytes]) -> None:
    feeder = rig.feed.send_over(keyed(events), seconds=20)
    service = rig.service().start()
    rig.wait_consuming(service, at_least=len(events) // 4)
    feeder.hold()
    with frozen(rig.kafka):
        keep_for(20, [service])
    feeder.release()
    feeder.finish()
    rig.finish(service, timeout_s=60)


def test_redis_frozen_for_10_s_mid_stream(rig: Rig, events: list[bytes]) -> None:
    feeder = rig.feed.send_over(keyed(events), seconds=20)
    service = rig.service().start()
    rig.wait_consuming(service, at_least=len(events) // 4)
    with frozen(rig.redis):
        keep_for(10, [service])
    feeder.finish()
    rig.wait_drained([service])
    assert noticed(service), "the freeze went unnoticed"
    rig.stop(service)
    rig.verify()


def test_redis_killed_and_restarted_from_its_aof(make_rig: RigFactory, events: list[bytes]) -> None:
    rig = make_rig(redis_args=["--appendonly", "yes", "--appendfsync", "always"])
    feeder = rig.feed.send_over(keyed(events), seconds=20)
    service = rig.service().start()
    rig.wait_consuming(service, at_least=len(events) // 4)
    rig.redis.stop(signal.SIGKILL)
    wait_until(
        lambda: noticed(service),
        "the service to notice Redis is gone",
        alive=[service],
    )
    rig.redis.start()
    feeder.finish()
    rig.finish(service)


def test_redis_out_of_memory_pauses_the_service_until_it_has_room(
    make_rig: RigFactory, events: list[bytes]
) -> None:
    rig = make_rig(redis_args=["--maxmemory-policy", "noeviction"])
    feeder = rig.feed.send_over(keyed(events), seconds=20)
    service = rig.service().start()
    rig.wait_consuming(service, at_least=len(events) // 4)
    client = rig.client()
    # Below what Redis already uses: every write is refused with OOM from now on.
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", used // 2)
    try:
        before = service.metric("segstream_retries_total") or 0
        wait_until(
            lambda: (service.metric("segstream_retries_total") or 0) >= before + 10,
            "the service to retry its refused writes",
            alive=[service],
        )
    finally:
        client.config_set("maxmemory", 0)
    feeder.finish()
    rig.finish(service)


def lost_at_least(proxy: RedisProxy, count: int) -> bool:
    return proxy.lost >= count


def test_redis_replies_lost_after_the_command_applied(
    make_rig: RigFactory, events: list[bytes]
) -> None:
    rig = make_rig(proxy=True)
    proxy = rig.proxy
    assert proxy is not None
    feeder = rig.feed.send_over(keyed(events), seconds=20)
    service = rig.service().start()
    for lost in range(1, 4):
        consumed = service.metric("segstream_events_consumed_total") or 0
        rig.wait_consuming(service, at_least=consumed + 100)
        proxy.lose_replies(1)
        wait_until(partial(lost_at_least, proxy, lost), f"reply {lost} lost", alive=[service])
    feeder.finish()
    rig.wait_drained([service])
    print(rig.describe([service]))  # what the service made of it, for the report
    rig.stop(service)
    rig.verify()


def test_redis_answering_2_s_late(make_rig: RigFactory, events: list[bytes]) -> None:
    rig = make_rig(proxy=True)
    assert rig.proxy is not None
    feeder = rig.feed.send_over(keyed(events), seconds=20)
    service = rig.service().start()
    rig.wait_consuming(service, at_least=len(events) // 4)
    rig.proxy.delay_s = 2.0
    try:
        consumed = service.metric("segstream_events_consumed_total") or 0
        rig.wait_consuming(service, at_least=consumed + 200, timeout_s=90)
    finally:
        rig.proxy.delay_s = 0.0
    feeder.finish()
    rig.wait_drained([service])
    print(rig.describe([service]))  # what the service made of it, for the report
    rig.stop(service)
    rig.verify()
