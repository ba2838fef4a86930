"""deploy/: the compose file validates against the Compose Specification JSON schema (vendored
by check-jsonschema), the Kubernetes manifests parse and carry what each kind requires, and
the security properties hold (no unauthenticated exposure, secrets by reference, shared data).
No Docker engine or cluster is needed."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from service.config import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"


def load_all(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


@pytest.fixture(scope="module")
def k8s() -> dict[str, dict[str, Any]]:
    docs = [d for f in sorted((DEPLOY / "k8s").glob("*.yaml")) for d in load_all(f)]
    return {f"{d['kind']}/{d['metadata']['name']}": d for d in docs}


def compose_schema() -> dict[str, Any]:
    pytest.importorskip("check_jsonschema", reason="pip install check-jsonschema==0.39.0")
    ref = resources.files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    return json.loads(ref.read_text())


def test_compose_matches_the_compose_spec(compose):
    jsonschema.validate(compose, compose_schema())
    # and the schema really rejects a broken file (the check is not vacuous)
    broken = {**compose, "services": {"api": {"image": "x", "ports": {"bad": 1}}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, compose_schema())


def test_compose_topology(compose):
    services = compose["services"]
    assert set(services) == {"postgres", "ray-head", "ray-worker", "api"}
    # only the API is published, and only on loopback
    for name, svc in services.items():
        for port in svc.get("ports", []):
            assert name == "api" and str(port).startswith("127.0.0.1:"), (name, port)
    api = services["api"]
    env = api["environment"]
    assert env["PHITUNE_RUNNER"] == "ray-job"
    assert env["PHITUNE_API_TOKEN_FILE"].startswith("/run/secrets/")
    assert env["RAY_AUTH_MODE"] == "token"
    assert "postgresql+psycopg://" in " ".join(api["command"])
    for ray in ("ray-head", "ray-worker"):
        assert services[ray]["environment"]["RAY_AUTH_MODE"] == "token"
        assert "phitune-data:/data" in services[ray]["volumes"]
    assert "phitune-data:/data" in api["volumes"], "Tune storage_path must be shared"
    assert set(compose["secrets"]) == {"api_token", "ray_token", "db_password"}
    assert all("file" in s for s in compose["secrets"].values())


def test_compose_env_names_are_real_settings(compose):
    """A typo in a PHITUNE_* variable would be silently ignored: check them all."""
    fields = set(Settings.model_fields)
    for svc in compose["services"].values():
        for key in svc.get("environment", {}):
            if key.startswith("PHITUNE_"):
                assert key.removeprefix("PHITUNE_").lower() in fields, key


REQUIRED = {
    "Deployment": ["spec.selector.matchLabels", "spec.template.metadata.labels",
                   "spec.template.spec.containers"],
    "Service": ["spec.selector", "spec.ports"],
    "RayCluster": ["spec.headGroupSpec.rayStartParams", "spec.headGroupSpec.template.spec"
                   ".containers", "spec.workerGroupSpecs"],
    "PersistentVolumeClaim": ["spec.accessModes", "spec.resources.requests.storage"],
    "NetworkPolicy": ["spec.podSelector", "spec.ingress"],
}
API_VERSIONS = {"Deployment": "apps/v1", "Service": "v1", "RayCluster": "ray.io/v1",
                "PersistentVolumeClaim": "v1", "NetworkPolicy": "networking.k8s.io/v1"}
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def dig(doc: dict[str, Any], path: str) -> Any:
    node: Any = doc
    for part in path.split("."):
        assert isinstance(node, dict) and part in node, f"missing {path}"
        node = node[part]
    return node


def test_k8s_manifests_have_required_fields(k8s):
    assert {k.split("/")[0] for k in k8s} == set(REQUIRED)
    for key, doc in k8s.items():
        kind = doc["kind"]
        assert doc["apiVersion"] == API_VERSIONS[kind], key
        assert DNS1123.match(doc["metadata"]["name"]), key
        for path in REQUIRED[kind]:
            assert dig(doc, path), (key, path)


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    if doc["kind"] == "Deployment":
        return doc["spec"]["template"]["spec"]["containers"]
    if doc["kind"] == "RayCluster":
        out = list(doc["spec"]["headGroupSpec"]["template"]["spec"]["containers"])
        for group in doc["spec"]["workerGroupSpecs"]:
            out += group["template"]["spec"]["containers"]
        return out
    return []


def test_k8s_containers_are_complete_and_secrets_by_reference(k8s):
    for key, doc in k8s.items():
        for c in containers(doc):
            assert c["name"] and c["image"], key
            assert c["resources"]["limits"] and c["resources"]["requests"], (key, c["name"])
            for env in c.get("env", []):
                assert "value" in env or "valueFrom" in env, (key, env)
                if re.search("TOKEN$|PASSWORD|DATABASE_URL", env["name"]):
                    assert "valueFrom" in env, f"{key}: {env['name']} must come from a Secret"


def test_k8s_api_deployment_wiring(k8s):
    deploy, service = k8s["Deployment/phitune-api"], k8s["Service/phitune-api"]
    labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert deploy["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["type"] == "ClusterIP"
    api = deploy["spec"]["template"]["spec"]["containers"][0]
    assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
    port_names = {p["name"] for p in api["ports"]}
    assert service["spec"]["ports"][0]["targetPort"] in port_names
    env = {e["name"]: e for e in api["env"]}
    fields = set(Settings.model_fields)
    for name in env:
        if name.startswith("PHITUNE_"):
            assert name.removeprefix("PHITUNE_").lower() in fields, name
    mounted = {m["mountPath"] for m in api["volumeMounts"]}
    assert env["PHITUNE_API_TOKEN_FILE"]["value"].rsplit("/", 1)[0] in mounted
    assert env["RAY_AUTH_MODE"]["value"] == "token"
    assert deploy["spec"]["replicas"] == 1, "one reconciler"


def test_raycluster_token_auth_and_shared_storage(k8s):
    cluster = k8s["RayCluster/phitune"]
    claim = k8s["PersistentVolumeClaim/phitune-data"]
    assert "ReadWriteMany" in claim["spec"]["accessModes"]
    for c in containers(cluster):
        env = {e["name"]: e for e in c["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token"
        assert "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"]
        assert any(m["mountPath"] == "/data" for m in c["volumeMounts"])
    head = cluster["spec"]["headGroupSpec"]
    assert head["serviceType"] == "ClusterIP", "never expose the Jobs API outside"
    for group in cluster["spec"]["workerGroupSpecs"]:
        assert group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]
    policy = k8s["NetworkPolicy/phitune-ray-head"]
    assert policy["spec"]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == \
        "ray-head"


def test_dockerfile_runs_unprivileged_and_serves():
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11", text, re.M)
    assert re.search(r"^USER (?!root)\w+", text, re.M)
    assert "EXPOSE 8000" in text and "HEALTHCHECK" in text
    cmd = json.loads(re.search(r"^CMD (\[.*\])$", text, re.M).group(1))
    assert cmd[:2] == ["phitune", "serve"]
