"""`segstream check`: ask a running service's health endpoint, for probes that want an exit code."""

from __future__ import annotations

import http.client
from typing import Any

import orjson


def probe(host: str, port: int, *, ready: bool, timeout_s: float) -> tuple[bool, dict[str, Any]]:
    """(ok, answer) from /readyz or /healthz; an unreachable service is not ok."""
    path = "/readyz" if ready else "/healthz"
    if not port:
        return False, {"ok": False, "error": "metrics port is 0: the service serves no probes"}
    connection = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
    except OSError as exc:
        return False, {"ok": False, "error": f"no answer from http://{host}:{port}{path}: {exc}"}
    finally:
        connection.close()
    try:
        answer = orjson.loads(body)
    except orjson.JSONDecodeError:
        answer = {"body": body.decode(errors="replace")}
    return response.status == 200, {"status": response.status, **answer}
