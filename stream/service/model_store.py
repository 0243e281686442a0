"""The model's side in Redis: the trainer lease, the current version, the signed scoring
parameters of the last few versions, the trainer's state, and a JSON description (`meta`: the
version, the fingerprint of the settings that shaped it, what it learned, its live quality) that
`segstream model show` prints and every instance checks against its own settings.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import orjson

from features import keys, resp
from segments.errors import SnapshotError
from segments.fingerprint import differences
from segments.model import Model
from segments.scoring import Params
from segments.snapshots import seal, unseal
from stream.errors import ConfigError
from stream.service.redis_calls import redis_call

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
# KEYS: lease, current, params key, params key to drop, trainer, meta, rules.
# ARGV: owner, version, params blob, trainer blob ("": keep the stored one), meta, rules (a
# JSON object: item -> the JSON text of its rules).
_PUBLISH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
if tonumber(ARGV[2]) <= current then return -1 end
redis.call('SET', KEYS[3], ARGV[3])
if ARGV[4] ~= '' then redis.call('SET', KEYS[5], ARGV[4]) end
redis.call('SET', KEYS[6], ARGV[5])
redis.call('DEL', KEYS[7])
for item, rules in pairs(cjson.decode(ARGV[6])) do redis.call('HSET', KEYS[7], item, rules) end
redis.call('SET', KEYS[2], ARGV[2])
redis.call('DEL', KEYS[4])
return 1
"""
KEEP_VERSIONS = 3
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

    def __init__(self, client: resp.Client, prefix: str, signing_key: bytes | None) -> None:
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
            keys.model_rules(self._prefix),
        ]
        trainer = self._seal(model) if keep_trainer else b""
        meta = orjson.dumps(describe(model))
        args = [owner, version, self._seal(params), trainer, meta, _rules_json(params)]
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


def _rules_json(params: Params) -> bytes:
    rules = params.rules.as_json() if params.rules is not None else {}
    return orjson.dumps({item: orjson.dumps(found).decode() for item, found in rules.items()})


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
        "placement": model.placement,
        "propensity_ready": model.propensity_ready,
        "baskets": round(model.pairs.baskets, 3),
        "spend_labels_learned": model.spend.learned,
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
