"""The README's examples are the ones the tests run: each runnable block of "Using the segments
from another service" is, verbatim, a `# README example` constant of an end-to-end test."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.stream.service.test_audiences_e2e import AUDIENCE_EXAMPLE, CONSUMER_EXAMPLE
from tests.stream.service.test_read_e2e import CURL_EXAMPLE, PYTHON_EXAMPLE

pytestmark = pytest.mark.unit

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION = "## Using the segments from another service"


def test_every_example_of_the_section_is_run_by_a_test() -> None:
    text = README.read_text()
    start = text.index(SECTION)
    section = text[start : text.index("\n## ", start + 1)]
    blocks = re.findall(r"```(?:python|sh)\n(.*?)```", section, flags=re.DOTALL)
    run = {AUDIENCE_EXAMPLE, CONSUMER_EXAMPLE, CURL_EXAMPLE, PYTHON_EXAMPLE}
    assert sorted(blocks) == sorted(run)
