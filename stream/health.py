"""Liveness and readiness, served next to /metrics on the metrics port.

- Liveness (`/healthz`) fails only when the consumer loop stops completing iterations for
  `stall_s`: a broker or Redis that is away makes the loop pause and retry, which still counts as
  progress, so Kubernetes does not restart a healthy pod during a dependency outage.
- Readiness (`/readyz`) fails while Kafka (no broker up in librdkafka's statistics, or all brokers
  down) or Redis (a PING, at most once a second) is unreachable.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
import redis
from confluent_kafka import KafkaError
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from stream import metrics

logger = logging.getLogger(__name__)

REDIS_PING_EVERY_S = 1.0


class Health:
    """What the probes answer from; the loop and the Kafka callbacks feed it."""

    def __init__(self, stall_s: float, ping_redis: Callable[[], bool] | None = None) -> None:
        self.stall_s = stall_s
        self._ping_redis = ping_redis
        self._beat = time.monotonic()
        self._kafka_up: bool | None = None  # unknown until the first statistics or error
        self._redis_up = False
        self._redis_checked = -float("inf")
        self._lock = threading.Lock()

    def beat(self) -> None:
        """The loop completed an iteration (a batch, an empty poll, or a paused retry wait)."""
        self._beat = time.monotonic()
        metrics.LAST_PROGRESS.set_to_current_time()

    def kafka_statistics(self, stats: dict[str, Any]) -> None:
        brokers = stats.get("brokers", {}).values()
        self._kafka_up = any(b.get("state") == "UP" for b in brokers if b.get("nodeid", -1) >= 0)

    def kafka_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            self._kafka_up = False

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        stalled = time.monotonic() - self._beat
        return stalled < self.stall_s, {"since_progress_s": round(stalled, 3)}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        kafka = self._kafka_up is not False
        redis_up = self._redis_ok()
        detail = {"kafka": _word(self._kafka_up), "redis": "up" if redis_up else "down"}
        return kafka and redis_up, detail

    def _redis_ok(self) -> bool:
        if self._ping_redis is None:
            return True
        with self._lock:
            if time.monotonic() - self._redis_checked >= REDIS_PING_EVERY_S:
                self._redis_up = self._ping_redis()
                self._redis_checked = time.monotonic()
            return self._redis_up


def _word(up: bool | None) -> str:
    return "unknown" if up is None else ("up" if up else "down")


def redis_pinger(url: str, timeout_s: float = 1.0) -> Callable[[], bool]:
    """A PING on a connection of its own, so a probe never waits behind the loop's calls."""
    client = redis.Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)

    def ping() -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    return ping


REQUEST_TIMEOUT_S = 10.0


def serve(health: Health, port: int, host: str = "0.0.0.0") -> ThreadingHTTPServer | None:
    """Serve /metrics, /healthz and /readyz on `port` in a daemon thread; 0 serves nothing."""
    if not port:
        return None
    server = ThreadingHTTPServer((host, port), _handler(health))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    logger.info("metrics and health on %s:%d", host, port)
    return server


def _handler(health: Health) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # A client that sends half a request (or reads nothing) is dropped after this long,
        # instead of holding a thread and a socket for good.
        timeout = REQUEST_TIMEOUT_S

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(REGISTRY))
            elif path in {"/healthz", "/livez"}:
                self._probe(*health.liveness())
            elif path == "/readyz":
                self._probe(*health.readiness())
            else:
                self._send(404, "text/plain", b"not found: try /metrics, /healthz, /readyz\n")

        def _probe(self, ok: bool, detail: dict[str, Any]) -> None:
            body = orjson.dumps({"ok": ok, **detail}) + b"\n"
            self._send(200 if ok else 503, "application/json", body)

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            """Probes every few seconds would flood the log; requests are not logged."""

    return Handler
