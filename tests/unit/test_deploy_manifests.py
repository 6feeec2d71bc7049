"""deploy/ cannot run here, so it is validated offline: every Kubernetes manifest against the
Kubernetes JSON schemas shipped in the `kubernetes-validate` package (strict: unknown fields
fail), the compose file against the compose-spec schema vendored in `check-jsonschema`
(`check_jsonschema/builtin_schemas/vendor/compose-spec.json`, from compose-spec/compose-spec),
and the ConfigMap's warden.yaml against Warden's own configuration model."""

from __future__ import annotations

import copy
import json
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from warden.config import load_config

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
KUBERNETES_VERSION = "1.30"


def _manifests() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc is not None:
                found.append((f"{path.name}:{doc['kind']}/{doc['metadata']['name']}", doc))
    return found


MANIFESTS = _manifests()


def _compose_validator() -> jsonschema.protocols.Validator:
    text = (
        resources.files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
    )
    schema = json.loads(text)
    return jsonschema.validators.validator_for(schema)(schema)


def test_the_expected_kubernetes_objects_are_there() -> None:
    kinds = {name.split(":")[1].split("/")[0] for name, _ in MANIFESTS}
    assert {"Deployment", "Service", "ConfigMap", "Secret", "HorizontalPodAutoscaler"} <= kinds


@pytest.mark.parametrize(("name", "manifest"), MANIFESTS, ids=[n for n, _ in MANIFESTS])
def test_kubernetes_manifest_matches_the_kubernetes_schema(name: str, manifest: dict[str, Any]) -> None:
    kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


def test_the_kubernetes_schema_check_rejects_a_misspelt_field() -> None:
    deployment = copy.deepcopy(next(m for _, m in MANIFESTS if m["kind"] == "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_deployments_probe_healthz_and_readyz() -> None:
    for _, manifest in MANIFESTS:
        if manifest["kind"] != "Deployment":
            continue
        container = manifest["spec"]["template"]["spec"]["containers"][0]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_the_worker_autoscaler_follows_the_queue_depth_metric() -> None:
    hpa = next(m for n, m in MANIFESTS if n.endswith("HorizontalPodAutoscaler/warden-worker"))
    metric = hpa["spec"]["metrics"][0]["external"]["metric"]
    assert metric == {"name": "warden_queue_depth", "selector": {"matchLabels": {"status": "queued"}}}


def test_the_configmaps_warden_yaml_is_a_valid_configuration(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    configmap = next(m for _, m in MANIFESTS if m["kind"] == "ConfigMap")
    path = tmp_path / "warden.yaml"
    path.write_text(configmap["data"]["warden.yaml"], encoding="utf-8")
    for name in ("WARDEN_CONFIG", "WARDEN_DATABASE_URL", "WARDEN_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    config = load_config(path)
    assert config.telemetry.metrics_token_env == "WARDEN_METRICS_TOKEN"
    assert config.telemetry.worker_port == 9090
    assert config.retention.tasks == 90 * 86400


def test_compose_file_matches_the_compose_spec() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text(encoding="utf-8"))
    _compose_validator().validate(compose)
    assert compose["services"]["api"]["deploy"]["replicas"] == 2
    assert compose["services"]["worker"]["deploy"]["replicas"] == 3
    assert {"postgres", "redis"} <= set(compose["services"])


def test_the_compose_schema_check_rejects_a_misspelt_key() -> None:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text(encoding="utf-8"))
    compose["services"]["api"]["restart_policy"] = "always"
    with pytest.raises(jsonschema.ValidationError):
        _compose_validator().validate(compose)
