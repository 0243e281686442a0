"""Building blocks of the feature stage: the Redis client and feature store from settings,
pseudonymous ids, and the dead letter of a late event."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import msgspec
import redis

from features.definitions import Rules
from features.events import Event, InvalidEvent
from features.privacy import Pseudonymizer
from features.store import FeatureStore
from stream.kafka.handler import Rejection
from stream.ops.health import Health
from stream.settings import Settings


def redis_client(settings: Settings) -> redis.Redis:
    timeout = settings.redis.socket_timeout_s
    return redis.Redis.from_url(
        settings.redis.url, socket_timeout=timeout, socket_connect_timeout=timeout
    )


def feature_store(settings: Settings, client: redis.Redis | None = None) -> FeatureStore:
    features = settings.features
    return FeatureStore(
        client or redis_client(settings),
        settings.key_prefix,
        features.rules(),
        ttl_s=int(features.ttl_days * 86_400),
        cache_users=features.cache_users,
    )


def pseudonymizer(settings: Settings) -> Callable[[str], str] | None:
    key = settings.privacy.key()
    return None if key is None else Pseudonymizer(key)


def private(events: Sequence[Event], pseudonymize: Callable[[str], str] | None) -> Sequence[Event]:
    """The events with pseudonymous user ids, when a key is configured."""
    if pseudonymize is None:
        return events
    replace = msgspec.structs.replace
    return [replace(e, user_id=pseudonymize(e.user_id)) for e in events]


def late_rejection(index: int, event: Event, rules: Rules) -> Rejection:
    lateness_s = rules.lateness_ms / 1000
    message = f"ts={event.ts_ms} is more than {lateness_s:g}s behind its partition's watermark"
    return Rejection(index, "late", InvalidEvent("late", "LateEvent", message))


def health_for(settings: Settings) -> Health:
    """The service's health from its settings, with a Redis PING of its own."""
    metrics_settings = settings.metrics
    return Health(
        metrics_settings.stall_s,
        redis_pinger(settings.redis.url),
        kafka_silence_s=metrics_settings.kafka_silence_s,
    )


def redis_pinger(url: str, timeout_s: float = 1.0) -> Callable[[], bool]:
    """A PING on a connection of its own, so a probe never waits behind the loop's calls."""
    client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)

    def ping() -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    return ping
