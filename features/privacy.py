"""Keyed pseudonymisation of user ids: HMAC-SHA256, so ids cannot be reversed without the key."""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache
from typing import Final

PSEUDONYM_HEX: Final = 32  # 128 bits: no collisions in practice, half the length of the digest


class Pseudonymizer:
    def __init__(self, key: bytes, cache_size: int = 262_144) -> None:
        if len(key) < 16:
            msg = "the pseudonymisation key must be at least 16 bytes"
            raise ValueError(msg)
        self._key = key
        # Users recur: caching the digest saves the HMAC on most events.
        self._cached = lru_cache(maxsize=cache_size)(self._digest)

    def __call__(self, user_id: str) -> str:
        return self._cached(user_id)

    def _digest(self, user_id: str) -> str:
        digest = hmac.new(self._key, user_id.encode(), hashlib.sha256).hexdigest()
        return digest[:PSEUDONYM_HEX]

    def __repr__(self) -> str:
        return "Pseudonymizer(key=**********)"
