"""A TCP proxy between the service and Redis that loses or delays replies on demand.

Each client connection gets its own upstream connection and two pumps (threads). Armed with
`lose_replies(n)`, the next `n` connections that send a command containing the trigger (the
state write is a Lua script call: `EVALSHA`) have the command forwarded, Redis's replies read and
thrown away, and then the client's connection closed: the command applied, the client never
knew. With `delay_s` set, every reply waits that long before it is passed on (order kept).
"""

from __future__ import annotations

import contextlib
import queue
import socket
import threading
import time
from dataclasses import dataclass, field

from stream.tools.local_servers import free_port

CHUNK = 65_536
# How long the upstream must be silent after a doomed command before the connection is cut:
# long enough for Redis to have run every command of the pipelined round trip it was part of.
QUIET_S = 0.3


@dataclass
class _Link:
    client: socket.socket
    upstream: socket.socket
    replies: queue.Queue[tuple[float, bytes] | None] = field(default_factory=queue.Queue)
    doomed: threading.Event = field(default_factory=threading.Event)

    def close(self) -> None:
        for sock in (self.client, self.upstream):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


class RedisProxy:
    def __init__(self, upstream_port: int, trigger: bytes = b"EVALSHA") -> None:
        self.upstream_port = upstream_port
        self.port = free_port()
        self.trigger = trigger
        self.delay_s = 0.0
        self.lost = 0  # connections cut after their command applied
        self._armed = 0
        self._lock = threading.Lock()
        self._links: list[_Link] = []
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._closed = threading.Event()

    @property
    def address(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisProxy:
        threading.Thread(target=self._accept, daemon=True, name="proxy-accept").start()
        return self

    def close(self) -> None:
        self._closed.set()
        self._server.close()
        for link in list(self._links):
            link.close()

    def lose_replies(self, count: int = 1) -> None:
        """The next `count` triggering commands apply, and their connections are cut."""
        with self._lock:
            self._armed += count

    def _take_arm(self) -> bool:
        with self._lock:
            if self._armed <= 0:
                return False
            self._armed -= 1
            return True

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            link = _Link(client, upstream)
            self._links.append(link)
            for target in (self._requests, self._replies, self._deliver):
                threading.Thread(target=target, args=(link,), daemon=True).start()

    def _requests(self, link: _Link) -> None:
        """Client to Redis; a triggering command dooms the connection once armed."""
        while data := _recv(link.client):
            if not link.doomed.is_set() and self.trigger in data and self._take_arm():
                link.doomed.set()
            with contextlib.suppress(OSError):
                link.upstream.sendall(data)
        if not link.doomed.is_set():
            link.close()

    def _replies(self, link: _Link) -> None:
        """Redis to client: queued with their arrival time, or dropped once doomed."""
        while data := _recv(link.upstream):
            if link.doomed.is_set():
                self._swallow(link)
                return
            link.replies.put((time.monotonic(), data))
        link.replies.put(None)

    def _swallow(self, link: _Link) -> None:
        """Read (and drop) Redis's replies until it is quiet, then cut the client off."""
        link.upstream.settimeout(QUIET_S)
        with contextlib.suppress(OSError):
            while _recv(link.upstream):
                pass
        with self._lock:
            self.lost += 1
        link.replies.put(None)
        link.close()

    def _deliver(self, link: _Link) -> None:
        """Pass each reply on `delay_s` after it arrived."""
        while (item := link.replies.get()) is not None:
            arrived, data = item
            wait = arrived + self.delay_s - time.monotonic()
            if wait > 0:
                time.sleep(wait)  # the injected latency itself
            try:
                link.client.sendall(data)
            except OSError:
                return


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(CHUNK)
    except OSError:
        return b""
