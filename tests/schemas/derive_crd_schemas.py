"""Regenerate the vendored JSON schemas of ScaledObject, ServiceMonitor and PrometheusRule.

Not run by the tests (they read the JSON files next to this script). In a scratch virtualenv:

    pip install cloudcoil-models-keda==2.16.1.0 cloudcoil-models-prometheus-operator==0.80.1.0
    python tests/schemas/derive_crd_schemas.py tests/schemas

The cloudcoil models are pydantic classes generated from the CRDs' openAPIV3Schema. Their JSON
schema is made strict the way kubeconform's strict mode is: unknown fields are errors
(`additionalProperties: false` wherever properties are declared), `null` is not a value, and the
one Go-style inline regex flag (`^(?i)...`) is moved to the front, where Python's `re` wants it.
"""

from __future__ import annotations

import json
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

from cloudcoil.models.keda.v1alpha1 import ScaledObject  # type: ignore[import-not-found]
from cloudcoil.models.prometheus_operator.v1 import (  # type: ignore[import-not-found]
    PrometheusRule,
    ServiceMonitor,
)

_NULL = {"type": "null"}
_GO_FLAG = "^(?i)"


def strict(node: Any) -> Any:
    if isinstance(node, list):
        return [strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    any_of = node.get("anyOf")
    if isinstance(any_of, list) and _NULL in any_of:
        rest = [s for s in any_of if s != _NULL]
        node = {k: v for k, v in node.items() if k != "anyOf"}
        if len(rest) == 1:
            node.update(rest[0])
        else:
            node["anyOf"] = rest
    # Generated titles and null defaults say nothing about validity.
    node = {
        k: strict(v)
        for k, v in node.items()
        if k not in ("title", "default") or not isinstance(v, str | None)
    }
    pattern = node.get("pattern")
    if isinstance(pattern, str) and pattern.startswith(_GO_FLAG):
        node["pattern"] = "(?i)^" + pattern[len(_GO_FLAG) :]
    if node.get("properties") and "additionalProperties" not in node:
        node["additionalProperties"] = False
    return node


def main(out: Path) -> None:
    models = [
        (ScaledObject, "cloudcoil.models.keda", "keda.sh_v1alpha1_scaledobject.json"),
        (
            ServiceMonitor,
            "cloudcoil.models.prometheus_operator",
            "monitoring.coreos.com_v1_servicemonitor.json",
        ),
        (
            PrometheusRule,
            "cloudcoil.models.prometheus_operator",
            "monitoring.coreos.com_v1_prometheusrule.json",
        ),
    ]
    for model, dist, name in models:
        schema = strict(model.model_json_schema(by_alias=True, mode="validation"))
        schema["required"] = ["apiVersion", "kind", "metadata", "spec"]
        document = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$comment": (
                f"Derived from {dist} {version(dist)} (PyPI, Apache-2.0) by "
                "derive_crd_schemas.py: pydantic model_json_schema, made strict; see README.md"
            ),
            **schema,
        }
        text = json.dumps(document, indent=1, sort_keys=True) + "\n"
        (out / name).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
