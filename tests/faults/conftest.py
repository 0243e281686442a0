"""Fixtures of the fault suite: a Redis and a broker per test, the rig around them, the input.

The suite is selected with `-m faults` (`make test-faults`); a plain `pytest` (`make test`)
leaves it out unless a path inside tests/faults is named on the command line.
"""

from __future__ import annotations

import signal
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path

import pytest

from stream.tools.local_servers import LocalServer, kafka_broker, redis_cluster, redis_server
from tests.faults.harness import Rig, generated
from tests.faults.proxy import RedisProxy

HERE = Path(__file__).parent.resolve()

RigFactory = Callable[..., Rig]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.option.markexpr or any(_inside_faults(arg) for arg in config.args):
        return
    faults = [item for item in items if item.get_closest_marker("faults")]
    if faults:
        config.hook.pytest_deselected(items=faults)
        items[:] = [item for item in items if not item.get_closest_marker("faults")]


def _inside_faults(arg: str) -> bool:
    path = Path(arg.split("::", 1)[0]).resolve()
    return path == HERE or HERE in path.parents


def _thawed_stop(server: LocalServer) -> None:
    """Stop a server the test may have left frozen (SIGTERM does nothing to a stopped one)."""
    if server.process is not None and server.process.poll() is None:
        server.process.send_signal(signal.SIGCONT)
    server.stop()


@pytest.fixture
def make_rig(tmp_path: Path, clean_env: pytest.MonkeyPatch) -> Iterator[RigFactory]:
    """`make_rig(redis_args=[...], proxy=False)`: servers of the test's own and the rig
    around them; everything it started is stopped at the end, frozen or not."""
    with ExitStack() as stack:

        def make(redis_args: Sequence[str] = (), proxy: bool = False, cluster: bool = False) -> Rig:
            workdir = tmp_path / f"rig{len(rigs)}"
            (workdir / "redis").mkdir(parents=True)
            kafka = kafka_broker(workdir)
            stack.callback(_thawed_stop, kafka)
            kafka.start()
            if cluster:
                nodes = redis_cluster(workdir / "redis")
                stack.callback(nodes.stop)
                rig = Rig(workdir, f"f{uuid.uuid4().hex[:8]}", nodes.nodes[0], kafka, cluster=nodes)
                stack.callback(rig.close)
                rigs.append(rig)
                return rig
            # Later arguments win in redis-server's argv: the test's override the defaults.
            redis = redis_server(workdir / "redis")
            redis.argv += list(redis_args)
            stack.callback(_thawed_stop, redis)
            redis.start()
            front = None
            if proxy:
                front = RedisProxy(redis.port).start()
                stack.callback(front.close)
            rig = Rig(workdir, f"f{uuid.uuid4().hex[:8]}", redis, kafka, front)
            stack.callback(rig.close)
            rigs.append(rig)
            return rig

        rigs: list[Rig] = []
        yield make


@pytest.fixture
def rig(make_rig: RigFactory) -> Rig:
    return make_rig()


@pytest.fixture(scope="session")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where generated input is cached for the whole session."""
    return tmp_path_factory.mktemp("fault-inputs")


@pytest.fixture(scope="session")
def events(inputs: Path) -> list[bytes]:
    """400 users over 4 days, about 4,000 events in event-time order."""
    return generated(inputs, 400, 4, 17)
