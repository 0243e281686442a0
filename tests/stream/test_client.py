"""The read client: views shaped from stored records, and reads against a real Redis with
states written by the real feature store (the batch steps `apply` runs, with a segment record
put into the state as the service's handler does)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import orjson
import pytest
import redis

from features import keys
from features.definitions import Rules, parse_windows
from features.events import Event
from features.layout import Layout
from features.privacy import Pseudonymizer
from features.store import NOTHING_AROUND, FeatureStore
from segments import policy
from segments.policy import Record
from stream.client import (
    LayoutError,
    LayoutMissingError,
    SegmentClient,
    UnavailableError,
    UserView,
    view_of,
)
from stream.errors import TransientError
from stream.tools.local_servers import free_port
from tests.conftest import Servers

T0 = 1_767_225_600_000
HOUR = 3_600_000
# Not the default windows: the client must take them from the layout record.
RULES = Rules(windows=parse_windows(["2h", "3d"], 12))
KEY = b"pseudonymisation-key-for-tests"
SCORED = Record(
    seq=4,
    segment="vip",
    cluster=2,
    rfm="Champions",
    band="high",
    propensity=0.712345,
    rules=["vip"],
    version=7,
    since=T0 + HOUR,
    scored=T0 + 2 * HOUR,
    audiences=["big_spenders", "weekend"],
    parent=1,
    outlier=True,
    spend=123.45,
    recommendations=["p000005", "category:pets"],
)


# -- shaping (no servers) ----------------------------------------------------------------------


@pytest.mark.unit
def test_a_scored_users_view_carries_their_record_as_change_events_show_it() -> None:
    view = view_of("alice", T0, {"orders_total": 2}, policy.dump(SCORED))
    assert view == UserView(
        user_id="alice",
        as_of=T0,
        segment="vip",
        cluster=2,
        rfm="Champions",
        propensity=0.7123,
        propensity_band="high",
        rules=["vip"],
        audiences=["big_spenders", "weekend"],
        parent=1,
        outlier=True,
        predicted_spend=123.45,
        recommendations=["p000005", "category:pets"],
        model_version=7,
        since_event_time=T0 + HOUR,
        scored_event_time=T0 + 2 * HOUR,
        changes=4,
        features={"orders_total": 2},
    )
    shown = view.to_dict()
    assert shown == {
        "user_id": "alice",
        "as_of": T0,
        "features": {"orders_total": 2},
        "segment": {
            "segment": "vip",
            "cluster": 2,
            "rfm": "Champions",
            "propensity": 0.7123,
            "propensity_band": "high",
            "rules": ["vip"],
            "audiences": ["big_spenders", "weekend"],
            "parent": 1,
            "outlier": True,
            "predicted_spend": 123.45,
            "recommendations": ["p000005", "category:pets"],
            "since_event_time": T0 + HOUR,
            "scored_event_time": T0 + 2 * HOUR,
        },
        "model_version": 7,
        "changes": 4,
    }
    assert orjson.loads(orjson.dumps(shown)) == shown


@pytest.mark.unit
def test_no_cluster_no_propensity_and_no_change_yet_read_as_none() -> None:
    record = Record(seq=0, segment="New", cluster=-1, rfm="New", band="unknown", version=1)
    view = view_of("bob", T0, {}, policy.dump(record))
    assert (view.cluster, view.propensity, view.propensity_band) == (None, None, "unknown")
    assert (view.since_event_time, view.scored_event_time, view.audiences) == (None, None, [])


@pytest.mark.unit
def test_a_user_never_scored_has_features_and_no_segment() -> None:
    view = view_of("carol", T0, {"events_total": 1}, b"")
    assert (view.segment, view.model_version, view.changes, view.rules) == (None, None, 0, [])
    assert view.to_dict() == {
        "user_id": "carol",
        "as_of": T0,
        "features": {"events_total": 1},
        "segment": None,
        "model_version": None,
        "changes": 0,
    }


@pytest.mark.unit
def test_a_client_whose_redis_does_not_answer_raises_a_transient_error() -> None:
    client = SegmentClient(f"redis://127.0.0.1:{free_port()}/0", "p", timeout_s=0.5)
    with pytest.raises(
        UnavailableError, match=r"no answer from Redis at redis://127\.0\.0\.1"
    ) as err:
        client.user("alice")
    assert isinstance(err.value, TransientError)


@pytest.mark.unit
def test_the_repr_shows_no_password() -> None:
    client = SegmentClient("redis://:hunter2-secret@127.0.0.1:6390/2", "p")
    assert "hunter2" not in repr(client)
    assert repr(client) == "SegmentClient('redis://127.0.0.1:6390/2', prefix='p')"


# -- against a real Redis ----------------------------------------------------------------------


def event(n: int, user: str, kind: str = "view", hours: float = 0, **fields: Any) -> Event:
    ts = T0 + int(hours * HOUR)
    return Event(event_id=f"e{n}", user_id=user, type=kind, ts=ts, ts_ms=ts, **fields)


def store_users(
    store: FeatureStore,
    events: Sequence[Event],
    partitions: Sequence[int],
    records: Mapping[str, Record],
) -> None:
    """Fold `events` as `FeatureStore.apply` does, with each user's segment record put into
    the state before the compare-and-set, as the service's handler does."""
    with store.batch(events, partitions, range(len(events))) as batch:
        packed = []
        for part in store.fold(batch):
            for user, cached in part.entries.items():
                if user in records:
                    cached.state.segment = policy.dump(records[user])
            packed.append(store.pack(part, NOTHING_AROUND))
        store.write(batch, iter(packed))
        assert not batch.pending


