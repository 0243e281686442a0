"""Find or start the servers a tool needs: configured or already answering ones win."""

from __future__ import annotations

import contextlib
import logging
import socket
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from stream.errors import LocalStackError
from stream.settings import KafkaSettings, RedisSettings, Settings
from stream.tools.local_servers import kafka_answers, kafka_broker, redis_answers, redis_server

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Stack:
    settings: Settings
    kafka_started: bool
    redis_started: bool


def ensure_stack(settings: Settings, workdir: Path, resources: ExitStack) -> Stack:
    """Settings pointing at answering servers; local ones are started and registered for stop."""
    workdir.mkdir(parents=True, exist_ok=True)
    kafka = settings.kafka
    kafka_started = False
    if not (_listening(kafka.bootstrap_servers) and kafka_answers(kafka.bootstrap_servers)):
        if kafka.bootstrap_servers != KafkaSettings().bootstrap_servers:
            msg = f"SEGSTREAM_KAFKA__BOOTSTRAP_SERVERS={kafka.bootstrap_servers} does not answer"
            raise LocalStackError(msg)
        broker = kafka_broker(workdir).start()
        resources.callback(broker.stop)
        kafka = kafka.model_copy(update={"bootstrap_servers": broker.address})
        kafka_started = True
    with_redis = ensure_redis(settings, workdir, resources)
    updated = with_redis.settings.model_copy(update={"kafka": kafka})
    return Stack(updated, kafka_started, with_redis.redis_started)


def ensure_redis(settings: Settings, workdir: Path, resources: ExitStack) -> Stack:
    """Settings pointing at an answering Redis (a local one is started when none is configured
    and none answers on the default address); Kafka is left as configured."""
    workdir.mkdir(parents=True, exist_ok=True)
    redis = settings.redis
    redis_started = False
    if not redis_answers(redis.url):
        if redis.url != RedisSettings().url:
            msg = "SEGSTREAM_REDIS__URL does not answer"
            raise LocalStackError(msg)
        server = redis_server(workdir).start()
        resources.callback(server.stop)
        redis = redis.model_copy(update={"url": server.address})
        redis_started = True
    return Stack(settings.model_copy(update={"redis": redis}), False, redis_started)


def _listening(bootstrap_servers: str) -> bool:
    """A cheap TCP check first, so a missing broker does not fill the terminal with client logs."""
    for server in bootstrap_servers.split(","):
        parts = urlsplit(f"//{server.strip()}")
        with (
            contextlib.suppress(OSError, ValueError),
            socket.create_connection(
                (parts.hostname or "localhost", parts.port or 9092), timeout=1.0
            ),
        ):
            return True
    return False
