"""The client library and the CLI: typed errors carrying the server's detail, retries with
backoff in ``wait``, the async client, a CLI verb (with ``--json`` and help) per client method.

Two real servers: a real phitune API (uvicorn, SQLite store holding one finished study; no
study runs, so no Ray) and, for the retry tests, a real local HTTP server that answers 503 /
502 / drops the connection a few times before serving schema-valid study JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import json
import socket
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from service.cli.main import build_parser, main
from service.client import (
    AsyncPhiTuneClient,
    Backoff,
    Conflict,
    NotFound,
    PhiTuneClient,
    PhiTuneClientError,
    ServerError,
    Validation,
)
from service.schemas import BestSchedule, StudyCreate, StudyPublic
from tests.servers import api_with_one_cancelled_study

SPEC = {"name": "cli", "model": "mlp", "dataset": "digits",
        "optimizer": {"name": "sgd", "lr": 0.1}, "budget": {"steps": 100}, "num_trials": 2}


# --------------------------------------------------------------------- a real phitune API

@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    with api_with_one_cancelled_study(tmp_path_factory.mktemp("api"), SPEC, "cli") as served:
        yield served


def test_typed_errors_carry_the_servers_detail(api) -> None:
    url, study_id = api
    with PhiTuneClient(url) as client:
        with pytest.raises(NotFound) as nf:
            client.get("no-such-study")
        assert nf.value.status_code == 404 and "no-such-study" in str(nf.value.detail)
        with pytest.raises(Conflict) as cf:
            client.best(study_id)
        assert cf.value.status_code == 409 and "cancelled" in str(cf.value)
        with pytest.raises(Validation) as va:
            client.submit({**SPEC, "optimizer": {"name": "sgd", "lr": -1}})
        assert va.value.status_code == 422
        assert isinstance(va.value.detail, list)  # FastAPI's field errors, unchanged
        assert any(field == "optimizer.lr" for field, _ in va.value.errors)
        assert all(isinstance(e, PhiTuneClientError) for e in (nf.value, cf.value, va.value))


def test_async_client_has_the_same_methods_and_results(api) -> None:
    url, study_id = api
    sync_methods = {n for n, _ in inspect.getmembers(PhiTuneClient, inspect.isfunction)
                    if not n.startswith("_")} - {"close"}
    async_methods = {n for n, f in inspect.getmembers(AsyncPhiTuneClient, inspect.isfunction)
                     if not n.startswith("_") and inspect.iscoroutinefunction(f)} - {"aclose"}
    assert sync_methods == async_methods

    async def run() -> None:
        async with AsyncPhiTuneClient(url) as client:
            study = await client.get(study_id)
            assert study.status == "cancelled" and study.spec.model == "mlp"
            listed = await client.list(status="cancelled")
            assert [s.id for s in listed.data] == [study_id]
            assert (await client.trials(study_id)).count == 0
            assert (await client.wait(study_id, poll=0.01)).status == "cancelled"
            with pytest.raises(Conflict):
                await client.result(study_id)
            with pytest.raises(NotFound):
                await client.get("nope")
            with pytest.raises(Validation) as va:
                await client.submit({**SPEC, "num_trials": 0})
            assert any(f == "num_trials" for f, _ in va.value.errors)

    asyncio.run(run())
    with PhiTuneClient(url) as client:
        assert client.get(study_id) == asyncio.run(_aget(url, study_id))


async def _aget(url: str, study_id: str) -> StudyPublic:
    async with AsyncPhiTuneClient(url) as client:
        return await client.get(study_id)


# --------------------------------------------------------------------- retries

def _study_json(status: str) -> bytes:
    study = StudyPublic(id="s1", name=None, status=status, spec=StudyCreate.model_validate(SPEC),
                        created_at=datetime.now(UTC))
    return study.model_dump_json().encode()


def _best_json() -> bytes:
    best = BestSchedule(schedule="uba", phi=0.5, phases=1, eta_max=0.1, eta_min=0.0,
                        variant="restart", total_steps=4, metric="val_accuracy", value=0.9,
                        trial_id="t1", lr_curve=[0.1, 0.07, 0.03, 0.01])
    return best.model_dump_json().encode()


class _Flaky:
    """A real HTTP server that plays a script for GET /v1/studies/s1: an int answers with that
    status (JSON detail), "drop" closes the connection unanswered, a status name serves the
    study in that state. /v1/studies/s1/best serves a best schedule."""

    def __init__(self, script: list[int | str]) -> None:
        self.script = list(script)
        self.times: list[float] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, code: int, body: bytes) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path == "/v1/studies/s1/best":
                    return self._send(200, _best_json())
                outer.times.append(time.monotonic())
                step = outer.script.pop(0) if len(outer.script) > 1 else outer.script[0]
                if step == "drop":
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return None
                if isinstance(step, int):
                    return self._send(step, json.dumps({"detail": f"upstream {step}"}).encode())
                return self._send(200, _study_json(step))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.times, self.times[1:], strict=False)]


@pytest.fixture()
def flaky(request: pytest.FixtureRequest) -> Iterator[_Flaky]:
    server = _Flaky(request.param)
    yield server
    server.close()


FAST = Backoff(retries=4, initial=0.05, factor=2.0, max_delay=1.0)
SCRIPT = [503, 503, "drop", "running", 502, "succeeded"]


@pytest.mark.parametrize("flaky", [SCRIPT], indirect=True)
def test_wait_retries_5xx_and_dropped_connections_with_backoff(
        flaky: _Flaky, capsys: pytest.CaptureFixture[str]) -> None:
    with PhiTuneClient(flaky.url, retry=FAST) as client:
        study = client.wait("s1", poll=0.01, progress=True)
    assert study.status == "succeeded"
    err = capsys.readouterr().err
    delays = [float(line.rsplit("retrying in ", 1)[1].split()[0])
              for line in err.splitlines() if "retrying in" in line]
    # doubling over three failures in a row; the success after them resets the backoff
    assert delays == [0.05, 0.1, 0.2, 0.05]
    assert "503: upstream 503" in err and "[running]" in err and "[succeeded]" in err
    gaps = flaky.gaps()  # the server saw the waits (lower bounds only: the machine is shared)
    assert len(gaps) == 5 and gaps[0] >= 0.05 and gaps[1] >= 0.1 and gaps[2] >= 0.2


@pytest.mark.parametrize("flaky", [SCRIPT], indirect=True)
def test_async_wait_retries_too(flaky: _Flaky) -> None:
    async def run() -> StudyPublic:
        async with AsyncPhiTuneClient(flaky.url, retry=FAST) as client:
            return await client.wait("s1", poll=0.01)

    assert asyncio.run(run()).status == "succeeded"
    assert len(flaky.times) == 6


@pytest.mark.parametrize("flaky", [[503]], indirect=True)
def test_wait_gives_up_after_the_retries_with_the_servers_detail(flaky: _Flaky) -> None:
    with PhiTuneClient(flaky.url, retry=Backoff(retries=2, initial=0.01)) as client:
        with pytest.raises(ServerError) as err:
            client.wait("s1", poll=0.01)
    assert err.value.status_code == 503 and err.value.detail == "upstream 503"
    assert len(flaky.times) == 3  # the first try and two retries


@pytest.mark.parametrize("flaky", [[404]], indirect=True)
def test_client_errors_are_not_retried(flaky: _Flaky) -> None:
    with PhiTuneClient(flaky.url, retry=FAST) as client:
        with pytest.raises(NotFound):
            client.wait("s1", poll=0.01)
    assert len(flaky.times) == 1


@pytest.mark.parametrize("flaky", [SCRIPT], indirect=True)
def test_cli_wait_survives_the_blips_and_prints_the_best(
        flaky: _Flaky, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    monkeypatch.setattr("service.client.DEFAULT_BACKOFF", FAST)  # the CLI's default, shorter
    rc = main(["--url", flaky.url, "wait", "s1", "--poll", "0.01", "--json"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert json.loads(out)["phi"] == 0.5
    assert "503: upstream 503; retrying in 0.05 s" in err and "retrying in 0.2 s" in err


# --------------------------------------------------------------------- the CLI

def _walk(parser: argparse.ArgumentParser,
          path: str = "phitune") -> Iterator[tuple[str, argparse.Action]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, f"{path} {name}")
        else:
            yield path, action


def test_every_cli_argument_has_help() -> None:
    missing = [f"{path} {a.option_strings or a.dest}" for path, a in _walk(build_parser())
               if not (a.help and a.help.strip()) and a.help != argparse.SUPPRESS]
    assert not missing, missing


def _verbs() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(sub.choices)


#: client method -> CLI verb (the CLI is the client on the command line)
VERB_OF = {"get": "status", "recommend_phi": "recommend-phi", "grad_norms": "grad-norms",
           # the lease calls are the agent loop's (`phitune agent`)
           "claim_lease": "agent", "heartbeat": "agent", "report_result": "agent"}
#: client methods without a verb: the library process's recording calls and heartbeat
#: (service.library); a study whose process was killed is failed by the server once it stops
#: heartbeating (or ended sooner with `cancel`)
NO_VERB = {"record_trial", "finish_study", "heartbeat_study"}
NO_JSON = {"plot", "serve", "demo", "plot-schedule", "agent"}  # write files or run things


def test_every_client_method_has_a_verb_with_json() -> None:
    verbs = _verbs()
    methods = {n for n, _ in inspect.getmembers(PhiTuneClient, inspect.isfunction)
               if not n.startswith("_")} - {"close"} - NO_VERB
    missing = sorted(VERB_OF.get(m, m) for m in methods if VERB_OF.get(m, m) not in verbs)
    assert not missing, missing
    for name, sub in verbs.items():
        flags = {s for a in sub._actions for s in a.option_strings}
        assert name in NO_JSON or "--json" in flags, name


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.startswith("phitune 0.")


def test_cli_reads_a_real_server(api, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    url, study_id = api
    assert main(["--url", url, "status", study_id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "cancelled"
    assert main(["--url", url, "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["data"][0]["id"] == study_id
    assert main(["--url", url, "trials", study_id, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"data": [], "count": 0}
    assert main(["--url", url, "wait", study_id, "--poll", "0.01"]) == 1  # not succeeded
    assert "cancelled" in capsys.readouterr().err
    assert main(["--url", url, "recommend-phi", "mlp", "digits", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["phi"] > 0
    assert main(["--url", url, "cancel", study_id, "--json"]) == 0  # a finished one: no change
    assert json.loads(capsys.readouterr().out)["status"] == "cancelled"


@pytest.mark.parametrize("argv,code,needle", [
    (["status", "no-such-study"], 2, "404"),
    (["grad-norms", "{id}", "no-such-trial"], 2, "404"),
    (["best", "{id}"], 2, "409"),
    (["result", "{id}", "--json"], 2, "no result yet"),
    (["submit", "{spec}"], 2, "optimizer.lr"),
    (["submit", "/nonexistent/spec.yaml"], 2, "cannot read spec"),
])
def test_cli_errors_are_messages_not_tracebacks(api, capsys, tmp_path, argv, code,
                                                needle) -> None:
    url, study_id = api
    spec = tmp_path / "bad.yaml"
    spec.write_text(json.dumps({**SPEC, "optimizer": {"name": "sgd", "lr": -1}}))
    argv = [a.format(id=study_id, spec=spec) for a in argv]
    assert main(["--url", url, *argv]) == code
    out, err = capsys.readouterr()
    assert err.startswith("phitune: error:") and needle in err and "Traceback" not in err


def test_cli_unreachable_server_is_a_message(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    assert main(["--url", f"http://127.0.0.1:{port}", "status", "x"]) == 1
    assert "cannot reach" in capsys.readouterr().err
    for url in ("http://[::1", "no-scheme"):
        assert main(["--url", url, "status", "x"]) in (1, 2)
        err = capsys.readouterr().err
        assert err.startswith("phitune: error:") and "Traceback" not in err
