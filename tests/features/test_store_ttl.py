"""Idle users expire: a stored state's TTL counts from the user's last event in event time, so a
user re-scored without events of their own (a timer) is not kept for ever, and an active user
keeps the whole TTL."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import redis

from features import keys
from features import store as store_module
from features.events import Event
from features.store import FeatureStore
from tests.conftest import Servers

pytestmark = pytest.mark.integration

T0 = 1_767_225_600_000
HOUR = 3_600_000
TTL_S = 86_400  # a day of event time


@pytest.fixture
def client(servers: Servers) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(servers.redis_url)
    yield connection
    connection.close()


def view(event_id: str, user: str, ts: int) -> Event:
    return Event(event_id=event_id, user_id=user, type="view", ts=ts, ts_ms=ts)


def test_the_ttl_is_what_is_left_of_it_in_event_time(client: redis.Redis, names: str) -> None:
    store = FeatureStore(client, names, ttl_s=TTL_S)
    store.apply([view("a1", "early", T0), view("b1", "late", T0 + 4 * HOUR)], [0, 0], [0, 1])

    # The watermark is T0 + 4 h: "early" has 20 of its 24 hours left, "late" all 24.
    assert TTL_S - 4 * 3600 - 5 <= client.ttl(keys.state(names, "early")) <= TTL_S - 4 * 3600
    assert TTL_S - 5 <= client.ttl(keys.state(names, "late")) <= TTL_S


def test_a_state_written_past_its_ttl_lives_the_minimum(client: redis.Redis, names: str) -> None:
    store = FeatureStore(client, names, ttl_s=TTL_S)
    store.apply([view("a1", "idle", T0), view("b1", "active", T0)], [0, 0], [0, 1])

    # Two days later in event time, the idle user is re-scored by a timer, without an event.
    store.apply([view("b2", "active", T0 + 48 * HOUR)], [0], [2], extra_users=["idle"])

    assert 0 < client.ttl(keys.state(names, "idle")) <= store_module.MIN_TTL_S
    assert TTL_S - 5 <= client.ttl(keys.state(names, "active")) <= TTL_S


def test_an_idle_user_expires_while_an_active_user_keeps_theirs(
    client: redis.Redis, names: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The floor for a state whose TTL ran out in event time is an hour; a second here.
    monkeypatch.setattr(store_module, "MIN_TTL_S", 1)
    store = FeatureStore(client, names, ttl_s=TTL_S)
    store.apply([view("a1", "idle", T0), view("b1", "active", T0)], [0, 0], [0, 1])
    store.apply([view("b2", "active", T0 + 48 * HOUR)], [0], [2], extra_users=["idle"])

    deadline = time.monotonic() + 10
    while client.exists(keys.state(names, "idle")) and time.monotonic() < deadline:
        time.sleep(0.1)

    assert store.state("idle") is None
    assert store.profile("idle") is None
    active = store.profile("active")
    assert active is not None
    assert active["features"]["views_total"] == 2
    assert TTL_S - 5 <= client.ttl(keys.state(names, "active")) <= TTL_S

    # Back after expiring, the user starts afresh: the instance's cached state is refused by the
    # compare-and-set (the key is gone), read again, and folded from nothing.
    back = store.apply([view("a2", "idle", T0 + 49 * HOUR)], [0], [3])
    assert (back.applied, back.refused) == (1, 1)
    found = store.profile("idle")
    assert found is not None
    assert found["features"]["views_total"] == 1
    assert TTL_S - 5 <= client.ttl(keys.state(names, "idle")) <= TTL_S
