"""One model for every instance of a group: versioned, signed snapshots in Redis.

One instance at a time holds the trainer lease (a Redis key with a TTL that its holder
renews). The holder learns from a sample of its own partitions' users (ids are hash-partitioned,
so that is a uniform sample) and publishes a snapshot now and then; publishing is a Lua call
that checks the lease, so a holder that lost it cannot publish. Every instance, the holder
included, scores with the latest published version, so the same features get the same
segment everywhere. A new holder resumes from the trainer's state stored with the latest
version, and so does a restart.

What is stored: the scoring parameters of the last few versions (every instance reads them),
the trainer's whole model (only a new trainer reads it), and a JSON description (`meta`: the
version, the fingerprint of the settings that shaped it, what it learned, its live quality),
which `segstream model show` prints and every instance checks against its own settings.

Learning: while the model is young it learns from every scoring, and publishes each time its
samples double, so a new stream gets a model within its first batches; after that the trainer
samples scorings so that it learns at most `learn_per_s` samples a second, whatever the traffic.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from typing import Any

import orjson
import redis

from features import keys
from segments.engine import Scored
from segments.errors import SnapshotError
from segments.fingerprint import differences, fingerprint
from segments.model import Model
from segments.scoring import Params, cold_params
from segments.snapshots import seal, unseal
from stream.errors import ConfigError, SegstreamError
from stream.ops import metrics
from stream.service.redis_calls import redis_call
from stream.settings import Settings

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
# KEYS: lease, current, params key, params key to drop, trainer, meta.
# ARGV: owner, version, params blob, trainer blob ("": keep the stored one), meta.
_PUBLISH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[2]) <= current then return -1 end
redis.call('SET', KEYS[3], ARGV[3])
if ARGV[4] ~= '' then redis.call('SET', KEYS[5], ARGV[4]) end
redis.call('SET', KEYS[6], ARGV[5])
redis.call('SET', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[4])
return 1
"""
KEEP_VERSIONS = 3
# Samples and labels learned since the last version before event time alone calls for another:
# past its youth the trainer learns at most LEARN_PER_S a second, so a replay gets at most a
# version a second at the default rate (each costs a refit, some milliseconds).
PUBLISH_AFTER = 5_000
# Names of the settings a fingerprint entry follows, for messages.
SETTING_NAMES = {
    "features": "SEGSTREAM_SEGMENTS__FEATURES",
    "windows": "SEGSTREAM_FEATURES__WINDOWS",
    "k": "SEGSTREAM_SEGMENTS__K",
    "clusterer": "SEGSTREAM_SEGMENTS__CLUSTERER",
    "classifier": "SEGSTREAM_SEGMENTS__CLASSIFIER",
    "river": "the installed river version",
    "numpy": "the installed numpy version",
}


