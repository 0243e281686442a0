"""The feature store, the population tallies and the read client on a 3-primary Redis Cluster."""

from __future__ import annotations

import pytest
from redis.cluster import RedisCluster

from features import keys, tallies
from features.events import Event
from features.layout import Layout
from features.reference import Arrival, Reference
from features.store import Around, FeatureStore
from stream.client import SegmentClient

pytestmark = pytest.mark.integration

T0 = 1_767_225_600_000
USERS = 500
PRIMARIES = 3


def view(i: int, user: int) -> Event:
    ts = T0 + i * 1000
    return Event(event_id=f"e{i}", user_id=f"u{user}", type="view", ts=ts, ts_ms=ts)


def counted(store: FeatureStore, events: list[Event], first: int) -> None:
    """Apply one batch with a tally moving in every user's write (`user` counted once)."""
    partitions = [int(e.user_id[1:]) % 3 for e in events]
    with store.batch(events, partitions, range(first, first + len(events))) as batch:
        for _ in range(3):
            slices = store.fold(batch)
            store.write(batch, (store.pack(part, moves(part.states)) for part in slices))
            if not batch.pending:
                return
    pytest.fail("writes kept being refused")


def moves(states: dict[str, object]) -> Around:
    return Around([], [], {user: [("user", 1)] for user in states})


def test_a_batch_is_one_round_trip_per_node_and_counts_every_event_once(
    cluster_url: str, names: str
) -> None:
    client = RedisCluster.from_url(cluster_url)
    store = FeatureStore(client, names, cache_users=0)  # every batch reads every user
    events = [view(i, i % USERS) for i in range(3 * USERS)]
    for start in range(0, len(events), USERS):
        before = store.node_round_trips
        counted(store, events[start : start + USERS], start)
        # One read and one write round trip to each primary.
        assert store.node_round_trips - before == 2 * PRIMARIES
    assert store.redirects == 0

    reference = Reference(lateness_ms=store.rules.lateness_ms)
    reference.fold(Arrival(e, int(e.user_id[1:]) % 3, i) for i, e in enumerate(events))
    profiles = {p["user_id"]: p["features"] for p in store.profiles()}
    assert profiles == {f"u{u}": reference.profile(f"u{u}") for u in range(USERS)}
    # Each write moved the tally of its user's slot; summed, each user counts once per batch.
    assert tallies.read(client, names) == {"user": 3 * USERS}
    # ... kept in one hash per slot that has users: far more than one.
    slots = {client.keyslot(keys.state(names, f"u{u}")) for u in range(USERS)}
    assert client.exists(*tallies.all_keys(client, names)) == len(slots) > PRIMARIES


def test_the_read_client_reads_users_across_nodes(cluster_url: str, names: str) -> None:
    client = RedisCluster.from_url(cluster_url)
    store = FeatureStore(client, names)
    events = [view(i, i % 50) for i in range(200)]
    store.apply(events, [0] * len(events), range(len(events)))
    store.publish_layout(Layout.of(store.rules, names, pseudonymised=False))
    store.forget("u7")
    with SegmentClient(cluster_url, names, cluster=True) as reader:
        found = reader.users([f"u{u}" for u in range(60)])
    unknown = [u for u, seen in found.items() if seen is None]
    assert unknown == ["u7", *(f"u{u}" for u in range(50, 60))]
    seen, stored = found["u3"], store.profile("u3")
    assert seen is not None and stored is not None
    assert seen.features == stored["features"]
