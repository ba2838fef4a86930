"""Bad specs are refused with 422 naming the field, before anything is stored or launched."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.api.main import create_app
from service.config import Settings
from tuning.specs import SearchSpace, StudySpec, TrainConfig

VALID: dict[str, Any] = {
    "model": "mlp",
    "dataset": "digits",
    "budget": {"steps": 100},
    "num_trials": 4,
}

#: Without a token the API answers only to loopback Host names (DNS-rebinding guard).
LOOPBACK = "http://127.0.0.1"


@pytest.fixture()
def client(tmp_path):
    settings = Settings(data_dir=tmp_path, max_trials=10, max_budget_steps=100_000, ray_num_cpus=2)
    with TestClient(create_app(settings), base_url=LOOPBACK) as c:
        yield c


def with_change(path: str, value: Any) -> dict[str, Any]:
    spec = copy.deepcopy(VALID)
    *parents, leaf = path.split(".")
    node = spec
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
    return spec


BAD_SPECS = [
    ("model", with_change("model", "no-such-model"), "model"),
    ("dataset", with_change("dataset", "imagenet-from-the-internet"), "dataset"),
    ("phi min zero", with_change("search.phi", {"min": 0, "max": 10}), "min"),
    ("phi min negative", with_change("search.phi", {"min": -1, "max": 10}), "min"),
    ("phi min > max", with_change("search.phi", {"min": 20, "max": 10}), "phi"),
    ("phases < 1", with_change("search.phases", {"min": 0, "max": 2}), "min"),
    ("phases min > max", with_change("search.phases", {"min": 3, "max": 2}), "phases"),
    ("zero budget", with_change("budget", {"steps": 0}), "steps"),
    ("negative budget", with_change("budget", {"steps": -5}), "steps"),
    ("negative epochs", with_change("budget", {"epochs": -1.0}), "epochs"),
    ("no budget", with_change("budget", {}), "budget"),
    ("both budgets", with_change("budget", {"steps": 10, "epochs": 1}), "budget"),
    ("fraction > 1", with_change("budget", {"steps": 10, "fractions": [0.5, 1.5]}), "fractions"),
    ("fraction dup", with_change("budget", {"steps": 10, "fractions": [0.5, 0.5]}), "fractions"),
    ("fraction to zero steps", with_change("budget", {"steps": 10, "fractions": [0.01, 1]}),
     "fractions"),
    ("num_trials zero", with_change("num_trials", 0), "num_trials"),
    ("num_trials above cap", with_change("num_trials", 11), "num_trials"),
    ("budget above cap", with_change("budget", {"steps": 100_001}), "budget"),
    ("unknown field", with_change("learning_rate_please", 3), "learning_rate_please"),
    ("unknown nested field", with_change("optimizer.betas", [0.9, 0.99]), "betas"),
    ("optimizer name", with_change("optimizer.name", "lion"), "name"),
    ("negative lr", with_change("optimizer.lr", -0.1), "lr"),
    ("negative gpu", with_change("resources.gpu", -1), "gpu"),
    ("more gpus than the machine", with_change("resources.gpu", 16), "resources.gpu"),
    ("more cpus than the machine", with_change("resources.cpu", 64), "resources.cpu"),
    ("unknown baseline", with_change("compare", ["cosine", "sgdr"]), "compare"),
    ("too many seeds", with_change("seeds", 11), "seeds"),
    ("bad baseline eta_max", with_change("compare_eta_max", [0.1, -1]), "compare_eta_max"),
]


@pytest.mark.parametrize(("case", "spec", "field"), BAD_SPECS, ids=[c[0] for c in BAD_SPECS])
def test_bad_spec_is_422_naming_the_field(client, case, spec, field):
    response = client.post("/v1/studies", json=spec)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail, "a 422 must say what is wrong"
    text = str(detail)
    assert field in text, f"{case}: message does not name {field!r}: {text}"
    # nothing was stored
    assert client.get("/v1/studies").json()["count"] == 0


def test_unknown_name_lists_valid_choices(client):
    response = client.post("/v1/studies", json=with_change("model", "resnet9000"))
    msg = response.json()["detail"][0]["msg"]
    assert "mlp" in msg and "resnet9000" in msg


def test_unknown_study_is_404(client):
    for path in ("", "/trials", "/best", "/result"):
        response = client.get(f"/v1/studies/does-not-exist{path}")
        assert response.status_code == 404, path
        assert "does-not-exist" in response.json()["detail"]
    assert client.delete("/v1/studies/does-not-exist").status_code == 404


def test_health_and_ready(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json()["store"] == "ok"


# The same bounds hold in `tuning` (ValueError) and in the schema (422): one table, both layers.
BOUNDS = [
    ({"phi_min": 0.0}, {"search": {"phi": {"min": 0.0, "max": 5}}}),
    ({"phi_min": -1.0}, {"search": {"phi": {"min": -1.0, "max": 5}}}),
    ({"phi_min": 10.0, "phi_max": 5.0}, {"search": {"phi": {"min": 10.0, "max": 5}}}),
    ({"phases_min": 0}, {"search": {"phases": {"min": 0, "max": 2}}}),
    ({"phases_min": 3, "phases_max": 2}, {"search": {"phases": {"min": 3, "max": 2}}}),
]


@pytest.mark.parametrize(("space_kwargs", "schema_patch"), BOUNDS)
def test_bounds_agree_between_schema_and_tuning(client, space_kwargs, schema_patch):
    with pytest.raises(ValueError):
        SearchSpace(**space_kwargs)
    spec = {**copy.deepcopy(VALID), **schema_patch}
    assert client.post("/v1/studies", json=spec).status_code == 422


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"total_steps": 0}, "total_steps"),
    ({"num_trials": 0}, "num_trials"),
    ({"budget_fractions": (0.5, 0.5)}, "duplicates"),
    ({"budget_fractions": (0.0, 1.0)}, "outside"),
    ({"total_steps": 10, "budget_fractions": (0.01, 1.0)}, "zero steps"),
])
def test_study_spec_rejects(kwargs, message):
    base = {"study_id": "s", "train": TrainConfig(model="mlp", dataset="digits"), "total_steps": 100}
    with pytest.raises(ValueError, match=message):
        StudySpec(**{**base, **kwargs})
