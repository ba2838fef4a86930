"""Security of the API surface: bearer token on mutating routes (and on reads when asked),
refusal to expose an unauthenticated API, request-size limit and per-request caps.

Requests here never launch a driver: they are refused (401/413/422/404) before the runner."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.api.auth import token_matches
from service.api.main import create_app
from service.config import Settings

TOKEN = "s3cret-token-0123456789"
VALID: dict[str, Any] = {"model": "mlp", "dataset": "digits", "budget": {"steps": 100}}
# invalid on purpose (unknown model): a request that passes auth gets 422, never a driver
INVALID = {**VALID, "model": "no-such-model"}


def make_client(tmp_path, **overrides: Any) -> TestClient:
    settings = Settings(data_dir=tmp_path, api_token=TOKEN, **overrides)
    return TestClient(create_app(settings))


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(("method", "path", "body"), [
    ("POST", "/v1/studies", INVALID),
    ("DELETE", "/v1/studies/does-not-exist", None),
])
def test_mutating_routes_need_the_token(tmp_path, method, path, body):
    with make_client(tmp_path) as c:
        for headers in ({}, auth("wrong"), {"Authorization": f"Basic {TOKEN}"},
                        {"Authorization": "Bearer"}):
            r = c.request(method, path, json=body, headers=headers)
            assert r.status_code == 401, (headers, r.text)
            assert r.headers["www-authenticate"] == "Bearer"
            assert "token" in r.json()["detail"]
        r = c.request(method, path, json=body, headers=auth())
        assert r.status_code == (422 if method == "POST" else 404), r.text


def test_reads_need_the_token_unless_explicitly_opened(tmp_path):
    """A token protects reads too (study errors and specs name files); PHITUNE_READ_AUTH=false
    opens them explicitly, and then error details are shown to token holders only."""
    from service.store import Store

    with make_client(tmp_path / "open", read_auth=False) as c:
        assert c.get("/v1/studies").status_code == 200
        store = Store(Settings(data_dir=tmp_path / "open").sqlalchemy_url)
        row, _ = store.create_study(VALID, "failed one")
        store.finish_study(row.id, "failed", error="DatasetNotFoundError: /srv/secret missing")
        store.engine.dispose()
        for path in (f"/v1/studies/{row.id}", "/v1/studies"):
            body = c.get(path).json()
            study = body["data"][0] if "data" in body else body
            assert study["error"] == "error details need the API token", path
            body = c.get(path, headers=auth()).json()
            study = body["data"][0] if "data" in body else body
            assert "/srv/secret" in study["error"], path
    for read_auth in (None, True):
        with make_client(tmp_path / f"closed-{read_auth}", read_auth=read_auth) as c:
            assert c.get("/v1/studies").status_code == 401
            assert c.get("/v1/studies", headers=auth("nope")).status_code == 401
            assert c.get("/v1/studies", headers=auth()).status_code == 200
            # probes stay open for orchestrators
            assert c.get("/healthz").status_code == 200
            assert c.get("/readyz").status_code == 200


def test_token_from_file(tmp_path):
    secret = tmp_path / "token"
    secret.write_text(TOKEN + "\n")
    settings = Settings(data_dir=tmp_path, api_token_file=secret, api_token="ignored")
    with TestClient(create_app(settings)) as c:
        assert c.delete("/v1/studies/x", headers=auth("ignored")).status_code == 401
        assert c.delete("/v1/studies/x", headers=auth()).status_code == 404


@pytest.mark.parametrize("content", ["", "  \n"])
def test_empty_token_file_refuses_to_start(tmp_path, content):
    secret = tmp_path / "token"
    secret.write_text(content)
    with pytest.raises(ValueError, match="empty"):
        create_app(Settings(data_dir=tmp_path, api_token_file=secret))
    with pytest.raises(ValueError, match="No such file"):
        create_app(Settings(data_dir=tmp_path, api_token_file=tmp_path / "missing"))


def test_network_bind_without_token_refuses_to_start(tmp_path):
    with pytest.raises(ValueError, match="not loopback"):
        create_app(Settings(data_dir=tmp_path, host="0.0.0.0"))
    create_app(Settings(data_dir=tmp_path, host="0.0.0.0", api_token=TOKEN))
    for host in ("127.0.0.1", "localhost", "::1"):
        create_app(Settings(data_dir=tmp_path, host=host))


def test_default_bind_is_loopback():
    assert Settings().host == "127.0.0.1"


def test_token_matches_is_exact():
    assert token_matches(TOKEN, TOKEN)
    assert not token_matches(TOKEN, TOKEN + " ")
    assert not token_matches("", TOKEN)
    assert not token_matches(TOKEN[:-1], TOKEN)
    # str compare_digest raises on non-ASCII; bytes do not
    assert token_matches("tökén", "tökén") and not token_matches("tökén", "token")


def test_request_size_limit(tmp_path):
    with make_client(tmp_path, max_request_bytes=2048) as c:
        big = {**INVALID, "model_kwargs": {"pad": "x" * 4096}}
        r = c.post("/v1/studies", json=big, headers=auth())
        assert r.status_code == 413 and "max_request_bytes" in r.json()["detail"]
        # no Content-Length (chunked): counted while streaming
        body = json.dumps(big).encode()
        r = c.post("/v1/studies", content=iter([body[:1000], body[1000:]]),
                   headers={**auth(), "Content-Type": "application/json"})
        assert r.status_code == 413, r.text
        # below the limit it reaches validation
        assert c.post("/v1/studies", json=INVALID, headers=auth()).status_code == 422


def test_body_limit_is_checked_before_auth(tmp_path):
    """A huge unauthenticated body is not even read."""
    with make_client(tmp_path, max_request_bytes=2048) as c:
        r = c.post("/v1/studies", content=b"x" * 10_000)
        assert r.status_code == 413


@pytest.mark.parametrize(("change", "field"), [
    ({"num_trials": 11}, "num_trials"),
    ({"max_concurrent_trials": 5}, "max_concurrent_trials"),
    ({"budget": {"steps": 1001}}, "steps"),
    ({"budget": {"epochs": 20.5}}, "epochs"),
])
def test_per_request_caps(tmp_path, change, field):
    caps = {"max_trials": 10, "max_concurrent_trials": 4, "max_budget_steps": 1000,
            "max_budget_epochs": 20}
    with make_client(tmp_path, **caps) as c:
        r = c.post("/v1/studies", json={**VALID, **change}, headers=auth())
        assert r.status_code == 422, r.text
        detail = r.json()["detail"]
        assert field in json.dumps(detail) and "limit" in json.dumps(detail)


def test_client_sends_the_token(tmp_path):
    from service.client import NotFound, PhiTuneClient, Unauthorized

    with make_client(tmp_path) as c:
        with PhiTuneClient("http://testserver", token="wrong", transport=c._transport) as client:
            with pytest.raises(Unauthorized) as err:
                client.cancel("x")
            assert err.value.status_code == 401
        with PhiTuneClient("http://testserver", token=TOKEN, transport=c._transport) as client:
            with pytest.raises(NotFound) as err:
                client.cancel("x")
            assert err.value.status_code == 404


def test_cli_serve_refuses_network_bind_without_token(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items()
           if k not in ("PHITUNE_API_TOKEN", "PHITUNE_API_TOKEN_FILE")}
    env["PHITUNE_DATA_DIR"] = str(tmp_path)
    out = subprocess.run([sys.executable, "-m", "service.cli", "serve", "--host", "0.0.0.0",
                          "--port", "1"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 2
    assert "no API token" in out.stderr and "Traceback" not in out.stderr
