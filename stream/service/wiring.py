"""Everything the service is built of, from settings: the Redis client, the feature store, the
pseudonymizer, health with its Redis ping and the read API's lookup, the layout record, and the
batch step itself (`build_handler`)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Final

import redis

from features import resp
from features.errors import StoreUnavailableError
from features.layout import Layout
from features.privacy import Pseudonymizer
from features.store import FeatureStore
from segments import policy
from segments.engine import Engine
from segments.fingerprint import fingerprint
from segments.model import Model
from stream.client import SegmentClient
from stream.errors import ConfigError, TransientError
from stream.ops.health import Health
from stream.ops.read_api import RulesLookup, UserLookup
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

# A read API request waits at most this long for Redis before it answers 503.
API_TIMEOUT_S: Final = 1.0
# While Redis does not answer at start, the layout record is tried again this often.
LAYOUT_RETRY_S: Final = 5.0


def redis_client(settings: Settings) -> resp.Client:
    redis_settings = settings.redis
    return resp.connect(
        redis_settings.url,
        cluster=redis_settings.cluster,
        timeout_s=redis_settings.socket_timeout_s,
    )


def feature_store(settings: Settings, client: resp.Client | None = None) -> FeatureStore:
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
    """The service's health from its settings, with a Redis PING of its own, and the read
    API's lookup when `SEGSTREAM_API__ENABLED` is on (served on the metrics port)."""
    metrics_settings = settings.metrics
    if settings.api.enabled and not metrics_settings.port:
        logger.warning("SEGSTREAM_API__ENABLED is on but SEGSTREAM_METRICS__PORT is 0: not served")
    users, rules = read_api(settings) or (None, None)
    return Health(
        metrics_settings.stall_s,
        redis_pinger(settings),
        kafka_silence_s=metrics_settings.kafka_silence_s,
        users=users,
        rules=rules,
    )


def read_api(settings: Settings) -> tuple[UserLookup, RulesLookup] | None:
    """The read API's lookups (`/v1/users/...`: `SegmentClient` views as JSON-ready dicts;
    `/v1/rules/...`: the cross-sell rules), on a Redis connection pool of their own; None when
    the API is off."""
    if not settings.api.enabled:
        return None
    client = SegmentClient(
        settings.redis.url,
        settings.key_prefix,
        pseudonymize_key=settings.privacy.key(),
        timeout_s=API_TIMEOUT_S,
        cluster=settings.redis.cluster,
    )

    def lookup(users: Sequence[str]) -> dict[str, dict[str, Any] | None]:
        found = client.users(users)
        return {user: None if view is None else view.to_dict() for user, view in found.items()}

    return lookup, client.rules


def layout_of(settings: Settings) -> Layout:
    """The layout record of the service's state under these settings (`features.layout`)."""
    return Layout.of(
        settings.features.rules(),
        settings.key_prefix,
        pseudonymised=settings.privacy.key() is not None,
        segment_fields=policy.Record.__struct_fields__,
    )


def publish_layout(store: FeatureStore, layout: Layout, retry_s: float = LAYOUT_RETRY_S) -> None:
    """Write the layout record readers compute features with. While Redis does not answer, a
    daemon thread tries again every `retry_s`, so readers find it once Redis is back."""
    if _write_layout(store, layout, retry_s):
        return

    def retry() -> None:
        while not _write_layout(store, layout, 0.0):
            time.sleep(retry_s)

    threading.Thread(target=retry, name="layout", daemon=True).start()


def _write_layout(store: FeatureStore, layout: Layout, retry_s: float) -> bool:
    """Write the record; warn when the one it replaces says other windows (existing state was
    folded with other settings). False when Redis did not answer (warned if `retry_s`)."""
    try:
        before = store.publish_layout(layout)
    except StoreUnavailableError as exc:
        if retry_s:
            logger.warning("layout record not written yet, tried again every %gs: %s", retry_s, exc)
        return False
    if before is not None and (differences := layout.differences(before)):
        logger.warning(
            "the stored layout record differs from this instance's settings: %s. Users stored"
            " before were folded with those settings: their windowed features read wrong until"
            " the settings are restored or the state rebuilt (segstream recover --from-earliest)",
            "; ".join(differences),
        )
    return True


def redis_pinger(settings: Settings, timeout_s: float = 1.0) -> Callable[[], bool]:
    """A PING on a connection of its own, so a probe never waits behind the loop's calls (on
    a Redis Cluster, of every primary)."""
    client = resp.connect(settings.redis.url, cluster=settings.redis.cluster, timeout_s=timeout_s)

    def ping() -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    return ping


def build_handler(settings: Settings, client: resp.Client | None = None) -> SegmentHandler:
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
    store = feature_store(settings, client)
    publish_layout(store, layout_of(settings))
    census = Census(client, settings.key_prefix)
    census.start()
    return SegmentHandler(
        store,
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
