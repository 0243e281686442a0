"""The latest model inputs of recently scored users: what the centres are refit on.

Users are scored when they act, so the trainer's samples over-represent the busiest users and
describe each user as they were at that moment. Clusters are judged per user, as they are now;
so the trainer keeps, for up to `size` users, only their most recent inputs, and refits the
centres on that population. Users are kept under a 32-bit hash of their id (no ids), and the
least recently sampled user makes room for a new one.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt


class Population:
    def __init__(self, size: int, width: int) -> None:
        self._rows = np.zeros((size, width), dtype=np.float32)
        self._slots: OrderedDict[int, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._slots)

    def add(self, user: str, inputs: Sequence[float]) -> None:
        key = zlib.crc32(user.encode())
        slot = self._slots.get(key)
        if slot is not None:
            self._slots.move_to_end(key)
        elif len(self._slots) < len(self._rows):
            slot = self._slots[key] = len(self._slots)
        else:
            _, slot = self._slots.popitem(last=False)
            self._slots[key] = slot
        self._rows[slot] = inputs

    def matrix(self) -> npt.NDArray[np.float64]:
        """(users, width) inputs, in no particular order."""
        return self._rows[: len(self._slots)].astype(np.float64)
