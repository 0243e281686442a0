"""`segstream model show | reset`: the shared model as an operator sees it, and a new start."""

from __future__ import annotations

import logging
from typing import Any

from segments.fingerprint import fingerprint
from stream.errors import SegstreamError
from stream.service.model_store import ModelStore, mismatch_message
from stream.service.wiring import redis_client
from stream.settings import Settings

logger = logging.getLogger(__name__)


def _store_for(settings: Settings) -> ModelStore:
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
