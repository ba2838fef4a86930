"""Hostile input against a real server (uvicorn, the real app and store, real files): no file
outside the data roots, no code from a data file, no huge model, no 5xx on hostile JSON, no
DNS rebinding into the token-less mode, the bind check on the address really bound.

Every request here is refused before a driver could start (422/413/400), so no Ray runs."""

from __future__ import annotations

import json
import os
import pickle
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from service.api.auth import listening_socket
from service.cli.demo import _stop, start_api

TOKEN = "hardening-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SPEC: dict[str, Any] = {"model": "mlp", "dataset": "digits", "budget": {"steps": 20},
                        "num_trials": 1}
CURVATURE: dict[str, Any] = {"model": "mlp", "dataset": "digits", "num_batches": 1,
                             "batch_size": 16, "lanczos_steps": 4, "num_probes": 1}


class _RunsCode:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _cifar10(root: Path, payload: Any = None) -> None:
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for i, name in enumerate(names):
        batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}
        (d / name).write_bytes(pickle.dumps(payload if payload is not None and i == 2 else batch,
                                            protocol=2))


@pytest.fixture(scope="module")
def api(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    data_dir = tmp_path_factory.mktemp("hardening")
    roots = data_dir / "roots"
    roots.mkdir()
    env = {"PHITUNE_API_TOKEN": TOKEN, "PHITUNE_RECONCILE_INTERVAL_S": "0",
           "PHITUNE_LOCAL_RAY": "per-study", "PHITUNE_DATA_ROOTS": str(roots),
           "PHITUNE_MAX_MODEL_PARAMS": "1000000"}
    proc, url = start_api(data_dir, None, data_dir / "api.log", extra_env=env)
    try:
        yield url, roots
    finally:
        _stop(proc)


def post(url: str, path: str, body: Any = None, *, content: bytes | None = None,
         headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(url + path, json=body if content is None else None, content=content,
                      headers={**AUTH, **({"content-type": "application/json"}
                                          if content is not None else {}), **(headers or {})},
                      timeout=60)


def assert_refused(response: httpx.Response, status: int, field: str | None = None) -> str:
    """``status`` with a JSON message (naming ``field``); returns the message."""
    assert response.status_code == status, response.text[:500]
    detail = response.json()["detail"]
    text = json.dumps(detail)
    if field is not None:
        assert field in text, text
    return text


def test_text_path_outside_the_roots_is_422(api):
    url, _ = api
    spec = {**SPEC, "model": "transformer_lm", "dataset": "text",
            "dataset_kwargs": {"path": "/etc/passwd"}}
    msg = assert_refused(post(url, "/v1/studies", spec), 422, "dataset_kwargs.path")
    assert "outside the allowed data roots" in msg and "root:x" not in msg
    spec["dataset_kwargs"] = {"path": "../../../etc/passwd"}
    assert_refused(post(url, "/v1/studies", spec), 422, "dataset_kwargs.path")
    spec["dataset_kwargs"] = {"data_dir": "/etc"}
    assert_refused(post(url, "/v1/studies", spec), 422, "dataset_kwargs.data_dir")


def test_symlink_inside_a_root_pointing_outside_is_422(api, tmp_path):
    url, roots = api
    (roots / "escape").symlink_to("/etc")
    spec = {**SPEC, "model": "transformer_lm", "dataset": "text",
            "dataset_kwargs": {"path": str(roots / "escape" / "passwd")}}
    assert_refused(post(url, "/v1/studies", spec), 422, "dataset_kwargs.path")


def test_crafted_cifar_pickle_is_422_and_runs_nothing(api, tmp_path):
    url, roots = api
    marker = tmp_path / "pwned"
    inside = roots / "cifar-evil"
    _cifar10(inside, {b"data": _RunsCode(marker)})
    for path, body in (("/v1/studies", {**SPEC, "dataset": "cifar10", "batch_size": 2}),
                       ("/v1/curvature", {**CURVATURE, "dataset": "cifar10", "batch_size": 2})):
        body["dataset_kwargs"] = {"root": str(inside)}
        msg = assert_refused(post(url, path, body), 422, "dataset_kwargs")
        assert "posix.system" in msg or "system" in msg
        outside = tmp_path / "cifar-outside"
        if not outside.exists():
            _cifar10(outside, {b"data": _RunsCode(marker)})
        body["dataset_kwargs"] = {"root": str(outside)}
        assert_refused(post(url, path, body), 422, "dataset_kwargs.root")
    assert not marker.exists()


def test_oversized_model_is_422(api):
    url, _ = api
    spec = {**SPEC, "model_kwargs": {"hidden_sizes": [100_000] * 3}}
    msg = assert_refused(post(url, "/v1/studies", spec), 422, "model_kwargs")
    assert "PHITUNE_MAX_MODEL_PARAMS" in msg
    body = {**CURVATURE, "model_kwargs": {"hidden_sizes": [16_000, 16_000]}}
    assert_refused(post(url, "/v1/curvature", body), 422, "model_kwargs")


@pytest.mark.parametrize(("change", "field"), [
    ({"seed": 2**32}, "seed"),
    ({"seed": -1}, "seed"),
    ({"resources": {"cpu": 0, "gpu": 0}}, "resources"),
    ({"batch_size": 5000}, "batch_size"),
    ({"eta_min": 0.5}, "eta_min"),
    ({"eta_min": "Infinity"}, "eta_min"),
    ({"target": "nan"}, "target"),
])
def test_ranges_the_driver_enforces_are_422(api, change, field):
    url, _ = api
    assert_refused(post(url, "/v1/studies", {**SPEC, **change}), 422, field)


def test_curvature_at_steps_must_be_in_the_run(api):
    url, _ = api
    for at_steps in ([-1], [0, 11]):
        body = {**CURVATURE, "at_steps": at_steps, "train_steps": 10}
        assert_refused(post(url, "/v1/curvature", body), 422, "at_steps")


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize("path", ["/v1/studies", "/v1/curvature"])
@pytest.mark.parametrize(("name", "raw"), [
    ("NaN", '"lr": NaN'), ("Infinity", '"lr": Infinity'), ("-Infinity", '"lr": -Infinity'),
])
def test_non_finite_json_numbers_are_422(api, path, name, raw):
    url, _ = api
    base = SPEC if path == "/v1/studies" else CURVATURE
    body = json.dumps(base)[:-1] + ', "optimizer": {' + raw + "}}" if path == "/v1/studies" \
        else json.dumps(base)[:-1] + ', "' + raw[1:] + "}"
    msg = assert_refused(post(url, path, content=body.encode()), 422)
    assert name.lstrip("-") in msg and "finite" in msg


@pytest.mark.parametrize("depth", [800, 10_000])
def test_deep_nesting_is_422(api, depth):
    url, _ = api
    for path, base in (("/v1/studies", SPEC), ("/v1/curvature", CURVATURE)):
        body = json.dumps(base)[:-1] + ', "model_kwargs": {"x": ' + _nested(depth) + "}}"
        msg = assert_refused(post(url, path, content=body.encode()), 422)
        assert "levels deep" in msg


def test_ten_megabyte_body_is_413(api):
    url, _ = api
    body = json.dumps({**SPEC, "name": "x" * (10 * 2**20)}).encode()
    assert_refused(post(url, "/v1/studies", content=body), 413)


def test_token_less_mode_refuses_foreign_host_headers(tmp_path):
    env = {"PHITUNE_RECONCILE_INTERVAL_S": "0", "PHITUNE_LOCAL_RAY": "per-study"}
    proc, url = start_api(tmp_path, None, tmp_path / "api.log", extra_env=env)
    try:
        port = url.rsplit(":", 1)[1]
        assert httpx.get(url + "/v1/studies", timeout=60).status_code == 200
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example"):
            r = httpx.post(url + "/v1/studies", json=SPEC, headers={"Host": host}, timeout=60)
            assert_refused(r, 400)
            assert "Host header not allowed" in r.json()["detail"]
        assert httpx.get(url + "/healthz", headers={"Host": f"localhost:{port}"},
                         timeout=60).is_success
    finally:
        _stop(proc)


def test_bind_check_uses_the_address_really_bound():
    with pytest.raises(ValueError, match="not a loopback address"):
        listening_socket("0.0.0.0", 0, has_token=False)
    for host, has_token in (("127.0.0.1", False), ("localhost", False), ("0.0.0.0", True)):
        sock = listening_socket(host, 0, has_token=has_token)
        try:
            assert sock.getsockname()[1] > 0 and sock.type == socket.SOCK_STREAM
        finally:
            sock.close()
