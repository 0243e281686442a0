"""The audience catalog in Redis: one JSON string, changed by `segstream audience`, followed by
every instance of the service within a refresh interval.

The catalog is one key, so its version and its audiences are read together. A change is a
compare-and-set (WATCH, then MULTI): two operators adding audiences at once both land, one after
the other, each with its own version.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import msgspec
import redis

from features import keys, resp
from segments.audiences import Catalog, decode, encode
from stream.errors import SegstreamError, TransientError
from stream.service.redis_calls import redis_call

logger = logging.getLogger(__name__)


class CatalogError(SegstreamError):
    """The stored catalog cannot be read; the message says what to do."""


class AudienceCatalog:
    def __init__(self, client: resp.Client, prefix: str, refresh_interval_s: float = 1.0) -> None:
        self._redis = client
        self._prefix = prefix
        self._key = keys.audiences(prefix)
        self._refresh_s = refresh_interval_s
        self._next_refresh = 0.0
        self.current = Catalog()
        # The newest version a backfill recorded, read once: a catalog older than it is lost.
        self._floor: int | None = None

    def load(self) -> Catalog:
        with redis_call("audiences"):
            raw = self._redis.get(self._key)
        return self._parse(raw)

    def refresh(self) -> Catalog | None:
        """Every refresh interval: the catalog when its version changed since the last one
        returned, else None. A Redis that does not answer leaves the catalog as it was."""
        now = time.monotonic()
        if now < self._next_refresh:
            return None
        self._next_refresh = now + self._refresh_s
        try:
            catalog = self.load()
            if self._floor is None:
                self._floor = self._last_backfilled()
        except TransientError as exc:
            logger.warning("audience catalog not refreshed: %s", exc)
            return None
        newest = max(self._floor, self.current.version)
        if catalog.version < newest:
            raise CatalogError(_went_back(self._key, newest, catalog.version))
        if catalog.version == self.current.version:
            return None
        self.current = catalog
        names = ", ".join(a.name for a in catalog.audiences) or "none"
        logger.info("audience catalog v%d: %s", catalog.version, names)
        return catalog

    def change(self, edit: Callable[[Catalog], Catalog]) -> Catalog:
        """Apply `edit` to the stored catalog and store the result, again from the start while
        another change lands in between; returns what was stored."""

        stored: list[Catalog] = []

        def apply(pipe: redis.client.Pipeline) -> None:
            raw = pipe.get(self._key)
            # A catalog that is gone numbers on from the newest version a backfill recorded,
            # so running instances never see the versions go back.
            current = self._parse(raw) if raw is not None else Catalog(self._last_backfilled())
            catalog = edit(current)
            pipe.multi()
            pipe.set(self._key, encode(catalog))
            stored[:] = [catalog]

        with redis_call("audiences"):
            self._redis.transaction(apply, self._key)
        return stored[0]

    def progress(self) -> dict[int, dict[str, Any]]:
        """The backfill's progress by partition, as each partition's owner recorded it."""
        with redis_call("audiences"):
            raw = self._redis.hgetall(keys.audience_backfill(self._prefix))
        return {int(p): msgspec.json.decode(v) for p, v in raw.items()}

    def _last_backfilled(self) -> int:
        return max((p["version"] for p in self.progress().values()), default=0)

    def _parse(self, raw: bytes | str | None) -> Catalog:
        if raw is None:
            return Catalog()
        try:
            return decode(raw.encode() if isinstance(raw, str) else raw)
        except msgspec.DecodeError as exc:
            msg = (
                f"the audience catalog at {self._key!r} cannot be read ({exc}); fix or delete"
                " the key, then add the audiences again"
            )
            raise CatalogError(msg) from None


def _went_back(key: str, followed: int, found: int) -> str:
    return (
        f"the audience catalog at {key!r} is v{found}, older than v{followed} seen before: it was"
        " deleted or restored from an older copy. Stopping rather than publishing a leave for"
        " every member of the audiences it lacks. Add the audiences again with `segstream"
        " audience add` (versions go on from the newest one recorded), then start the service"
    )
