"""A one-line progress display on a terminal; silent when stderr is not one (CI, pipes)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO


class Progress:
    def __init__(
        self,
        label: str,
        total: int | None = None,
        done: Callable[[], int] | None = None,
        stream: TextIO = sys.stderr,
    ) -> None:
        self._label = label
        self._total = total
        self._done = done
        self._stream = stream
        self._enabled = stream.isatty()
        self._started = time.monotonic()
        self._shown = 0.0

    def __call__(self, count: int) -> None:
        now = time.monotonic()
        if not self._enabled or now - self._shown < 0.2:
            return
        self._shown = now
        rate = count / max(now - self._started, 1e-9)
        line = f"\r{self._label}: {count:,} ({rate:,.0f}/s)"
        if self._total and self._done is not None:
            fraction = min(self._done() / self._total, 1.0)
            filled = int(fraction * 30)
            line += f" [{'#' * filled}{'.' * (30 - filled)}] {fraction:4.0%}"
        self._stream.write(line)
        self._stream.flush()

    def close(self) -> None:
        if self._enabled:
            self._stream.write("\n")
            self._stream.flush()