def shop_events() -> list[Event]:
    """alice, bob and carol on partition 0, up to 5 h; dave on partition 1, up to 30 h."""
    return [
        event(1, "alice", "view", 0, session_id="s1", price=20.0, category="shoes"),
        event(2, "alice", "add_to_cart", 0.5, session_id="s1", price=20.0),
        event(3, "alice", "purchase", 1, session_id="s1", price=20.0, quantity=2, order_id="o1"),
        event(4, "bob", "view", 2, session_id="s2"),
        event(5, "carol", "view", 3),
        event(6, "alice", "view", 5, session_id="s3"),
        event(7, "dave", "view", 30),
    ]


@pytest.fixture
def shop(servers: Servers, names: str) -> Iterator[tuple[FeatureStore, str]]:
    """alice (scored), bob (features only), carol (erased) and dave (another partition, later
    event time) stored under a prefix of their own, with the layout record written."""
    client = redis.Redis.from_url(servers.redis_url)
    store = FeatureStore(client, names, RULES)
    store.publish_layout(Layout.of(RULES, names, segment_fields=Record.__struct_fields__))
    events = shop_events()
    store_users(store, events, [1 if e.user_id == "dave" else 0 for e in events], {"alice": SCORED})
    store.forget("carol")
    yield store, names
    client.close()


@pytest.mark.integration
def test_a_users_view_has_their_record_and_the_features_the_store_computes(
    servers: Servers, shop: tuple[FeatureStore, str]
) -> None:
    store, prefix = shop
    with SegmentClient(servers.redis_url, prefix) as client:
        alice = client.user("alice")
    expected = store.profile("alice")
    assert alice is not None and expected is not None
    # As of partition 0's watermark (alice's last event, 5 h), not partition 1's (30 h).
    assert alice.as_of == expected["as_of"] == T0 + 5 * HOUR
    assert alice.features == expected["features"]
    assert (alice.features["orders_2h"], alice.features["orders_3d"]) == (0, 1)
    assert alice.features["spend_3d"] == 40.0
    assert "orders_24h" not in alice.features  # windows from the layout, not the defaults
    assert (alice.segment, alice.rules, alice.audiences) == ("vip", ["vip"], SCORED.audiences)
    assert (alice.model_version, alice.changes, alice.propensity) == (7, 4, 0.7123)


@pytest.mark.integration
def test_unknown_and_erased_users_are_none_and_unscored_ones_have_no_segment(
    servers: Servers, shop: tuple[FeatureStore, str]
) -> None:
    _, prefix = shop
    client = SegmentClient(servers.redis_url, prefix)
    assert client.user("zed") is None
    assert client.user("carol") is None  # erased
    bob = client.user("bob")
    assert bob is not None
    assert (bob.segment, bob.features["views_total"], bob.as_of) == (None, 1, T0 + 5 * HOUR)
    dave = client.user("dave")
    assert dave is not None and dave.as_of == T0 + 30 * HOUR


@pytest.mark.integration
def test_a_batch_read_gives_what_single_reads_give_keyed_as_asked(
    servers: Servers, shop: tuple[FeatureStore, str]
) -> None:
    _, prefix = shop
    client = SegmentClient(servers.redis_url, prefix)
    asked = ["dave", "zed", "alice", "carol", "bob", "alice"]
    found = client.users(asked)
    assert list(found) == ["dave", "zed", "alice", "carol", "bob"]
    assert found == {user: client.user(user) for user in asked}
    assert [user for user, view in found.items() if view is None] == ["zed", "carol"]
    assert client.users([]) == {}


