"""What shapes a model, so that a model is never used with settings it was not built for.

A model's inputs follow the feature list and the windows, its centres the clusterer and K, its
weights the classifier; its pickles follow the river and numpy versions. The fingerprint records
them; an instance whose fingerprint differs from the stored model's must not load it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib.metadata import version
from typing import Final

import numpy as np

from features.definitions import Window
from segments.config import SegmentConfig

# Settings compared as they are; library versions by the part that keeps pickles readable.
SETTINGS: Final = ("features", "windows", "k", "clusterer", "classifier")
VERSION_PARTS: Final = {"river": 2, "numpy": 1}


def fingerprint(config: SegmentConfig, windows: Sequence[Window]) -> dict[str, str]:
    return {
        "features": ",".join(config.features),
        "windows": ",".join(w.name for w in windows),
        "k": str(config.k),
        "clusterer": config.clusterer,
        "classifier": config.classifier,
        "river": version("river"),
        "numpy": np.__version__,
    }


def differences(stored: Mapping[str, str], ours: Mapping[str, str]) -> list[str]:
    """The fingerprint entries in which `ours` cannot use a model built with `stored`."""
    found = [name for name in SETTINGS if stored.get(name) != ours.get(name)]
    for library, parts in VERSION_PARTS.items():
        if _leading(stored.get(library, ""), parts) != _leading(ours.get(library, ""), parts):
            found.append(library)
    return found


def _leading(version: str, parts: int) -> list[str]:
    return version.split(".")[:parts]
