"""Everything the service is built of, from settings: the Redis client, the feature store, the
pseudonymizer, health with its Redis ping, and the batch step itself (`build_handler`)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import redis

from features.privacy import Pseudonymizer
from features.store import FeatureStore
from segments.engine import Engine
from segments.fingerprint import fingerprint
from segments.model import Model
from stream.errors import ConfigError, TransientError
from stream.ops.health import Health
from stream.service.audience_catalog import AudienceCatalog
from stream.service.census import Census
from stream.service.model_store import ModelStore
from stream.service.model_sync import ModelSync
from stream.service.origin_guard import OriginGuard, persistence_warning
from stream.service.outbox import Outbox
from stream.service.segment_handler import SegmentHandler
from stream.service.sweep import Sweep
from stream.service.timers import Timers
from stream.settings import Settings

logger = logging.getLogger(__name__)


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


def build_handler(settings: Settings, client: redis.Redis | None = None) -> SegmentHandler:
    """The service's handler from settings; fails naming the setting when one is missing."""
    key = settings.segments.signing()
    if key is None:
        msg = (
            "SEGSTREAM_SEGMENTS__SIGNING_KEY (or SEGSTREAM_SEGMENTS__SIGNING_KEY_FILE) is not set:"
            " model snapshots are signed with it and refused when the signature does not match;"
            " give every instance of the group the same secret of at least 16 bytes"
        )
        raise ConfigError(msg)
    client = client or redis_client(settings)
    rules = settings.features.rules()
    config = settings.segments.config(keep_days=settings.features.ttl_days)
    segments = settings.segments
    sync = ModelSync(
        ModelStore(client, settings.key_prefix, key),
        Model(config, fingerprint(config, rules.windows)),
        snapshot_interval_s=segments.snapshot_interval_s,
        refresh_interval_s=segments.refresh_interval_s,
        lease_ttl_s=segments.lease_ttl_s,
        learn_per_s=segments.learn_per_s,
        young_samples=segments.young_samples,
    )
    try:
        sync.check_settings()
    except TransientError as exc:
        logger.warning("model settings not checked yet (checked on the first batch): %s", exc)
    if warning := persistence_warning(client):
        logger.warning("%s", warning)
    census = Census(client, settings.key_prefix)
    census.start()
    return SegmentHandler(
        feature_store(settings, client),
        Engine(config, rules.windows),
        sync=sync,
        timers=Timers(client, settings.key_prefix),
        sweep=Sweep(client, settings.key_prefix),
        outbox=Outbox(client, settings.key_prefix),
        segments_topic=settings.topics.segments,
        census=census,
        pseudonymize=pseudonymizer(settings),
        guard=OriginGuard(client, settings.key_prefix),
        audiences=AudienceCatalog(client, settings.key_prefix, segments.refresh_interval_s),
    )
