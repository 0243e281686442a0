"""The feature stage of the loop: every valid event updates its user's features in Redis."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import msgspec
import redis

from features.definitions import Rules
from features.errors import ConflictError, StoreUnavailableError
from features.events import Event, InvalidEvent
from features.privacy import Pseudonymizer
from features.store import Applied, FeatureStore
from stream import metrics
from stream.errors import TransientError
from stream.handler import Batch, Outcome, Rejection
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


class FeatureHandler:
    """Applies each batch to the feature store; late events come back as dead letters."""

    def __init__(self, store: FeatureStore, pseudonymize: Callable[[str], str] | None) -> None:
        self.store = store
        self._pseudonymize = pseudonymize
        self.last: Applied | None = None

    def handle(self, batch: Batch) -> Outcome:
        events = private(batch.events, self._pseudonymize)
        try:
            with metrics.REDIS_SECONDS.labels("apply").time():
                applied = self.store.apply(events, batch.partitions, batch.offsets)
        except (StoreUnavailableError, ConflictError) as exc:
            raise TransientError(str(exc)) from exc
        self.last = applied
        metrics.EVENTS_APPLIED.inc(applied.applied)
        metrics.EVENTS_SKIPPED.labels("duplicate").inc(applied.duplicates)
        metrics.EVENTS_SKIPPED.labels("erased").inc(applied.erased)
        rules = self.store.rules
        return Outcome(rejections=[late_rejection(i, events[i], rules) for i in applied.late])

    def partitions_assigned(self, partitions: Sequence[int]) -> None:
        self.store.partitions_assigned(partitions)

    def partitions_revoked(self, partitions: Sequence[int]) -> None:
        self.store.partitions_revoked(partitions)

    def committed(self, next_offsets: dict[int, int]) -> None:
        return None


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
