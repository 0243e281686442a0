"""A real Prometheus scrapes a real service run; every dashboard panel's query returns data.

Grafana asks Prometheus range queries over the dashboard's time window; the test asks the same
queries over the window of the run, after it ended, so nothing depends on catching the service
mid-run. Rates use a 10 s window: the scrape interval here is 1 s. A rate needs two scrapes that
see a counter grow, and a small run can be consumed between two scrapes, so the events go in two
waves and each wave waits until Prometheus has scraped its end: conditions, not sleeps.
"""

from __future__ import annotations

import math
import shutil
import signal
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream.kafka.topics import ensure_topics
from stream.settings import Settings
from stream.tools.demo import INVALID_SAMPLES
from stream.tools.generate import generate
from stream.tools.local_servers import free_port
from tests.cli_tools import env_for, segstream
from tests.dashboard import panel_queries

pytestmark = [pytest.mark.deploy, pytest.mark.integration]

SCRAPE_S = 1


class Prometheus:
    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"

    def get(self, path: str, **params: object) -> Any:
        url = f"{self.base}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = response.read()
        return orjson.loads(body) if path.startswith("/api/") else body

    def range_query(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        answer = self.get("/api/v1/query_range", query=expr, start=start, end=end, step=SCRAPE_S)
        assert answer["status"] == "success", (expr, answer)
        return list(answer["data"]["result"])

    def wait_for(self, metric: str, at_least: float, service: subprocess.Popen[bytes]) -> None:
        """Until a scrape has seen `metric` reach `at_least`."""
        deadline = time.monotonic() + 120
        while True:
            result = self.get("/api/v1/query", query=f"{metric} >= {at_least}")["data"]["result"]
            if result:
                return
            assert service.poll() is None, f"the service exited with {service.returncode}"
            assert time.monotonic() < deadline, f"prometheus never saw {metric} >= {at_least}"
            time.sleep(0.2)


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[Prometheus, int]]:
    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed: apt-get install prometheus (.ci/run does)"
    target, port = free_port(), free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        f"global: {{scrape_interval: {SCRAPE_S}s, evaluation_interval: {SCRAPE_S}s}}\n"
        "scrape_configs:\n"
        f"  - job_name: segstream\n    static_configs: [{{targets: ['127.0.0.1:{target}']}}]\n"
    )
    log = (tmp_path / "prometheus.log").open("wb")
    process = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    server = Prometheus(port)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                server.get("/-/ready")
                break
            except OSError:
                assert process.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
                assert time.monotonic() < deadline, "prometheus did not get ready"
                time.sleep(0.2)
        yield server, target
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def test_every_dashboard_panel_has_data_from_a_service_run(
    settings: Settings, prometheus: tuple[Prometheus, int], tmp_path: Path
) -> None:
    server, target = prometheus
    waves = _two_waves(tmp_path)
    env = {
        **env_for(settings),
        "SEGSTREAM_METRICS__PORT": str(target),
        "SEGSTREAM_METRICS__HOST": "127.0.0.1",
    }
    ensure_topics(settings)
    started = time.time()
    service = subprocess.Popen(
        segstream("run", "--log-level", "WARNING"), env=env, stdout=subprocess.PIPE
    )
    try:
        server.wait_for("segstream_events_consumed_total", 0, service)
        sent = 0
        for wave in waves:
            replay = segstream("replay", str(wave))
            subprocess.run(replay, env=env, capture_output=True, timeout=120, check=True)
            sent += len(wave.read_bytes().splitlines())
            server.wait_for("segstream_events_consumed_total", sent, service)
        # Gauges sampled every few seconds (lag, census) need the service up a little longer.
        empty = _panels_without_data(server, started, deadline=time.monotonic() + 60)
    finally:
        service.send_signal(signal.SIGTERM)
        out, _ = service.communicate(timeout=60)
    assert service.returncode == 0
    assert orjson.loads(out)["consumed"] == sent
    assert not empty, f"{len(empty)} panel queries returned no data: {empty}"
    # The check above can fail: a series the service never exposed has no data.
    assert not server.range_query("segstream_no_such_metric", started, time.time())


def _panels_without_data(
    server: Prometheus, since: float, deadline: float
) -> list[tuple[str, str]]:
    """The (title, query) of panels with no data since `since`, once none is left or at the
    deadline."""
    while True:
        empty = []
        for title, expr in panel_queries(rate_interval="10s"):
            series = server.range_query(expr, since, time.time())
            values = [float(v) for s in series for _, v in s["values"]]
            if not any(not math.isnan(v) for v in values):
                empty.append((title, expr))
        if not empty or time.monotonic() > deadline:
            return empty
        time.sleep(1)


def _two_waves(tmp_path: Path) -> list[Path]:
    """The demo's input (generated users and one record of each invalid kind), in two halves
    that each carry the invalid records, so the dead-letter rate has two scrapes to grow in."""
    events = tmp_path / "events.jsonl"
    generate(300, 21, 7, events, tmp_path / "personas.csv")
    lines = events.read_bytes().splitlines()
    half = len(lines) // 2
    waves = []
    for n, part in enumerate((lines[:half], lines[half:])):
        wave = tmp_path / f"wave{n}.jsonl"
        wave.write_bytes(b"\n".join([*part, *INVALID_SAMPLES]) + b"\n")
        waves.append(wave)
    return waves
