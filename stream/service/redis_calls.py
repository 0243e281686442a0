"""Redis calls of the stream layer, timed and counted by kind, failing as transient errors."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from stream.errors import TransientError
from stream.ops import metrics


@contextmanager
def redis_call(call: str) -> Iterator[None]:
    """Time the Redis work of `call` (a bounded kind: timers, outbox, model, population); a
    failure counts as a Redis error and raises a `TransientError`, so the loop pauses and
    retries the step."""
    started = time.perf_counter()
    try:
        yield
    except (redis.ConnectionError, redis.TimeoutError, redis.ResponseError) as exc:
        metrics.REDIS_ERRORS.labels(call).inc()
        msg = f"redis unavailable for {call}: {exc}"
        raise TransientError(msg) from exc
    metrics.REDIS_SECONDS.labels(call).observe(time.perf_counter() - started)
