"""`GET /v1/users/...` over real HTTP on a free port: the routes, ids, errors, and (with a real
Redis) the service's own lookup answering what the client reads."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import quote

import orjson
import pytest
import redis
from pydantic import SecretStr

from features.events import Event
from features.privacy import Pseudonymizer
from features.store import FeatureStore
from stream.client import SegmentClient
from stream.errors import ConfigError
from stream.ops.health import Health, serve
from stream.ops.read_api import MAX_BATCH, RulesLookup
from stream.service.wiring import feature_store, layout_of, read_api
from stream.settings import ApiSettings, PrivacySettings, Settings, load_settings
from stream.tools.local_servers import free_port
from tests.http_tools import get

T0 = 1_767_225_600_000
KEY = "pseudonymisation-key-for-tests"
Lookup = Callable[[Sequence[str]], Mapping[str, dict[str, Any] | None]]


def served(lookups: Lookup | tuple[Lookup, RulesLookup] | None) -> Iterator[int]:
    """A server with the read API's lookups: one for users, or the service's pair."""
    users, rules = lookups if isinstance(lookups, tuple) else (lookups, None)
    number = free_port()
    server = serve(Health(stall_s=60.0, users=users, rules=rules), number, "127.0.0.1")
    assert server is not None
    yield number
    server.shutdown()
    server.server_close()


class Recorded:
    """A lookup that knows one user and records what it was asked (the HTTP layer is under
    test here, not the lookup)."""

    def __init__(self) -> None:
        self.asked: list[list[str]] = []

    def __call__(self, users: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        self.asked.append(list(users))
        return {u: {"user_id": u, "segment": None} if u != "nobody" else None for u in users}


@pytest.fixture
def recorded() -> Recorded:
    return Recorded()


@pytest.fixture
def port(recorded: Recorded) -> Iterator[int]:
    yield from served(recorded)


@pytest.mark.unit
def test_ids_are_percent_decoded_so_any_id_can_be_asked(port: int, recorded: Recorded) -> None:
    odd = "a/b c?d%e&f=é+"
    status, body = get(port, "/v1/users/" + quote(odd, safe=""))
    assert status == 200
    assert orjson.loads(body) == {"user_id": odd, "segment": None}
    assert get(port, "/v1/users/u%2B1")[0] == 200
    assert recorded.asked == [[odd], ["u+1"]]


@pytest.mark.unit
def test_an_unknown_user_is_404_and_bad_ids_are_400_without_a_lookup(
    port: int, recorded: Recorded
) -> None:
    assert get(port, "/v1/users/nobody") == (404, b'{"error":"unknown user"}')
    recorded.asked.clear()
    assert get(port, "/v1/users/") == (400, b'{"error":"empty user id"}')
    status, body = get(port, "/v1/users/" + "x" * 257)
    assert (status, orjson.loads(body)) == (400, {"error": "user id longer than 256 characters"})
    assert get(port, "/v1/users/" + "x" * 256)[0] == 200
    assert get(port, "/v1/users/%ff%fe")[0] == 400  # not UTF-8
    assert get(port, "/v1/users")[0] == 400
    assert get(port, "/v1/users?id=")[0] == 400
    ids = "&".join(f"id=u{i}" for i in range(MAX_BATCH + 1))
    assert get(port, f"/v1/users?{ids}")[0] == 400
    assert get(port, "/v1/nothing/here") == (
        404,
        b'{"error":"not found: try /v1/users/{id}, /v1/users?id=... or /v1/rules/{item}"}',
    )
    assert recorded.asked == [["x" * 256]]


@pytest.mark.unit
def test_a_batch_answers_every_id_asked(port: int, recorded: Recorded) -> None:
    status, body = get(port, "/v1/users?id=a&id=nobody&id=b%2Fc")
    assert status == 200
    assert orjson.loads(body) == {
        "users": {
            "a": {"user_id": "a", "segment": None},
            "nobody": None,
            "b/c": {"user_id": "b/c", "segment": None},
        }
    }
    assert recorded.asked == [["a", "nobody", "b/c"]]


@pytest.mark.unit
def test_the_v1_tree_is_absent_without_a_lookup_and_the_probes_stay() -> None:
    for port in served(None):
        for path in ("/v1/users/alice", "/v1/users?id=alice", "/v1/"):
            status, body = get(port, path)
            assert status == 404 and b"not found: try /metrics" in body
        assert get(port, "/healthz")[0] == 200


@pytest.mark.unit
def test_a_redis_that_does_not_answer_is_503(settings_no_servers: Settings) -> None:
    dead = settings_no_servers.model_copy(
        update={
            "redis": settings_no_servers.redis.model_copy(
                update={"url": f"redis://127.0.0.1:{free_port()}/0"}
            ),
            "api": ApiSettings(enabled=True),
        }
    )
    for port in served(read_api(dead)):
        assert get(port, "/v1/users/alice") == (503, b'{"error":"unavailable"}')
        assert get(port, "/v1/users?id=alice")[0] == 503
        assert get(port, "/v1/users/")[0] == 400  # refused before Redis is asked
        assert get(port, "/v1/rules/p1")[0] == 503
        assert get(port, "/v1/rules?top=0")[0] == 400  # refused before Redis is asked


@pytest.mark.unit
def test_the_lookup_is_off_unless_the_setting_is_on(settings_no_servers: Settings) -> None:
    assert read_api(settings_no_servers) is None


@pytest.fixture
def settings_no_servers(clean_env: pytest.MonkeyPatch) -> Settings:
    return load_settings({"key_prefix": "t-no-servers"})


# -- the service's lookup against a real Redis -----------------------------------------------


def view(n: int, user: str, kind: str = "view", **fields: Any) -> Event:
    ts = T0 + n * 60_000
    return Event(event_id=f"e{n}", user_id=user, type=kind, ts=ts, ts_ms=ts, **fields)


@pytest.fixture
def api_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"api": ApiSettings(enabled=True)})


def stored(settings: Settings, events: list[Event]) -> FeatureStore:
    """Users as the service stores them under these settings, with its layout record."""
    store = feature_store(settings)
    store.publish_layout(layout_of(settings))
    store.apply(events, [0] * len(events), range(len(events)))
    return store


@pytest.mark.integration
def test_the_services_lookup_answers_what_the_client_reads(api_settings: Settings) -> None:
    events = [view(1, "alice"), view(2, "alice", "purchase", price=9.5), view(3, "bob")]
    store = stored(api_settings, events)
    store.forget("bob")
    client = SegmentClient(api_settings.redis.url, api_settings.key_prefix)
    alice = client.user("alice")
    assert alice is not None
    for port in served(read_api(api_settings)):
        status, body = get(port, "/v1/users/alice")
        assert status == 200
        assert orjson.loads(body) == alice.to_dict()
        assert orjson.loads(body)["features"]["spend_total"] == 9.5
        assert get(port, "/v1/users/bob") == (404, b'{"error":"unknown user"}')  # erased
        assert get(port, "/v1/users/zed") == (404, b'{"error":"unknown user"}')
        status, body = get(port, "/v1/users?id=alice&id=zed")
        assert orjson.loads(body) == {"users": {"alice": alice.to_dict(), "zed": None}}


@pytest.mark.integration
def test_with_pseudonymisation_the_url_and_the_answer_carry_the_raw_id(
    api_settings: Settings,
) -> None:
    private = api_settings.model_copy(
        update={"privacy": PrivacySettings(pseudonymize_key=SecretStr(KEY))}
    )
    raw = "alice@example.com"
    stored(private, [view(1, Pseudonymizer(KEY.encode())(raw), "purchase", price=3.0)])
    assert not redis.Redis.from_url(private.redis.url).keys(f"*{raw}*")
    for port in served(read_api(private)):
        status, body = get(port, "/v1/users/" + quote(raw, safe=""))
        assert status == 200
        answer = orjson.loads(body)
        assert (answer["user_id"], answer["features"]["spend_total"]) == (raw, 3.0)


@pytest.mark.unit
def test_the_setting_is_off_by_default_and_read_from_the_environment(
    clean_env: pytest.MonkeyPatch,
) -> None:
    assert load_settings().api.enabled is False
    clean_env.setenv("SEGSTREAM_API__ENABLED", "true")
    assert load_settings().api.enabled is True
    clean_env.setenv("SEGSTREAM_API__ENABLED", "maybe")
    with pytest.raises(ConfigError, match=r"SEGSTREAM_API__ENABLED \(api\.enabled\)"):
        load_settings()