@pytest.mark.integration
def test_a_read_is_one_round_trip_for_one_user_or_a_hundred(
    servers: Servers, shop: tuple[FeatureStore, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, prefix = shop
    sends: list[int] = []
    original = redis.connection.AbstractConnection.send_packed_command

    def counted(self: Any, command: Any, check_health: bool = True) -> None:
        sends.append(1)
        original(self, command, check_health)

    monkeypatch.setattr(redis.connection.AbstractConnection, "send_packed_command", counted)
    client = SegmentClient(servers.redis_url, prefix)
    client.user("alice")  # connects (its handshake is sent too)

    # The counter sees round trips: two plain calls are two.
    other = redis.Redis.from_url(servers.redis_url)
    other.ping()
    sends.clear()
    other.ping()
    other.get("x")
    assert len(sends) == 2

    sends.clear()
    assert client.user("alice") is not None
    assert len(sends) == 1
    sends.clear()
    found = client.users([f"u{i}" for i in range(98)] + ["alice", "bob"])
    assert len(sends) == 1
    assert sum(view is not None for view in found.values()) == 2


@pytest.mark.integration
def test_pseudonymised_ids_are_asked_and_answered_raw(servers: Servers, names: str) -> None:
    client = redis.Redis.from_url(servers.redis_url)
    store = FeatureStore(client, names, RULES)
    pseudonym = Pseudonymizer(KEY)
    store.publish_layout(Layout.of(RULES, names, pseudonymised=True))
    raw = "alice@example.com"
    events = [event(1, pseudonym(raw), "purchase", 0, price=5.0, order_id="o1")]
    store_users(store, events, [0], {pseudonym(raw): SCORED})
    assert client.exists(keys.state(names, pseudonym(raw)))
    assert not client.exists(keys.state(names, raw))

    reader = SegmentClient(servers.redis_url, names, pseudonymize_key=KEY.decode())
    view = reader.user(raw)
    assert view is not None
    assert (view.user_id, view.segment, view.features["spend_total"]) == (raw, "vip", 5.0)
    assert reader.users([raw, "nobody"]) == {raw: view, "nobody": None}
    assert reader.user(pseudonym(raw)) is None  # a pseudonym is not an id

    with pytest.raises(LayoutError, match="pass its key as pseudonymize_key"):
        SegmentClient(servers.redis_url, names).user(raw)


@pytest.mark.integration
def test_a_key_given_for_a_store_of_raw_ids_is_refused(
    servers: Servers, shop: tuple[FeatureStore, str]
) -> None:
    _, prefix = shop
    with pytest.raises(LayoutError, match="stores raw user ids: pass no pseudonymize_key"):
        SegmentClient(servers.redis_url, prefix, pseudonymize_key=KEY).user("alice")


@pytest.mark.integration
def test_without_a_layout_record_the_error_says_to_check_url_and_prefix(
    servers: Servers, names: str
) -> None:
    client = SegmentClient(servers.redis_url, f"{names}-never-ran")
    with pytest.raises(LayoutMissingError) as err:
        client.user("alice")
    message = str(err.value)
    assert f"'{names}-never-ran:layout'" in message
    assert "the service has not run against this Redis and key prefix" in message
    assert "check the URL and the prefix" in message


@pytest.mark.integration
def test_a_layout_that_does_not_fit_the_states_or_the_client_is_an_error(
    servers: Servers, shop: tuple[FeatureStore, str]
) -> None:
    store, prefix = shop
    client = SegmentClient(servers.redis_url, prefix)
    assert client.user("alice") is not None
    # The service restarted with three windows over states folded with two.
    store.publish_layout(Layout.of(Rules(windows=parse_windows(["1h", "2h", "3d"], 12)), prefix))
    with pytest.raises(LayoutError, match="has 2 windows where the layout record has 3"):
        client.user("alice")
    assert client.user("zed") is None  # no state, nothing to mismatch
    record = orjson.loads(Layout.of(RULES, prefix).encode())
    redis.Redis.from_url(servers.redis_url).set(
        keys.layout(prefix), orjson.dumps({**record, "format": 2})
    )
    with pytest.raises(LayoutError, match="layout format 2, this code reads format 1"):
        client.user("alice")
