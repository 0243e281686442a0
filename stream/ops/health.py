"""Liveness and readiness, served next to /metrics on the metrics port.

- Liveness (`/healthz`) fails only when the consumer loop itself stops completing iterations for
  `stall_s`. Waiting on a dependency is not being stuck: a broker or Redis that is away makes the
  loop pause and retry (each retry wait iterates), and a blocking call to the broker (a commit, a
  flush) is marked as a wait. So Kubernetes does not restart a healthy pod during an outage.
- Readiness (`/readyz`) fails while no broker has sent a byte for `kafka_silence_s` (librdkafka's
  `rxidle`: a frozen broker keeps its TCP connection, and its state, UP), while Redis does not
  answer a PING (at most one a second), while the loop is paused on a failing dependency, and
  once the service stopped because Redis lost its state.
- The read API (`/v1/users/...`, `stream.ops.read_api`) is served on the same port when the
  service hands its health a lookup (`SEGSTREAM_API__ENABLED`); otherwise `/v1/` is not found.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from stream.ops import metrics
from stream.ops.read_api import ROOT, RulesLookup, UserLookup, answer

logger = logging.getLogger(__name__)

REDIS_PING_EVERY_S = 1.0


class Health:
    """What the probes answer from; the loop and the Kafka callbacks feed it. `users` is the
    read API's lookup (None: the API is off)."""

    def __init__(
        self,
        stall_s: float,
        ping_redis: Callable[[], bool] | None = None,
        kafka_silence_s: float = 30.0,
        users: UserLookup | None = None,
        rules: RulesLookup | None = None,
    ) -> None:
        self.stall_s = stall_s
        self.users = users
        self.rules = rules
        self.kafka_silence_s = kafka_silence_s
        self._ping_redis = ping_redis
        self._beat = time.monotonic()
        self._waiting_on = ""  # the dependency call the loop is blocked in, if any
        self._kafka_heard = -float("inf")  # monotonic time a broker last sent something
        self._paused_on = ""  # the failing step the loop is paused on, if any
        self._halted = ""  # why the service stopped consuming for good
        self._redis_up = False
        self._redis_checked = -float("inf")
        self._lock = threading.Lock()

    def beat(self) -> None:
        """The loop completed an iteration (a batch, an empty poll, or a paused retry wait)."""
        self._beat = time.monotonic()
        metrics.LAST_PROGRESS.set_to_current_time()

    @contextlib.contextmanager
    def waiting(self, on: str) -> Iterator[None]:
        """The loop blocks in a call to a dependency (bounded by that client's own timeout)."""
        self._waiting_on = on
        try:
            yield
        finally:
            self._waiting_on = ""
            self.beat()

    def paused(self, on: str) -> None:
        """The loop is paused retrying `on` ("" once it runs again)."""
        self._paused_on = on

    def halt(self, reason: str) -> None:
        self._halted = reason

    def kafka_statistics(self, stats: dict[str, Any]) -> None:
        idle = [
            b["rxidle"] / 1e6
            for b in stats.get("brokers", {}).values()
            if b.get("nodeid", -1) >= 0 and b.get("state") == "UP" and b.get("rxidle", -1) >= 0
        ]
        if idle:
            self._kafka_heard = max(self._kafka_heard, time.monotonic() - min(idle))

    def all_brokers_down(self) -> None:
        """The client gave up on every broker: not ready until one is heard again."""
        self._kafka_heard = -float("inf")

    def kafka_silent_s(self) -> float:
        """Seconds since a broker last sent something (inf: never)."""
        return time.monotonic() - self._kafka_heard

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        stalled = time.monotonic() - self._beat
        detail: dict[str, Any] = {"since_progress_s": round(stalled, 3)}
        if self._waiting_on:
            detail["waiting_on"] = self._waiting_on
        return bool(self._waiting_on) or stalled < self.stall_s, detail

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        silent = self.kafka_silent_s()
        kafka = silent < self.kafka_silence_s
        redis_up = self._redis_ok()
        detail: dict[str, Any] = {"kafka": "up" if kafka else "down", "redis": _word(redis_up)}
        if silent != float("inf"):
            detail["kafka_silent_s"] = round(silent, 1)
        if self._paused_on:
            detail["paused_on"] = self._paused_on
        if self._halted:
            detail["stopped"] = self._halted
        ready = kafka and redis_up and not self._paused_on and not self._halted
        return ready, detail

    def _redis_ok(self) -> bool:
        if self._ping_redis is None:
            return True
        with self._lock:
            if time.monotonic() - self._redis_checked >= REDIS_PING_EVERY_S:
                self._redis_up = self._ping_redis()
                self._redis_checked = time.monotonic()
            return self._redis_up


def _word(up: bool) -> str:
    return "up" if up else "down"


REQUEST_TIMEOUT_S = 10.0


def serve(health: Health, port: int, host: str = "0.0.0.0") -> ThreadingHTTPServer | None:
    """Serve /metrics, /healthz, /readyz (and the read API when `health.users` is set) on
    `port` in a daemon thread; 0 serves nothing."""
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
            elif path.startswith(ROOT) and health.users is not None:
                status, body = answer(health.users, self.path, health.rules)
                self._send(status, "application/json", body)
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