class ModelStore:
    """The Redis side: lease, current version, signed parameters and trainer state, meta."""

    def __init__(self, client: redis.Redis, prefix: str, signing_key: bytes | None) -> None:
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

    def lease_holder(self) -> str | None:
        holder = self._call(self._redis.get, keys.model_lease(self._prefix))
        return holder.decode() if holder else None

    def current(self) -> int:
        return int(self._call(self._redis.get, keys.model_current(self._prefix)) or 0)

    def meta(self) -> dict[str, Any] | None:
        blob = self._call(self._redis.get, keys.model_meta(self._prefix))
        return orjson.loads(blob) if blob else None

    def load(self, version: int) -> Params | None:
        """The scoring parameters of a version (None if it was dropped meanwhile)."""
        blob = self._call(self._redis.get, keys.model_snapshot(self._prefix, version))
        return None if blob is None else self._unseal(blob, Params, f"snapshot v{version}")

    def versions(self, upto: int) -> list[int]:
        """The stored snapshot versions at most `upto`, newest first."""
        head = f"{keys.model_tag(self._prefix)}:v"
        found = self._call(lambda: list(self._redis.scan_iter(match=f"{head}*", count=100)))
        numbers = (key.decode()[len(head) :] for key in found)
        return sorted((int(n) for n in numbers if n.isdigit() and int(n) <= upto), reverse=True)

    def trainer(self) -> Model | None:
        """The trainer's state as of the current version, to resume learning from."""
        blob = self._call(self._redis.get, keys.model_trainer(self._prefix))
        return None if blob is None else self._unseal(blob, Model, "the trainer's snapshot")

    def publish(self, owner: str, params: Params, model: Model, *, keep_trainer: bool) -> bool:
        """Publish a version if `owner` holds the lease and it is newer than the current one;
        with `keep_trainer`, the trainer's state goes with it."""
        version = params.version
        keys_ = [
            keys.model_lease(self._prefix),
            keys.model_current(self._prefix),
            keys.model_snapshot(self._prefix, version),
            keys.model_snapshot(self._prefix, max(0, version - KEEP_VERSIONS)),
            keys.model_trainer(self._prefix),
            keys.model_meta(self._prefix),
        ]
        trainer = self._seal(model) if keep_trainer else b""
        meta = orjson.dumps(describe(model))
        args = [owner, version, self._seal(params), trainer, meta]
        return bool(self._call(self._publish, keys=keys_, args=args) == 1)

    def reset(self) -> int:
        """Delete every model key (not the lease); returns how many there were."""
        found = list(self._redis.scan_iter(match=f"{keys.model_tag(self._prefix)}:*"))
        mine = [k for k in found if k != keys.model_lease(self._prefix).encode()]
        return int(self._call(self._redis.delete, *mine)) if mine else 0

    def _seal(self, payload: object) -> bytes:
        if self._key is None:
            msg = "no signing key: snapshots cannot be published"
            raise ConfigError(msg)
        return seal(payload, self._key)

    def _unseal(self, blob: bytes, kind: type, what: str) -> Any:
        if self._key is None:
            msg = "no signing key: snapshots cannot be read"
            raise ConfigError(msg)
        payload = unseal(blob, self._key)
        if not isinstance(payload, kind):
            msg = f"{what} does not hold a {kind.__name__}"
            raise SnapshotError(msg)
        return payload

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        with redis_call("model"):
            return fn(*args, **kwargs)


def describe(model: Model) -> dict[str, Any]:
    """The JSON `meta` of a published model."""
    quality = model.quality
    return {
        "version": model.version,
        "published_at": round(time.time(), 3),
        "fingerprint": model.fingerprint,
        "samples_learned": model.learned,
        "labels_learned": model.labels_learned,
        "population": len(model.population),
        "clusters": model.config.k if model.clusters_ready else 0,
        "propensity_ready": model.propensity_ready,
        "quality": quality.as_dict() if quality.both_outcomes() else None,
    }


def mismatch_message(stored: Mapping[str, str], ours: Mapping[str, str]) -> str | None:
    """Why this instance must not use the stored model, naming the settings; None if it may."""
    found = differences(stored, ours)
    if not found:
        return None
    parts = [
        f"{SETTING_NAMES[name]} is {ours.get(name, '')!r} here but {stored.get(name, '')!r} "
        "in the stored model"
        for name in found
    ]
    return (
        "the model in Redis was built with other settings: "
        + "; ".join(parts)
        + ". Run with the model's settings, or start a new model with `segstream model reset"
        " --yes` (stop every instance first; segments are then learned again from scratch)"
    )


