"""The `segstream` command as a test runs it: a process of its own, settings in its environment."""

from __future__ import annotations

import os
import sys

from stream.settings import Settings
from tests.conftest import SIGNING_KEY


def env_for(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEGSTREAM_")}
    env.update(
        {
            "SEGSTREAM_KAFKA__BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
            "SEGSTREAM_KAFKA__GROUP_ID": settings.kafka.group_id,
            "SEGSTREAM_KAFKA__SESSION_TIMEOUT_MS": "6000",
            "SEGSTREAM_REDIS__URL": settings.redis.url,
            "SEGSTREAM_KEY_PREFIX": settings.key_prefix,
            "SEGSTREAM_TOPICS__EVENTS": settings.topics.events,
            "SEGSTREAM_TOPICS__SEGMENTS": settings.topics.segments,
            "SEGSTREAM_TOPICS__DLQ": settings.topics.dlq,
            "SEGSTREAM_TOPICS__PARTITIONS": "3",
            "SEGSTREAM_METRICS__PORT": "0",
            "SEGSTREAM_SEGMENTS__SIGNING_KEY": SIGNING_KEY,
            "SEGSTREAM_SEGMENTS__WARMUP": "50",
            "SEGSTREAM_LOOP__BATCH_SIZE": "50",
        }
    )
    if settings.redis.cluster:
        env["SEGSTREAM_REDIS__CLUSTER"] = "true"
    return env


def segstream(*args: str) -> list[str]:
    return [sys.executable, "-m", "stream", *args]
