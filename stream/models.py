"""One model for every instance of a group: versioned, signed snapshots in Redis.

One instance at a time holds the trainer lease (a Redis key with a TTL that its holder
renews). The holder learns from a sample of its own partitions' users (ids are hash-partitioned,
so that is a uniform sample) and publishes a snapshot now and then; publishing is a Lua call
that checks the lease, so a holder that lost it cannot publish. Every instance, the holder
included, scores with the latest published version, so the same features get the same
segment everywhere. A new holder resumes from the latest snapshot, and so does a restart.
"""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import redis

from features import keys
from segments.config import SegmentConfig
from segments.engine import Scored
from segments.errors import SnapshotError
from segments.model import Model
from segments.scoring import Params, cold_params
from segments.snapshots import seal, unseal
from stream import metrics
from stream.redis_calls import redis_call

logger = logging.getLogger(__name__)

# KEYS: lease. ARGV: owner, ttl ms. Renews the lease if held by owner, else takes it if free.
_LEASE = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
# KEYS: lease, current, snapshot key, snapshot key to drop. ARGV: owner, version, blob.
_PUBLISH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[2]) <= current then return -1 end
redis.call('SET', KEYS[3], ARGV[3])
redis.call('SET', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[4])
return 1
"""
KEEP_VERSIONS = 3


@dataclass(frozen=True)
class Snapshot:
    params: Params
    model: Model


class ModelStore:
    """The Redis side: lease, current version, signed snapshots."""

    def __init__(self, client: redis.Redis, prefix: str, signing_key: bytes) -> None:
        self._redis = client
        self._prefix = prefix
        self._key = signing_key
        self._lease = client.register_script(_LEASE)
        self._publish = client.register_script(_PUBLISH)

    def hold_lease(self, owner: str, ttl_ms: int) -> bool:
        return bool(
            self._call(self._lease, keys=[keys.model_lease(self._prefix)], args=[owner, ttl_ms])
        )

    def release(self, owner: str) -> None:
        if self._call(self._redis.get, keys.model_lease(self._prefix)) == owner.encode():
            self._call(self._redis.delete, keys.model_lease(self._prefix))

    def current(self) -> int:
        return int(self._call(self._redis.get, keys.model_current(self._prefix)) or 0)

    def load(self, version: int) -> Snapshot | None:
        blob = self._call(self._redis.get, keys.model_snapshot(self._prefix, version))
        if blob is None:
            return None
        payload = unseal(blob, self._key)
        if not isinstance(payload, Snapshot):
            msg = f"snapshot v{version} does not hold a model"
            raise SnapshotError(msg)
        return payload

    def publish(self, owner: str, snapshot: Snapshot) -> bool:
        version = snapshot.params.version
        stale = keys.model_snapshot(self._prefix, max(0, version - KEEP_VERSIONS))
        keys_ = [
            keys.model_lease(self._prefix),
            keys.model_current(self._prefix),
            keys.model_snapshot(self._prefix, version),
            stale,
        ]
        blob = seal(snapshot, self._key)
        return bool(self._call(self._publish, keys=keys_, args=[owner, version, blob]) == 1)

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        with redis_call("model"):
            return fn(*args, **kwargs)


class ModelSync:
    """What one instance does about the model each batch: follow the published version, and,
    while it holds the lease, learn and publish."""

    def __init__(
        self,
        store: ModelStore,
        config: SegmentConfig,
        *,
        snapshot_interval_s: float,
        refresh_interval_s: float,
        lease_ttl_s: float,
    ) -> None:
        self._store = store
        self._config = config
        self.owner = uuid.uuid4().hex
        self._snapshot_s = snapshot_interval_s
        self._refresh_s = refresh_interval_s
        self._lease_ms = int(lease_ttl_s * 1000)
        self.params = cold_params(config.features)
        self._model: Model | None = None  # only while holding the lease
        self._next_refresh = 0.0
        self._last_publish = 0.0
        self._learned_since = 0

    @property
    def trainer(self) -> bool:
        return self._model is not None

    def refresh(self) -> None:
        """Every `refresh_interval_s`: renew or take the lease, and load a newer version."""
        now = time.monotonic()
        if now < self._next_refresh:
            return
        self._next_refresh = now + self._refresh_s
        holds = self._store.hold_lease(self.owner, self._lease_ms)
        if holds and self._model is None:
            try:
                self._model = self._resume()
            except BaseException:
                self._store.release(self.owner)  # let another instance try at once
                raise
            logger.info("holding the trainer lease from model v%d", self._model.version)
        elif not holds and self._model is not None:
            logger.info("lost the trainer lease")
            self._model = None
        self._follow()

    def learn(self, scored: Scored) -> None:
        """Learn from the batch's samples (trainer only); publish when due."""
        model = self._model
        if model is None:
            return
        for inputs, frequency, monetary in scored.samples:
            model.learn(inputs, frequency, monetary)
        for inputs, bought, _ in scored.labels:
            model.learn_label(inputs, bought)
        self._learned_since += len(scored.samples) + len(scored.labels)
        metrics.SAMPLES_LEARNED.labels("segment").inc(len(scored.samples))
        metrics.SAMPLES_LEARNED.labels("propensity").inc(len(scored.labels))
        if self._publish_due(model):
            self._publish(model)

    def close(self) -> None:
        if self._model is not None:
            self._store.release(self.owner)
            self._model = None

    def _resume(self) -> Model:
        version = self._store.current()
        snapshot = self._store.load(version) if version else None
        return snapshot.model if snapshot is not None else Model(self._config)

    def _follow(self) -> None:
        version = self._store.current()
        if version <= self.params.version:
            return
        snapshot = self._store.load(version)
        if snapshot is not None:
            self.params = snapshot.params
            metrics.MODEL_VERSION.set(version)
            logger.info("scoring with model v%d", version)

    def _publish_due(self, model: Model) -> bool:
        if not self._learned_since:
            return False
        first = not self.params.clusters_ready
        if not first and time.monotonic() - self._last_publish < self._snapshot_s:
            return False
        # Last: some clusterers build their centres on a copy of themselves to show them.
        return bool(model.segmenter.centers())

    def _publish(self, model: Model) -> None:
        model.version = max(model.version, self._store.current())
        params = model.params()
        if self._store.publish(self.owner, Snapshot(params, model)):
            self.params = params
            metrics.MODEL_VERSION.set(params.version)
            logger.info("published model v%d (%d samples)", params.version, model.learned)
        self._last_publish = time.monotonic()
        self._learned_since = 0