class ModelSync:
    """What one instance does about the model each batch: follow the published version, and,
    while it holds the lease, learn and publish."""

    def __init__(
        self,
        store: ModelStore,
        model: Model,
        *,
        snapshot_interval_s: float,
        refresh_interval_s: float,
        lease_ttl_s: float,
        learn_per_s: float,
        young_samples: int,
    ) -> None:
        self._store = store
        self._fresh = model  # a new, untrained model: what the first trainer starts from
        self.fingerprint = model.fingerprint
        self.owner = uuid.uuid4().hex
        self._snapshot_s = snapshot_interval_s
        self._refresh_s = refresh_interval_s
        self._lease_ms = int(lease_ttl_s * 1000)
        self._learn_per_s = learn_per_s
        self._young = young_samples
        self.params = cold_params(model.config.features)
        self._model: Model | None = None  # only while holding the lease
        self._next_refresh = 0.0
        self._last_publish = 0.0
        # Each partition's event-time watermark at the last version.
        self._published_marks: dict[int, int] = {}
        self._last_kept = 0.0
        self._learned_since = 0
        self._milestone = 0
        self._allowance = 0.0
        self._allowance_at = time.monotonic()
        self._checked = False
        self._refused_version = 0  # the current version when a snapshot of it was refused
        self._trainer_refused = False

    @property
    def trainer(self) -> bool:
        return self._model is not None

    def check_settings(self) -> None:
        """Refuse a stored model built with other settings (ConfigError naming them)."""
        self._refuse_unless_usable(self._store.current())
        self._checked = True

    def _refuse_unless_usable(self, version: int) -> None:
        if not version:
            return
        meta = self._store.meta()
        if meta is None:
            msg = (
                f"the model in Redis (v{version}) was stored by an earlier segstream, without"
                " the settings it was built with; start a new model with `segstream model"
                " reset --yes` (stop every instance first)"
            )
            raise ConfigError(msg)
        problem = mismatch_message(meta["fingerprint"], self.fingerprint)
        if problem is not None:
            raise ConfigError(problem)

    def refresh(self) -> None:
        """Every `refresh_interval_s`: renew or take the lease, and load a newer version."""
        now = time.monotonic()
        if now < self._next_refresh:
            return
        self._next_refresh = now + self._refresh_s
        if not self._checked:
            self.check_settings()
        holds = not self._trainer_refused and self._store.hold_lease(self.owner, self._lease_ms)
        if holds and self._model is None:
            try:
                self._model = self._resume()
            except SnapshotError as exc:
                self._refuse_trainer(exc)
            except BaseException:
                self._store.release(self.owner)  # let another instance try at once
                raise
            else:
                self._milestone = 2 * self._learned(self._model)
                logger.info("holding the trainer lease from model v%d", self._model.version)
        elif not holds and self._model is not None:
            logger.info("lost the trainer lease")
            self._model = None
        self._follow()

    def learn_share(self, scorings: int) -> float:
        """The share of this batch's scorings to learn from: none unless training, all while
        the model is young, then what the rate allows."""
        model = self._model
        if model is None or not scorings:
            return 0.0
        if model.learned < self._young:
            return 1.0
        now = time.monotonic()
        rate = self._learn_per_s
        self._allowance = min(self._allowance + rate * (now - self._allowance_at), rate)
        self._allowance_at = now
        return min(1.0, max(self._allowance, 0.0) / scorings)

    def learn(self, scored: Scored, watermarks: Mapping[int, int]) -> None:
        """Learn from the batch's samples and resolved labels (trainer only); publish when
        due. Past the youth, labels beyond a second's allowance are left out too."""
        model = self._model
        if model is None:
            return
        # The youth is not charged to the allowance: the rate bounds what comes after it.
        charge = 0 if model.learned < self._young else 1
        for sample in scored.samples:
            model.learn(sample.user, sample.inputs, sample.frequency, sample.monetary)
        self._allowance -= charge * len(scored.samples)
        labels = 0
        for label in scored.labels:
            if charge and self._allowance <= -self._learn_per_s:
                break
            model.learn_label(label.inputs, label.bought, label.propensity)
            self._allowance -= charge
            labels += 1
        self._learned_since += len(scored.samples) + labels
        metrics.SAMPLES_LEARNED.labels("segment").inc(len(scored.samples))
        metrics.SAMPLES_LEARNED.labels("propensity").inc(labels)
        reason = self._publish_due(model, watermarks)
        if reason is not None:
            self._publish(model, watermarks, reason)

    def close(self) -> None:
        if self._model is not None:
            self._store.release(self.owner)
            self._model = None

    def _resume(self) -> Model:
        model = self._store.trainer() if self._store.current() else None
        return model if model is not None else self._fresh

    def _refuse_trainer(self, exc: SnapshotError) -> None:
        """A trainer's snapshot that fails its signature is not learned on: scoring goes on
        with the published version, and this instance stops asking for the lease (every
        instance would refuse it; an operator resets the model or restores the key)."""
        self._store.release(self.owner)
        self._trainer_refused = True
        metrics.SNAPSHOTS_REFUSED.labels("trainer").inc()
        logger.error("not training: %s; scoring goes on with model v%d", exc, self.params.version)

    def _follow(self) -> None:
        version = self._store.current()
        if version <= self.params.version or version == self._refused_version:
            return
        self._refuse_unless_usable(version)
        params = self._load_good(version)
        if params is None:
            # A forged or corrupt current version: the newest good one stored instead (a scan
            # of the keyspace, so only after a refusal).
            for candidate in self._store.versions(version - 1):
                if candidate <= self.params.version or params is not None:
                    break
                params = self._load_good(candidate)
            self._refused_version = version
        if params is not None:
            self.params = params
            metrics.MODEL_VERSION.set(params.version)
            logger.info("scoring with model v%d", params.version)

    def _load_good(self, version: int) -> Params | None:
        """The version's parameters, or None if it is gone or refused (counted, logged)."""
        try:
            return self._store.load(version)
        except SnapshotError as exc:
            metrics.SNAPSHOTS_REFUSED.labels("scoring").inc()
            logger.error("model v%d refused: %s", version, exc)
            return None

    @staticmethod
    def _learned(model: Model) -> int:
        return model.learned + model.labels_learned

    def _publish_due(self, model: Model, watermarks: Mapping[int, int]) -> str | None:
        """Why a new version is due now, or None: a part became usable, the young model's
        learning doubled (its centres may then move to a new placement), or the interval
        passed in wall time or in event time, whichever first. Live the two are the same; a
        replay of history gets versions as its event time passes, each once PUBLISH_AFTER new
        samples were learned, so that replays of the same events get the same versions."""
        published = self.params
        if not self._learned_since or not (
            published.clusters_ready or model.propensity_ready or model.clusters_ready
        ):
            return None
        readiness = [
            (not published.clusters_ready and model.clusters_ready, "clusters"),
            (not published.propensity_ready and model.propensity_ready, "propensity"),
            (model.learned < self._young and self._learned(model) >= self._milestone, "doubled"),
            (time.monotonic() - self._last_publish >= self._snapshot_s, "interval"),
            (self._event_time_passed(watermarks), "event time"),
        ]
        return next((reason for due, reason in readiness if due), None)

    def _event_time_passed(self, watermarks: Mapping[int, int]) -> bool:
        """An interval of event time passed on some partition (partitions of a replayed
        backlog are read one after another, each from its own past), and enough was learned."""
        interval_ms = self._snapshot_s * 1000
        passed = any(
            mark - self._published_marks.get(partition, 0) >= interval_ms
            for partition, mark in watermarks.items()
        )
        return passed and self._learned_since >= PUBLISH_AFTER

    def _publish(self, model: Model, watermarks: Mapping[int, int], reason: str) -> None:
        model.version = max(model.version, self._store.current())
        try:
            params = model.params()
            bad = params.non_finite()
        except (ValueError, ArithmeticError) as exc:  # numpy's refusals of NaN and inf
            params, bad = None, [f"{type(exc).__name__}: {exc}"]
        if params is None or bad:
            # Scoring with it would put every user in one cluster; the last good version stays.
            logger.error("model not published: non-finite %s", bad)
            self._last_publish = time.monotonic()
            return
        now = time.monotonic()
        # The trainer's state (large) is only for a new trainer to resume from: kept as of
        # at most one interval ago.
        keep = now - self._last_kept >= self._snapshot_s or model.learned < self._young
        if self._store.publish(self.owner, params, model, keep_trainer=keep):
            self.params = params
            metrics.MODEL_VERSION.set(params.version)
            logger.info(
                "published model v%d (%s; %d samples, %d labels)",
                params.version,
                reason,
                model.learned,
                model.labels_learned,
            )
            if keep:
                self._last_kept = now
        self._last_publish = now
        self._published_marks.update(watermarks)
        self._learned_since = 0
        if reason in ("clusters", "doubled"):
            self._milestone = 2 * self._learned(model)


