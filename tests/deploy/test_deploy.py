"""The deployment files: Dockerfile, docker-compose.yml and the Kustomize base in deploy/k8s.

No Docker engine or cluster is needed: the files are checked against the Compose Specification
schema and the custom-resource schemas vendored in tests/schemas (README.md there says where they
come from), the Kubernetes schemas bundled with kubernetes-validate, and for the cross-references
that no schema sees (selectors, named ports, settings, users, partitions).
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from stream.settings import is_setting, load_settings

pytestmark = [pytest.mark.deploy, pytest.mark.unit]

ROOT = Path(__file__).resolve().parents[2]
SCHEMAS = ROOT / "tests" / "schemas"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE = ROOT / "docker-compose.yml"
K8S = ROOT / "deploy" / "k8s"

# Created by the operator before `docker compose up` (deploy/compose/README.md), never committed.
OPERATOR_FILES = {ROOT / "deploy" / "compose" / "signing_key"}
# The oldest Kubernetes the base is meant for, and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ("1.29.0", kubernetes_validate.latest_version())
CUSTOM_RESOURCE_SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): "keda.sh_v1alpha1_scaledobject.json",
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_v1_servicemonitor.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com_v1_prometheusrule.json",
}
SEGSTREAM_ENV = re.compile(r"^SEGSTREAM_[A-Z0-9_]+$")
SECRET_ENV = re.compile(r"SIGNING_KEY$|PSEUDONYMIZE_KEY$|PASSWORD|SECRET|TOKEN", re.I)


def _yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    return schema


def _errors(validator: jsonschema.protocols.Validator, instance: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
    ]


def test_known_settings_are_told_from_typos() -> None:
    assert is_setting("SEGSTREAM_KAFKA__BOOTSTRAP_SERVERS")
    assert is_setting("SEGSTREAM_KEY_PREFIX")
    assert is_setting("SEGSTREAM_KAFKA__CONFIG__SECURITY_PROTOCOL")
    assert is_setting("SEGSTREAM_SEGMENTS__SIGNING_KEY_FILE")
    assert not is_setting("SEGSTREAM_KAFKA")
    assert not is_setting("SEGSTREAM_KEY_PREFX")
    assert not is_setting("SEGSTREAM_TOPICS__PARTITIONS__X")
    assert not is_setting("SEGSTREAM_SERVICE_HOST")
    assert not is_setting("SEGSTREAM_PORT_9400_TCP_ADDR")


def _subset(small: Mapping[str, str], big: Mapping[str, str]) -> bool:
    return bool(small) and all(big.get(k) == v for k, v in small.items())


# --------------------------------------------------------------------------------- Dockerfile


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"no {keyword} in the stage FROM {self.base}"
        return found[-1]


def _instructions(text: str) -> Iterator[tuple[str, str]]:
    logical = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not logical and (not line or line.startswith("#")):
            continue
        if logical and line.startswith("#"):
            continue  # a comment inside a continued instruction
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        logical += line
        keyword, _, args = logical.partition(" ")
        yield keyword.upper(), args.strip()
        logical = ""


@cache
def _stages() -> tuple[dict[str, str], list[Stage]]:
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for keyword, rest in _instructions(DOCKERFILE.read_text(encoding="utf-8")):
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            words = rest.split()
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args[m[1] or m[2]], words[0])
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base, name))
        else:
            assert stages, f"{keyword} before the first FROM"
            stages[-1].instructions.append((keyword, rest))
    return args, stages


def _final() -> Stage:
    return _stages()[1][-1]


def _env(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for rest in stage.all("ENV"):
        for word in shlex.split(rest):
            key, _, value = word.partition("=")
            env[key] = value
    return env


def _image_user() -> tuple[int, int]:
    user = _final().last("USER")
    match = re.fullmatch(r"(\d+):(\d+)", user)
    assert match, f"USER {user!r} is not numeric uid:gid (runAsNonRoot cannot check a name)"
    return int(match[1]), int(match[2])


def test_the_image_is_built_in_two_stages_on_python_311_slim() -> None:
    _, stages = _stages()
    assert len(stages) >= 2
    for stage in stages:
        assert stage.base.startswith("python:3.11-slim"), stage.base
    builder, final = stages[0], stages[-1]
    assert builder.name
    copies = [c for c in final.all("COPY") if c.startswith("--from=")]
    assert copies == [f"--from={builder.name} /opt/venv /opt/venv"]


def test_the_final_stage_runs_as_a_numeric_non_root_user() -> None:
    uid, gid = _image_user()
    assert uid >= 1000
    assert gid >= 1000


def test_no_compiler_reaches_the_final_stage() -> None:
    compilers = re.compile(r"\b(gcc|g\+\+|clang|build-essential|make|cmake|cargo|rustc)\b")
    for run in _final().all("RUN"):
        assert not compilers.search(run), run
        assert "apt-get install" not in run, f"the runtime stage installs packages: {run}"


def test_the_final_stage_works_with_a_read_only_root_filesystem() -> None:
    env = _env(_final())
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PYTHONUNBUFFERED"] == "1"
    assert env["MPLCONFIGDIR"].startswith("/tmp/")
    assert env.get("HOME", "/tmp").startswith("/tmp")
    assert "/opt/venv/bin" in env["PATH"].split(":")


def test_entrypoint_command_port_and_healthcheck() -> None:
    final = _final()
    assert json.loads(final.last("ENTRYPOINT")) == ["segstream"]
    assert json.loads(final.last("CMD")) == ["run"]
    assert final.last("EXPOSE").split() == ["9400"]
    health = final.last("HEALTHCHECK")
    options, _, command = health.partition("CMD ")
    assert "--interval=" in options
    assert json.loads(command) == ["segstream", "check"]


def test_the_build_context_leaves_local_state_and_secrets_out() -> None:
    ignored = {
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    for entry in (".git", ".venv", ".demo", ".bench", ".evaluate", "tests", "deploy"):
        assert entry in ignored, entry
    copied = [c.split()[:-1] for c in _stages()[1][0].all("COPY")]
    for sources in copied:
        for source in sources:
            path = source.rstrip("/")
            assert (ROOT / path).exists(), source
            assert path not in ignored, f"{source} is copied but excluded by .dockerignore"


# ----------------------------------------------------------------------------- docker compose


@cache
def _compose() -> dict[str, Any]:
    document: dict[str, Any] = _yaml(COMPOSE)
    return document


def _services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = _compose()["services"]
    return services


def _built_here() -> dict[str, dict[str, Any]]:
    return {name: s for name, s in _services().items() if "build" in s}


def _one_shot(service: Mapping[str, Any]) -> bool:
    return service.get("restart") == "no"


def test_compose_file_matches_the_compose_specification() -> None:
    schema = _schema("compose-spec.json")
    jsonschema.Draft7Validator.check_schema(schema)
    assert _errors(jsonschema.Draft7Validator(schema), _compose()) == []


def test_the_schema_check_catches_a_mistake() -> None:
    broken = json.loads(json.dumps(_compose()))
    broken["services"]["segstream"]["depends_on"]["redis"]["condition"] = "service_ready"
    broken["services"]["redis"]["healthcheck"]["tset"] = ["CMD", "true"]
    errors = _errors(jsonschema.Draft7Validator(_schema("compose-spec.json")), broken)
    assert len(errors) == 2, errors


def test_the_stack_has_its_services() -> None:
    assert {"kafka", "redis", "topics", "segstream", "prometheus", "grafana"} <= set(_services())
    assert _services()["kafka"]["image"].startswith("apache/kafka:")
    assert _services()["redis"]["image"].startswith("redis:7")


def test_every_long_running_service_has_a_healthcheck() -> None:
    for name, service in _services().items():
        if _one_shot(service):
            continue
        check = service.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        assert not check.get("disable"), name
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name


def test_dependencies_wait_for_health_or_success() -> None:
    services = _services()
    for name, service in services.items():
        depends = service.get("depends_on", {})
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions"
        for target, spec in depends.items():
            assert target in services, f"{name} depends on unknown {target}"
            condition = spec["condition"]
            if _one_shot(services[target]):
                assert condition == "service_completed_successfully", (name, target)
            elif "healthcheck" in services[target] and target != "segstream":
                assert condition == "service_healthy", (name, target)
    segstream = services["segstream"]["depends_on"]
    assert segstream["topics"]["condition"] == "service_completed_successfully"
    assert segstream["redis"]["condition"] == "service_healthy"
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_segstream_containers_run_read_only_as_the_image_user() -> None:
    uid, gid = _image_user()
    assert _built_here(), "no service is built from the Dockerfile"
    for name, service in _built_here().items():
        assert service["read_only"] is True, name
        assert service["user"] == f"{uid}:{gid}", name
        assert any(t.split(":")[0] == "/tmp" for t in service["tmpfs"]), name
        assert service.get("cap_drop") == ["ALL"], name


def test_segstream_service_settings(clean_env: pytest.MonkeyPatch) -> None:
    service = _services()["segstream"]
    env = service["environment"]
    assert env["SEGSTREAM_TOPICS__CREATE"] == "false"
    assert env["SEGSTREAM_SEGMENTS__SIGNING_KEY_FILE"] == "/run/secrets/signing_key"
    assert service["secrets"] == ["signing_key"]
    assert service["healthcheck"]["test"][:3] == ["CMD", "segstream", "check"]
    assert service["stop_grace_period"] == "60s"
    assert any(str(p).endswith(":9400") for p in service["ports"])
    for key, value in env.items():
        assert SEGSTREAM_ENV.match(key), key
        assert is_setting(key), f"{key} is no setting"
        assert not (SECRET_ENV.search(key) and not key.endswith("_FILE")), f"{key} in the file"
        if key != "SEGSTREAM_SEGMENTS__SIGNING_KEY_FILE":  # the secret is not mounted here
            clean_env.setenv(key, str(value))
    settings = load_settings()  # the values are valid
    assert settings.redis.url == "redis://redis:6379/0"
    assert settings.kafka.bootstrap_servers == "kafka:9092"


def test_the_signing_key_is_a_secret_file_the_operator_creates() -> None:
    secrets = _compose()["secrets"]
    assert (ROOT / secrets["signing_key"]["file"]).resolve() in OPERATOR_FILES
    assert (ROOT / "deploy" / "compose" / "README.md").is_file()
    assert "signing_key" in (ROOT / "deploy" / "compose" / "README.md").read_text("utf-8")


def test_every_mounted_host_path_exists() -> None:
    for name, service in _services().items():
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
        build = service.get("build")
        if build is not None:
            context = ROOT / (build if isinstance(build, str) else build["context"])
            assert (context / "Dockerfile").is_file(), name
    for secret in _compose().get("secrets", {}).values():
        path = (ROOT / secret["file"]).resolve()
        assert path in OPERATOR_FILES or path.exists(), secret


def test_prometheus_and_grafana_mount_the_observability_config() -> None:
    prometheus = _services()["prometheus"]
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert (ROOT / "deploy" / "prometheus" / "prometheus.yml").is_file()
    grafana = _services()["grafana"]["volumes"]
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana
    assert "./deploy/grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana


def test_the_init_service_creates_the_topics_segstream_uses() -> None:
    env = _services()["segstream"]["environment"]
    script = " ".join(_services()["topics"]["command"]).replace("\\\n", " ")
    created = {}
    for call in script.split("kafka-topics.sh")[1:]:
        words = shlex.split(call)
        if "--create" in words:
            assert "--if-not-exists" in words
            created[words[words.index("--topic") + 1]] = int(words[words.index("--partitions") + 1])
    partitions = int(env["SEGSTREAM_TOPICS__PARTITIONS"])
    assert created == {
        env["SEGSTREAM_TOPICS__EVENTS"]: partitions,
        env["SEGSTREAM_TOPICS__SEGMENTS"]: partitions,
        env["SEGSTREAM_TOPICS__DLQ"]: partitions,
    }


# -------------------------------------------------------------------------------- Kubernetes


@cache
def _kustomization() -> dict[str, Any]:
    document: dict[str, Any] = _yaml(K8S / "kustomization.yaml")
    return document


def _apply_labels(doc: dict[str, Any], pairs: Mapping[str, str], selectors: bool) -> None:
    """Kustomize's `labels` transformer, for the kinds of this base."""
    doc.setdefault("metadata", {}).setdefault("labels", {}).update(pairs)
    if not selectors:
        return
    spec = doc.get("spec", {})
    if doc["kind"] == "Service":
        spec.setdefault("selector", {}).update(pairs)
    if doc["kind"] in ("Deployment", "PodDisruptionBudget"):
        spec.setdefault("selector", {}).setdefault("matchLabels", {}).update(pairs)
    if doc["kind"] == "Deployment":
        spec["template"].setdefault("metadata", {}).setdefault("labels", {}).update(pairs)


