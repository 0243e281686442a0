"""HTTP as the tests ask the service's port: status and body, errors included."""

from __future__ import annotations

import urllib.request
from urllib.error import HTTPError


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read()
    except HTTPError as exc:
        return exc.code, exc.read()