def _store_for(settings: Settings) -> ModelStore:
    from stream.service.wiring import redis_client

    return ModelStore(redis_client(settings), settings.key_prefix, settings.segments.signing())


def show_model(settings: Settings) -> dict[str, Any]:
    """What `segstream model show` prints: the stored model's description and whether this
    instance's settings may use it."""
    store = _store_for(settings)
    ours = fingerprint(settings.segments.config(), settings.features.rules().windows)
    meta = store.meta()
    problem = None if meta is None else mismatch_message(meta.get("fingerprint", {}), ours)
    return {
        "key_prefix": settings.key_prefix,
        "current_version": store.current(),
        "trainer_lease_held": store.lease_holder() is not None,
        "model": meta,
        "settings_here": ours,
        "usable_here": meta is None or problem is None,
        "problem": problem,
    }


def reset_model(settings: Settings) -> dict[str, Any]:
    """Delete the stored model; refused while an instance holds the trainer lease."""
    store = _store_for(settings)
    if store.lease_holder() is not None:
        msg = (
            "an instance holds the trainer lease, so the service is running: stop every"
            f" instance first (the lease lapses {settings.segments.lease_ttl_s:g}s after the"
            " last one stops), then reset"
        )
        raise SegstreamError(msg)
    version = store.current()
    deleted = store.reset()
    logger.info("model reset: deleted %d keys (was v%d)", deleted, version)
    return {"key_prefix": settings.key_prefix, "deleted_keys": deleted, "was_version": version}
