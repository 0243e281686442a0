"""Gauges read from Redis every few seconds: users per segment and cluster, timers pending.

The populations are tallies that move inside each user's compare-and-set (see
`features.store`), so they count every user exactly once whatever crashed or was retried. Every
instance exports the same global figures; dashboards take `max by (segment)`. A thread of its
own reads them, so they follow the other instances' writes while this one is idle.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from features import keys, resp, tallies
from stream.errors import TransientError
from stream.ops import metrics
from stream.service.redis_calls import redis_call

logger = logging.getLogger(__name__)

CENSUS_EVERY_S = 5.0


class Census:
    def __init__(self, client: resp.Client, prefix: str, every_s: float = CENSUS_EVERY_S) -> None:
        self._redis = client
        self._prefix = prefix
        self._every_s = every_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._owned: set[int] = set()
        self._shown: dict[str, set[str]] = {"segment": set(), "cluster": set(), "audience": set()}

    def own(self, partitions: Sequence[int]) -> None:
        self._owned.update(partitions)

    def disown(self, partitions: Sequence[int]) -> None:
        self._owned.difference_update(partitions)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="census", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            try:
                self.update()
            except TransientError as exc:  # counted as a Redis error; the next round retries
                logger.debug("census skipped: %s", exc)
            except Exception:  # the gauges go stale, the service goes on
                logger.exception("census failed; retrying in %.0fs", self._every_s)
            if self._stop.wait(self._every_s):
                return

    def update(self) -> None:
        """Read the figures now; raises `TransientError` if Redis is away."""
        owned = sorted(self._owned.copy())  # one C call: the loop's thread may change the set
        with redis_call("population"):
            counts = tallies.read(self._redis, self._prefix)
            pipe = self._redis.pipeline(transaction=False)
            for partition in owned:
                pipe.zcard(keys.timers(self._prefix, partition))
            pending = pipe.execute()
        self._show(counts)
        metrics.TIMERS_PENDING.set(sum(pending))

    def _show(self, counts: dict[str, int]) -> None:
        self._show_populations(counts)
        self._show_campaigns(counts)

    def _show_campaigns(self, counts: dict[str, int]) -> None:
        """Offers and conversions by segment and action (their labels are bounded by the
        playbook: the action of a cross-sell offer is counted without its item)."""
        gauges = {"offer": metrics.CAMPAIGN_OFFERS, "conversion": metrics.CAMPAIGN_CONVERSIONS}
        for field, count in counts.items():
            kind, _, pair = field.partition(":")
            if kind in gauges:
                segment, _, action = pair.partition("|")
                gauges[kind].labels(segment, action).set(count)

    def _show_populations(self, counts: dict[str, int]) -> None:
        seen: dict[str, dict[str, int]] = {"segment": {}, "cluster": {}, "audience": {}}
        for field, count in counts.items():
            kind, _, name = field.partition(":")
            # A removed audience's tally stays at 0: its series goes, so labels do not pile up.
            if kind in seen and (kind != "audience" or count):
                seen[kind][name] = count
        gauges = (
            ("segment", metrics.SEGMENT_USERS),
            ("cluster", metrics.CLUSTER_USERS),
            ("audience", metrics.AUDIENCE_USERS),
        )
        for kind, gauge in gauges:
            for name, count in seen[kind].items():
                gauge.labels(name).set(count)
            # A name no longer in the tallies (config changed) stops being exported.
            for gone in self._shown[kind] - seen[kind].keys():
                gauge.remove(gone)
            self._shown[kind] = set(seen[kind])
