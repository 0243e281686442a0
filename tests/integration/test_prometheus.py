"""A real Prometheus scrapes a real demo run; every dashboard panel's query returns data.

Grafana asks Prometheus range queries over the dashboard's time window; the test asks the same
queries over the window of the run, after it ended, so nothing depends on catching the service
mid-run. Rates use a 10 s window: the scrape interval here is 1 s.
"""

from __future__ import annotations

import math
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from stream.localstack import free_port
from stream.settings import Settings
from tests.dashboard import panel_queries
from tests.integration.test_cli import env_for, segstream

pytestmark = pytest.mark.integration

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


def test_every_dashboard_panel_has_data_from_a_demo_run(
    settings: Settings, prometheus: tuple[Prometheus, int], tmp_path: Path
) -> None:
    server, target = prometheus
    env = {
        **env_for(settings),
        "SEGSTREAM_METRICS__PORT": str(target),
        "SEGSTREAM_METRICS__HOST": "127.0.0.1",
    }
    started = time.time()
    demo = subprocess.run(
        segstream("demo", "--users", "300", "--days", "21", "--workdir", str(tmp_path / "demo")),
        env=env, capture_output=True, timeout=400, check=False,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stderr.decode()[-3000:]
    assert f"http://localhost:{target}/metrics" in demo.stdout.decode()
    ended = time.time()

    scraped = server.range_query('up{job="segstream"} == 1', started, ended)
    assert scraped, "prometheus never scraped the demo's service"
    # The check below can fail: a series the service never exposed has no data.
    assert not server.range_query("segstream_no_such_metric", started, ended)
    empty = []
    for title, expr in panel_queries(rate_interval="10s"):
        series = server.range_query(expr, started, ended)
        values = [float(v) for s in series for _, v in s["values"]]
        if not any(not math.isnan(v) for v in values):
            empty.append((title, expr))
    assert not empty, f"{len(empty)} panel queries returned no data: {empty}"
