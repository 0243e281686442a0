"""The feature store's in-memory cache never changes results, whatever its size."""

from __future__ import annotations

import pytest
import redis

from features.errors import ScriptsReloadedError
from features.events import Event
from features.reference import Arrival, Reference
from features.store import FeatureStore
from tests.conftest import Servers

pytestmark = pytest.mark.integration

T0 = 1_767_225_600_000


def view(i: int, user: int) -> Event:
    ts = T0 + i * 1000
    return Event(event_id=f"e{i}", user_id=f"u{user}", type="view", ts=ts, ts_ms=ts)


@pytest.mark.parametrize("cache_users", [0, 7, 100_000])
def test_a_cache_smaller_than_a_batch_still_counts_every_event_once(
    servers: Servers, names: str, cache_users: int
) -> None:
    client = redis.Redis.from_url(servers.redis_url)
    store = FeatureStore(client, f"{names}-{cache_users}", cache_users=cache_users)
    events = [view(i, i % 40) for i in range(400)]
    for start in range(0, 400, 100):
        batch = events[start : start + 100]
        applied = store.apply(batch, [0] * len(batch), range(start, start + 100))
        assert (applied.applied, applied.erased, applied.duplicates) == (100, 0, 0)

    reference = Reference(lateness_ms=store.rules.lateness_ms)
    reference.fold(Arrival(e, 0, offset) for offset, e in enumerate(events))
    for user in range(40):
        found = store.profile(f"u{user}")
        assert found is not None
        assert found["features"] == reference.profile(f"u{user}")


def test_a_write_under_a_stale_cache_is_refused_counted_and_redone(
    servers: Servers, names: str
) -> None:
    client = redis.Redis.from_url(servers.redis_url)
    owner = FeatureStore(client, f"{names}-stale")
    zombie = FeatureStore(client, f"{names}-stale")  # an old owner of the same partition
    first = [view(i, 1) for i in range(3)]
    assert owner.apply(first, [0] * 3, range(3)).refused == 0
    assert zombie.apply(first, [0] * 3, range(3)).duplicates == 3  # read, all fenced
    owner.apply([view(3, 1)], [0], [3])
    # The zombie's cache holds version 1 of u1; the owner wrote version 2.
    late = zombie.apply([view(4, 1)], [0], [4])
    assert (late.refused, late.applied) == (1, 1)
    found = owner.profile("u1")
    assert found is not None
    assert found["features"]["views_total"] == 5


def test_scripts_lost_by_a_redis_restart_are_loaded_and_the_batch_retried_at_once(
    servers: Servers, names: str
) -> None:
    client = redis.Redis.from_url(servers.redis_url)
    store = FeatureStore(client, f"{names}-noscript")
    store.apply([view(0, 1)], [0], [0])
    client.script_flush()  # what a restarted Redis holds: our data (AOF), none of our scripts

    with pytest.raises(ScriptsReloadedError):
        store.apply([view(1, 1)], [0], [1])
    applied = store.apply([view(1, 1)], [0], [1])  # the loop's retry, without a backoff

    assert (applied.applied, applied.duplicates) == (1, 0)
    found = store.profile("u1")
    assert found is not None
    assert found["features"]["views_total"] == 2


def test_peek_reads_what_is_stored_without_changing_it(servers: Servers, names: str) -> None:
    """A second store (another instance, nothing cached) sees each stored user as written;
    unknown and erased users are left out; the peeked state is the one a batch then folds."""
    client = redis.Redis.from_url(servers.redis_url)
    writer = FeatureStore(client, f"{names}-peek")
    writer.apply([view(i, i % 3) for i in range(9)], [0] * 9, range(9))
    writer.forget("u2")
    reader = FeatureStore(client, f"{names}-peek")
    found = reader.peek(["u0", "u1", "u2", "nobody"])
    assert sorted(found) == ["u0", "u1"]
    assert found["u0"] == writer.state("u0")
    assert reader.peek(["u0"])["u0"] is found["u0"]  # cached, as a batch would
    applied = reader.apply([view(9, 0)], [0], [9])
    assert (applied.applied, applied.refused) == (1, 0)
    assert found["u0"].counts == reader.state("u0").counts