def _apply_images(doc: dict[str, Any], images: list[dict[str, str]]) -> None:
    if doc["kind"] != "Deployment":
        return
    for container in doc["spec"]["template"]["spec"]["containers"]:
        name = container["image"].split(":")[0]
        for image in images:
            if image["name"] == name:
                new = image.get("newName", name)
                container["image"] = f"{new}:{image['newTag']}" if "newTag" in image else new


@cache
def _rendered() -> tuple[tuple[str, dict[str, Any]], ...]:
    kustomization = _kustomization()
    out = []
    for resource in kustomization["resources"]:
        for doc in yaml.safe_load_all((K8S / resource).read_text(encoding="utf-8")):
            if doc is None:
                continue
            for rule in kustomization.get("labels", []):
                _apply_labels(doc, rule["pairs"], rule.get("includeSelectors", False))
            _apply_images(doc, kustomization.get("images", []))
            out.append((resource, doc))
    return tuple(out)


def _one(kind: str) -> dict[str, Any]:
    found = [doc for _, doc in _rendered() if doc["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind}s"
    return found[0]


def _config() -> dict[str, str]:
    data: dict[str, str] = _one("ConfigMap")["data"]
    return data


def _pod() -> dict[str, Any]:
    pod: dict[str, Any] = _one("Deployment")["spec"]["template"]
    return pod


def _container() -> dict[str, Any]:
    containers = _pod()["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def test_the_kustomization_lists_exactly_the_manifests() -> None:
    kustomization = _kustomization()
    assert kustomization["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
    assert kustomization["kind"] == "Kustomization"
    resources = kustomization["resources"]
    assert len(resources) == len(set(resources))
    on_disk = {p.name for p in K8S.glob("*.yaml")} | {p.name for p in K8S.glob("*.yml")}
    assert set(resources) == on_disk - {"kustomization.yaml"}
    assert "prometheusrule.yaml" in resources
    pairs = {k: v for rule in kustomization["labels"] for k, v in rule["pairs"].items()}
    assert pairs["app.kubernetes.io/name"] == "segstream"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_built_in_resources_match_the_kubernetes_schemas(version: str) -> None:
    checked = set()
    for resource, doc in _rendered():
        if (doc["apiVersion"], doc["kind"]) in CUSTOM_RESOURCE_SCHEMAS:
            continue
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = "/".join(map(str, exc.path))
            pytest.fail(f"{resource}: {doc['kind']} {where}: {exc.message} (Kubernetes {version})")
        checked.add(doc["kind"])
    assert checked == {"ConfigMap", "Deployment", "Service", "PodDisruptionBudget"}


def test_custom_resources_match_their_crd_schemas() -> None:
    checked = set()
    for resource, doc in _rendered():
        name = CUSTOM_RESOURCE_SCHEMAS.get((doc["apiVersion"], doc["kind"]))
        if name is None:
            continue
        validator = jsonschema.Draft202012Validator(_schema(name))
        assert _errors(validator, doc) == [], resource
        checked.add(doc["kind"])
    assert checked == {"ScaledObject", "ServiceMonitor", "PrometheusRule"}


@pytest.mark.parametrize(
    ("kind", "path", "value"),
    [
        ("Deployment", ("spec", "template", "spec", "enableServiceLink"), False),
        ("ScaledObject", ("spec", "maxReplicas"), 6),
        ("ServiceMonitor", ("spec", "endpoints", 0, "interval"), "15 seconds"),
    ],
)
def test_the_schema_checks_catch_mistakes(kind: str, path: tuple[Any, ...], value: Any) -> None:
    doc = json.loads(json.dumps(_one(kind)))
    target = doc
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    schema = CUSTOM_RESOURCE_SCHEMAS.get((doc["apiVersion"], kind))
    if schema is None:
        with pytest.raises(kubernetes_validate.ValidationError):
            kubernetes_validate.validate(doc, KUBERNETES_VERSIONS[-1], strict=True)
    else:
        assert _errors(jsonschema.Draft202012Validator(_schema(schema)), doc)


def test_every_resource_carries_the_app_label() -> None:
    for resource, doc in _rendered():
        assert doc["metadata"]["labels"]["app.kubernetes.io/name"] == "segstream", resource


def test_service_links_are_off() -> None:
    # Service links would put SEGSTREAM_SERVICE_HOST & co. into the settings' namespace.
    assert not is_setting("SEGSTREAM_SERVICE_HOST")  # harmless today, and kept out anyway
    assert _pod()["spec"]["enableServiceLinks"] is False


def test_the_pod_is_hardened() -> None:
    uid, gid = _image_user()
    pod = _pod()["spec"]
    container = _container()
    pod_context = pod.get("securityContext", {})
    context = {**pod_context, **container["securityContext"]}
    assert context["runAsNonRoot"] is True
    assert context["runAsUser"] == uid
    assert context["runAsGroup"] == gid
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"]["drop"] == ["ALL"]
    assert context["seccompProfile"]["type"] == "RuntimeDefault"
    assert container["securityContext"].get("privileged", False) is False
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert pod["terminationGracePeriodSeconds"] == 60
    for key in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][key]), key


def test_the_image_is_tagged() -> None:
    image = _container()["image"]
    assert re.fullmatch(r"[\w./-]+:[\w.-]+", image), image
    assert not image.endswith(":latest")


def test_probes_use_the_named_metrics_port() -> None:
    container = _container()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": int(_config()["SEGSTREAM_METRICS__PORT"])}
    assert ports["metrics"] == 9400
    expected = {
        "livenessProbe": "/healthz",
        "readinessProbe": "/readyz",
        "startupProbe": "/healthz",
    }
    for probe, path in expected.items():
        if probe == "startupProbe" and probe not in container:
            continue
        assert container[probe]["httpGet"] == {"path": path, "port": "metrics"}, probe
    liveness = container["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= 60


def test_settings_come_from_the_configmap_and_the_secret(clean_env: pytest.MonkeyPatch) -> None:
    container = _container()
    config = _one("ConfigMap")
    assert container["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
    env = {e["name"]: e for e in container["env"]}
    signing = env["SEGSTREAM_SEGMENTS__SIGNING_KEY"]
    assert signing["valueFrom"]["secretKeyRef"] == {"name": "segstream", "key": "signing-key"}
    for name, entry in env.items():
        assert is_setting(name), f"{name} is no setting"
        assert "value" not in entry or not SECRET_ENV.search(name), name
    for key, value in config["data"].items():
        assert SEGSTREAM_ENV.match(key), key
        assert is_setting(key), f"{key} is no setting"
        assert not SECRET_ENV.search(key), f"{key} belongs in the Secret"
        clean_env.setenv(key, value)
    settings = load_settings()  # the values are valid
    assert settings.topics.create is False
    assert settings.metrics.port == 9400


def test_the_service_and_the_service_monitor_select_the_pods() -> None:
    pod_labels = _pod()["metadata"]["labels"]
    service = _one("Service")
    assert service["spec"]["type"] == "ClusterIP"
    assert _subset(service["spec"]["selector"], pod_labels)
    assert service["spec"]["ports"] == [
        {"name": "metrics", "port": 9400, "targetPort": "metrics", "protocol": "TCP"}
    ]
    monitor = _one("ServiceMonitor")["spec"]
    assert _subset(monitor["selector"]["matchLabels"], service["metadata"]["labels"])
    assert [(e["port"], e["path"], e["interval"]) for e in monitor["endpoints"]] == [
        ("metrics", "/metrics", "15s")
    ]


def test_the_deployment_selector_pdb_and_scaled_object_fit_together() -> None:
    deployment = _one("Deployment")
    selector = deployment["spec"]["selector"]["matchLabels"]
    pod_labels = _pod()["metadata"]["labels"]
    assert _subset(selector, pod_labels)
    pdb = _one("PodDisruptionBudget")["spec"]
    assert pdb["selector"]["matchLabels"] == selector
    assert pdb.get("maxUnavailable") == 1
    spread = _pod()["spec"].get("topologySpreadConstraints", [])
    for constraint in spread:
        assert _subset(constraint["labelSelector"]["matchLabels"], pod_labels)
    target = _one("ScaledObject")["spec"]["scaleTargetRef"]
    assert target == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": deployment["metadata"]["name"],
    }


def test_the_scaled_object_never_outnumbers_the_partitions() -> None:
    config = _config()
    spec = _one("ScaledObject")["spec"]
    partitions = int(config["SEGSTREAM_TOPICS__PARTITIONS"])
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"] <= partitions
    assert _one("Deployment")["spec"]["replicas"] <= spec["maxReplicaCount"]
    [trigger] = spec["triggers"]
    assert trigger["type"] == "kafka"
    metadata = trigger["metadata"]
    assert metadata["bootstrapServers"] == config["SEGSTREAM_KAFKA__BOOTSTRAP_SERVERS"]
    assert metadata["consumerGroup"] == config["SEGSTREAM_KAFKA__GROUP_ID"]
    assert metadata["topic"] == config["SEGSTREAM_TOPICS__EVENTS"]
    assert int(metadata["lagThreshold"]) > 0
    assert metadata["allowIdleConsumers"] == "false"


def test_kubernetes_and_compose_agree_on_the_settings() -> None:
    compose = _services()["segstream"]["environment"]
    same = (
        "SEGSTREAM_TOPICS__EVENTS",
        "SEGSTREAM_TOPICS__SEGMENTS",
        "SEGSTREAM_TOPICS__DLQ",
        "SEGSTREAM_TOPICS__PARTITIONS",
        "SEGSTREAM_TOPICS__CREATE",
        "SEGSTREAM_KAFKA__GROUP_ID",
        "SEGSTREAM_KEY_PREFIX",
        "SEGSTREAM_METRICS__PORT",
    )
    assert {k: str(compose[k]) for k in same} == {k: _config()[k] for k in same}
