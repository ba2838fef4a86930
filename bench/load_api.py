"""API latency under load: p50/p99 of GET and POST at 50 concurrent clients on loopback.

Starts the real API server (uvicorn, one process, as ``phitune serve`` runs it) over a store
holding ``--studies`` studies with 8 trials each (one of them finished, with a result), then
for each scenario runs ``--clients`` closed-loop asyncio clients (httpx, keep-alive) for
``--duration`` seconds and records every request's latency. Scenarios:

* ``GET /v1/studies/{id}``: one study with its progress (reads its trials);
* ``GET /v1/studies?limit=20``: a page of studies;
* ``POST /v1/studies`` replayed with a known ``Idempotency-Key``: full auth + validation +
  registry check + dedupe, returns the existing study (200). A new study would start a real
  driver, which is what the e2e tests measure, not a request-latency benchmark;
* ``POST /v1/studies`` with an invalid spec (422): the validation path.

Two load shapes, both with ``--clients`` concurrent clients:

* **saturated**: every client sends its next request as soon as the last one answers (closed
  loop, no think time). This measures throughput; by Little's law the latency is then
  ``clients / throughput``, whatever the server does per request.
* **polling**: every client waits ``--think`` seconds (±50 %, seeded) between requests, like
  ``PhiTuneClient.wait(poll=1)`` does: the load real users put on the service.

Goal (issue #7): p99 ≤ 50 ms for reads. Client and server share the machine's cores, so the
numbers include the load generator's own CPU use; the machine's load average is recorded.

``--wrk`` measures throughput relative to ``/healthz`` instead (issue #12: one study ≥ 0.5×
and a page of 20 ≥ 0.25× of ``/healthz``): the C load generator ``wrk`` (``apt-get install
wrk``) takes far less CPU than Python clients, so the ratios say what the routes cost. One
server, one run of ``--rounds`` rounds of ``/healthz``, ``GET study``, ``GET list(20)``
(``--duration`` seconds each); each ratio is taken against ``/healthz`` of the same round, as
a busy machine drifts, and the median over rounds is reported.

The same ``--wrk`` run then measures the calls an agent of a ``trainer: external`` study
makes (issue 22: p99 ≤ 50 ms with 50 agents), each wrk connection an agent (``X-Phitune-Agent``
from a Lua script, :func:`lease_script`): a claim that gets a new lease (201; trials offered
ahead in the store, :class:`LeaseBench`), a heartbeat, the claim an idle agent polls with
when every trial is leased (204), each lease's first report and a repeated one (200,
idempotent), and a claim on a study with ``--large-trials`` finished trials (does a claim's
cost grow with the study?). Paced first, once per ``--think-ms``: each agent waits that long
on average (wrk's ``delay()``) before each call, so 50 agents at 100 ms offer at most 500
calls a second, still far more than real agents (a heartbeat every third of the lease TTL);
``/healthz`` at the same pace is the reference. Then in closed loop (no think time), which
measures saturation: by Little's law the latency is then connections / throughput.
``--wrk --smoke``: 5 agents, 1 s per scenario, one round (test suite).

``--asgi`` is the cross-check that a busy machine cannot skew as much: the same three
requests driven through the whole ASGI app in-process (middleware, auth, routing,
dependencies, the thread-pool hop, the route; no sockets, no HTTP parsing, which costs every
route the same), ``--clients`` at a time; per request the best of ``--rounds`` repeats, so
time other jobs took from the CPU counts as little as possible.

    python -m bench.load_api                 # 50 clients, 30 s per scenario
    python -m bench.load_api --wrk --duration 10 --rounds 3 --think-ms 100 1000
    python -m bench.load_api --asgi --rounds 5
    python -m bench.load_api --smoke         # 5 clients, 2 s per scenario (test suite)
    python -m bench.load_api --wrk --smoke   # 5 agents, 1 s per scenario (test suite)
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from bench.common import machine_info, new_figure, provenance_md, write_csv
from service.api.routes.leases import AGENT_HEADER, principal_of
from service.cli.demo import _stop, start_api
from service.launch.runner import process_start
from service.schemas import StudyCreate, TrialFile
from service.store import Store
from service.store.db import utcnow
from service.store.external import (
    ExternalTrialRow,
    claim_trial,
    list_external_trials,
)

RESULTS = Path(__file__).parent / "results"
TOKEN = "load-test-token"
SPEC = {"model": "mlp", "dataset": "digits", "budget": {"steps": 300}, "num_trials": 8}


def seed_store(data_dir: Path, studies: int) -> tuple[str, str]:
    """Studies with trials (and one result) so reads do real work. Returns (study id, key).

    Each spec is stored as ``POST /v1/studies`` stores it (``StudyCreate`` with every
    default, about 1 kB of JSON), so a read renders what a real study's read renders."""
    store = Store(f"sqlite:///{data_dir / 'phitune.db'}")
    stored = StudyCreate.model_validate(SPEC).model_dump(mode="json")
    first = ""
    for i in range(studies):
        row, _ = store.create_study(stored, f"load {i}", idempotency_key=f"load-{i}")
        first = first or row.id
        for t in range(8):
            store.upsert_trial(row.id, f"trial_{t:05d}", budget_steps=300,
                               status="terminated", params={"phi": 0.5 + t, "phases": 1},
                               step=300, metrics={"val_accuracy": 0.9 + t / 1000,
                                                  "val_loss": 0.3}, value=0.9 + t / 1000)
        store.finish_study(row.id, "succeeded", result={"metric": "val_accuracy",
                                                        "mode": "max", "budgets": []})
    store.engine.dispose()
    return first, "load-0"


async def client_loop(http: httpx.AsyncClient, request: dict[str, Any], until: float,
                      latencies: list[float], statuses: dict[int, int], think: float,
                      rng: random.Random) -> None:
    if think:
        await asyncio.sleep(rng.uniform(0, think))  # spread the clients' phases
    while time.perf_counter() < until:
        t0 = time.perf_counter()
        try:
            response = await http.request(**request)
            code = response.status_code
        except httpx.HTTPError:
            code = 0
        latencies.append(time.perf_counter() - t0)
        statuses[code] = statuses.get(code, 0) + 1
        if think:
            await asyncio.sleep(think * rng.uniform(0.5, 1.5))


async def run_scenario(url: str, request: dict[str, Any], clients: int, duration: float,
                       think: float = 0.0) -> tuple[list[float], dict[int, int], float]:
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30,
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as http:
        # warm-up: open the connections, let the server import lazily loaded modules
        await asyncio.gather(*(http.request(**request) for _ in range(clients)))
        start = time.perf_counter()
        until = start + duration
        await asyncio.gather(*(client_loop(http, request, until, latencies, statuses, think,
                                           random.Random(i)) for i in range(clients)))
        elapsed = time.perf_counter() - start
    return latencies, statuses, elapsed


_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


def _ms(text: str) -> float:
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(value) * _UNITS_MS[unit]


def run_wrk(url: str, path: str, clients: int, duration: float,
            script: Path | None = None) -> dict[str, Any]:
    """One ``wrk`` run (2 threads, ``clients`` keep-alive connections); parsed summary. With
    ``script`` (:func:`lease_script`), the Lua script makes the requests and counts their
    statuses (``statuses``, and ``repeats``: requests past the end of its list)."""
    lua = ["-s", str(script), url + path, "--", str(WRK_THREADS)] if script else [url + path]
    out = subprocess.run(
        ["wrk", "-t", str(WRK_THREADS), "-c", str(clients), "-d", f"{duration:g}s",
         "--timeout", "20s", "--latency",
         "-H", f"Authorization: Bearer {TOKEN}", *lua],
        capture_output=True, text=True, check=True, timeout=duration + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    pct = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)", out, re.M))
    mean = re.search(r"^\s+Latency\s+(\S+)", out, re.M).group(1)  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    row = {"requests": requests, "rps": rps, "mean_ms": round(_ms(mean), 2),
           "p50_ms": round(_ms(pct["50"]), 2),
           "p90_ms": round(_ms(pct["90"]), 2), "p99_ms": round(_ms(pct["99"]), 2),
           "non_2xx": int(bad.group(1)) if bad else 0,
           "socket_errors": errors.group(1).strip() if errors else ""}
    counted = re.search(r"^phitune-statuses (.*)$", out, re.M)
    if counted:
        counts = dict(item.split("=") for item in counted.group(1).split())
        row["statuses"] = " ".join(f"{k}:{v}" for k, v in counts.items()
                                   if k != "repeats" and int(v))
        row["repeats"] = int(counts["repeats"])
    return row


# ----------------------------------------------------------------------------- lease calls

#: wrk's threads; a lease script splits its list of requests between them.
WRK_THREADS = 2
#: An external study as ``POST /v1/studies`` stores it (agents train; the metric defaults
#: to val_accuracy, which every reported result carries).
EXTERNAL_SPEC = {"trainer": "external", "optimizer": {"name": "sgd", "lr": 0.1},
                 "budget": {"steps": 300}, "num_trials": 8}
#: The claim on a study with many finished trials (does a claim's cost grow with the study?)
CLAIM_LARGE = "claim (201), large study"
RESULT_BODY = '{"metrics": {"val_accuracy": 0.91, "val_loss": 0.3}}'
#: What each lease scenario measures (the md's "measured" column says the answers' mix).
LEASE_CALLS = {
    "claim (201)": "POST /v1/studies/{id}/leases on a study with trials offered: a new lease",
    "heartbeat": "POST /v1/leases/{lease}/heartbeat, one current lease per agent",
    "claim (204 poll)": "POST /v1/studies/{id}/leases when every trial is leased: 204, "
                        "what an idle agent polls",
    "result (first)": "POST /v1/leases/{lease}/result, each lease of the claim run once",
    "result (repeat)": "POST /v1/leases/{lease}/result again with the same body: 200, "
                       "idempotent",
    CLAIM_LARGE: "POST /v1/studies/{id}/leases on the large study (many finished trials "
                 "besides those offered): a new lease",
}
LEASE_GOAL_P99_MS = 50.0

_LUA = """-- generated by bench/load_api.py: sends the requests of `items` ({path, agent}) in turn,
-- thread k of n taking items k, k + n, ...; after the last one it starts over (counted as
-- `repeats`), or, with `once`, stops the thread. Counts the answers' statuses. With `think`
-- > 0 each connection is an agent that waits think * U(0.5, 1.5) ms before each request.
local items = {%(items)s}
local method = %(method)s
local body = %(body)s
local token = %(token)s
local once = %(once)s
local think = %(think)s
local threads = {}
local nthreads = 0

function setup(thread)
  thread:set("tid", nthreads)
  nthreads = nthreads + 1
  table.insert(threads, thread)
end

function init(args)
  local n = tonumber(args[1])
  math.randomseed(1000 + tid)
  reqs = {}
  for k = tid + 1, #items, n do
    reqs[#reqs + 1] = wrk.format(method, items[k][1], {
      ["Authorization"] = "Bearer " .. token, ["%(agent_header)s"] = items[k][2],
      ["Content-Type"] = "application/json"}, body)
  end
  i, repeats, s200, s201, s204, other = 0, 0, 0, 0, 0, 0
end

function request()
  i = i + 1
  if i > #reqs then
    repeats = repeats + 1
    if once then wrk.thread:stop() end
  end
  return reqs[(i - 1) %% #reqs + 1]
end
%(delay)s
function response(status, headers, body)
  if status == 200 then s200 = s200 + 1
  elseif status == 201 then s201 = s201 + 1
  elseif status == 204 then s204 = s204 + 1
  else other = other + 1 end
end

function done(summary, latency, requests)
  local t = {s200 = 0, s201 = 0, s204 = 0, other = 0, repeats = 0}
  for _, thread in ipairs(threads) do
    for k, _ in pairs(t) do t[k] = t[k] + thread:get(k) end
  end
  io.write(string.format("phitune-statuses 200=%%d 201=%%d 204=%%d other=%%d repeats=%%d\\n",
                         t.s200, t.s201, t.s204, t.other, t.repeats))
end
"""


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_DELAY = """
function delay()
  return math.floor(think * (0.5 + math.random()))
end
"""


def lease_script(path: Path, items: list[tuple[str, str]], body: str = "",
                 once: bool = False, think_ms: float = 0.0, method: str = "POST") -> Path:
    """A wrk Lua script sending ``items`` ((path, agent) pairs) in turn, with the bearer
    token and each item's ``X-Phitune-Agent`` header (so a heartbeat or a report comes from
    the agent holding the lease), the statuses counted (see :func:`run_wrk`). ``once``: a
    wrk thread stops at the end of its items (the requests then in flight are repeats).
    ``think_ms`` > 0: wrk's ``delay()`` makes each connection wait ``think_ms`` × U(0.5, 1.5)
    before each request (wrk's latency excludes the wait), an agent rather than a saturating
    client; 0: closed loop, no ``delay()`` at all."""
    if len(items) < WRK_THREADS:
        raise ValueError(f"lease_script: {len(items)} items for {WRK_THREADS} wrk threads")
    path.write_text(_LUA % {
        "items": ", ".join(f"{{{_lua_string(p)}, {_lua_string(a)}}}" for p, a in items),
        "method": _lua_string(method), "body": _lua_string(body), "token": _lua_string(TOKEN),
        "agent_header": AGENT_HEADER, "once": "true" if once else "false",
        "think": repr(float(think_ms)), "delay": _DELAY if think_ms > 0 else ""})
    return path


def trial_payload(study_id: str, trial_id: str, steps: int = 300) -> dict[str, Any]:
    """A trial file as the proxy trainable offers it (a cosine curve: real floats' width)."""
    curve = [0.05 * (1 + math.cos(math.pi * t / steps)) for t in range(steps)]
    return TrialFile(trial_id=trial_id, study_id=study_id, total_steps=steps, seed=0,
                     metric="val_accuracy", mode="max", optimizer="sgd", lr=0.1,
                     schedule="uba", schedule_params={"phi": 1.0, "phases": 1},
                     lr_curve=curve).model_dump(mode="json")


class LeaseBench:
    """Running external studies in the store, seeded as the driver's proxy trainables seed
    them (rows as :func:`~service.store.external.offer_trial` inserts them, many per
    transaction; leases by :func:`~service.store.external.claim_trial`; no driver, no Ray:
    the API reads the same rows). Their "driver" is a ``sleep`` so the server's reconcile
    leaves them alone.

    * a fresh small ``claim`` study per claim run, holding exactly the trials the run may
      claim (offered ahead), whose leases the next first reports then report;
    * ``large``: ``large_trials`` finished trials besides those offered (topped up before each
      claim run on it): claims on it show whether a claim's cost grows with the study;
    * ``busy``: one trial leased to each agent (ids collected here), for the heartbeats; with
      nothing left to claim, its claims are the 204 poll."""

    def __init__(self, store: Store, agents: int, large_trials: int) -> None:
        self.store = store
        self.agents = [f"bench-agent-{k:02d}" for k in range(agents)]
        self.blocker = subprocess.Popen(["sleep", "100000"], start_new_session=True)
        self.studies = 0
        self.offered = 0
        self.busy_id = self.new_study("busy")
        self.offer(self.busy_id, agents)
        self.busy = [claim_trial(store, self.busy_id, principal_of(TOKEN, a), 86_400)
                     for a in self.agents]
        self.claim_id = ""  # the latest small claim study
        self.large_id = self.new_study("large")
        self.add_finished(self.large_id, large_trials)

    def new_study(self, name: str) -> str:
        stored = StudyCreate.model_validate(EXTERNAL_SPEC).model_dump(mode="json")
        self.studies += 1
        row, _ = self.store.create_study(stored, f"load external {name} {self.studies}",
                                         idempotency_key=f"load-external-{self.studies}")
        self.store.update_study(row.id, status="running")
        self.store.record_launch(row.id, pid=self.blocker.pid,
                                 driver_start=process_start(self.blocker.pid))
        return row.id

    def _insert(self, rows: list[ExternalTrialRow]) -> None:
        for k in range(0, len(rows), 2000):
            with self.store.session() as s:
                s.add_all(rows[k:k + 2000])

    def offer(self, study_id: str, n: int) -> None:
        """``n`` trials offered (``pending``, a full trial file each), oldest first."""
        rows = []
        for _ in range(n):
            trial_id = f"ext_{self.offered:07d}"
            now = utcnow()
            rows.append(ExternalTrialRow(study_id=study_id, trial_id=trial_id,
                                         status="pending", attempt=0, created_at=now,
                                         updated_at=now,
                                         payload=trial_payload(study_id, trial_id)))
            self.offered += 1
        self._insert(rows)

    def add_finished(self, study_id: str, n: int) -> None:
        """``n`` trials reported already (``succeeded``; a claim never takes them, but they
        are rows of the study, what the claim's old OR query sorted)."""
        rows = []
        for k in range(n):
            now = utcnow()
            rows.append(ExternalTrialRow(study_id=study_id, trial_id=f"done_{k:07d}",
                                         status="succeeded", attempt=1, created_at=now,
                                         updated_at=now, payload={"trial_id": f"done_{k}"},
                                         metrics={"val_accuracy": 0.9}))
        self._insert(rows)

    def counts(self, study_id: str) -> tuple[int, int]:
        """(trials of the study, of them offered)."""
        t = ExternalTrialRow.__table__
        with self.store.session() as s:
            by = dict(s.execute(select(t.c.status, func.count()).where(t.c.study_id == study_id)
                                .group_by(t.c.status)).all())
        return sum(by.values()), by.get("pending", 0)

    def leased(self, n: int) -> list[tuple[str, str]]:
        """(lease id, agent) of the claim study's current leases (the claim run's), topped
        up to ``n`` by claiming offered trials as the agents (round robin) when it took
        fewer."""
        rows = [r for r in list_external_trials(self.store, self.claim_id)
                if r.status == "leased"]
        out = [(r.lease_id, (r.lease_holder or "").split("/", 1)[1]) for r in rows]
        for k in range(max(0, n - len(out))):
            agent = self.agents[k % len(self.agents)]
            claimed = claim_trial(self.store, self.claim_id, principal_of(TOKEN, agent),
                                  86_400)
            if claimed is None:
                self.offer(self.claim_id, 1)
                claimed = claim_trial(self.store, self.claim_id,
                                      principal_of(TOKEN, agent), 86_400)
            assert claimed is not None
            out.append((claimed[0].id, agent))
        return [(lease, agent) for lease, agent in out if lease]

    def reported(self) -> list[tuple[str, str]]:
        return [(r.lease_id, (r.lease_holder or "").split("/", 1)[1])
                for r in list_external_trials(self.store, self.claim_id)
                if r.status == "succeeded" and r.lease_id]

    def run(self, url: str, tmp: Path, name: str, clients: int, duration: float,
            target: int, think_ms: float = 0.0) -> dict[str, Any]:
        """One lease scenario (:data:`LEASE_CALLS`), or ``/healthz`` through the same script
        (the paced reference); ``target``: trials to have ready for a consuming one: offered
        before a claim run, at least leased before a first report, which ends when each
        lease has reported once. ``think_ms``: see :func:`lease_script`."""
        claim_path = "/v1/studies/{}/leases"
        sizes: dict[str, Any] = {}
        if name == "claim (201)":
            self.claim_id = self.new_study("claim")
            self.offer(self.claim_id, target)
            items = [(claim_path.format(self.claim_id), a) for a in self.agents]
        elif name == CLAIM_LARGE:
            _, pending = self.counts(self.large_id)
            self.offer(self.large_id, max(0, target - pending))
            items = [(claim_path.format(self.large_id), a) for a in self.agents]
        elif name == "claim (204 poll)":
            items = [(claim_path.format(self.busy_id), a) for a in self.agents]
        elif name == "heartbeat":
            items = [(f"/v1/leases/{lease.id}/heartbeat", a)
                     for a, (lease, _) in zip(self.agents, self.busy, strict=True)]
        elif name == "result (first)":
            items = [(f"/v1/leases/{lease}/result", a) for lease, a in self.leased(target)]
        elif name == "result (repeat)":
            items = [(f"/v1/leases/{lease}/result", a) for lease, a in self.reported()]
        else:
            items = [("/healthz", a) for a in self.agents]
        if name in (CLAIM_LARGE, "claim (201)"):
            total, pending = self.counts(self.claim_id if name == "claim (201)"
                                         else self.large_id)
            sizes = {"study_trials": total, "study_offered": pending}
        body = RESULT_BODY if name.startswith("result") else ""
        script = lease_script(tmp / "lease.lua", items, body, once=name == "result (first)",
                              think_ms=think_ms, method="GET" if name == "/healthz" else "POST")
        row = run_wrk(url, "/", clients, duration, script)
        row["items"] = len(items)
        row["rps_from"] = "wrk"
        if name == "result (first)":
            # wrk divides by -d even when the list ran out earlier; with one request in
            # flight per connection, throughput is connections / (mean latency + think)
            row["rps_wrk"] = row["rps"]
            row["rps"] = round(clients / ((row["mean_ms"] + think_ms) / 1000), 1)
            row["rps_from"] = "clients / (mean latency + think)"
        return {**row, **sizes}

    def close(self) -> None:
        self.blocker.kill()
        self.blocker.wait()


def _median(rows: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(float(r[key]) for r in rows))


def _answers(rows: list[dict[str, Any]], name: str) -> str:
    """The answers' mix of a call over all its rounds (``201 × 2641``...), with the repeats
    of a first report."""
    answers: dict[str, int] = {}
    for r in rows:
        for item in r.get("statuses", "").split():
            code, n = item.split(":")
            answers[code] = answers.get(code, 0) + int(n)
    mix = ", ".join(f"{n} × {code}" for code, n in sorted(answers.items()))
    repeats = sum(int(r.get("repeats", 0) or 0) for r in rows)
    if name == "result (first)":
        mix += (f", {repeats} of them repeats (in flight when the list ran out)"
                if repeats else ", no repeats")
    return mix


def _lease_table(rows: list[dict[str, Any]], names: list[str], goal: bool) -> list[str]:
    """Markdown table of the calls ``names`` (median over rounds; with ``goal``, the p99
    verdict per call)."""
    head = ("| call | what was measured (answers, all rounds) | median req/s | median p50 ms "
            "| median p99 ms | worst p99 ms |")
    lines = [head + (" p99 ≤ 50 ms |" if goal else ""),
             "|---|---|---|---|---|---|" + ("---|" if goal else "")]
    for name in names:
        rs = [r for r in rows if r["scenario"] == name]
        if not rs:
            continue
        p99 = _median(rs, "p99_ms")
        what = LEASE_CALLS.get(name, "GET /healthz, for reference: the cheapest route")
        line = (f"| {name} | {what}: {_answers(rs, name)} | {_median(rs, 'rps'):.0f} "
                f"| {_median(rs, 'p50_ms'):.1f} | {p99:.1f} "
                f"| {max(float(r['p99_ms']) for r in rs):.1f} |")
        if goal:
            met_rounds = sum(float(r["p99_ms"]) <= LEASE_GOAL_P99_MS for r in rs)
            verdict = "" if name not in LEASE_CALLS else (
                f" {'**met**' if p99 <= LEASE_GOAL_P99_MS else '**not met**'} ({met_rounds} of "
                f"{len(rs)} rounds) |")
            line += verdict or " reference |"
        lines.append(line)
    return lines


def _pace(think_ms: float) -> str:
    return f"paced {think_ms:g} ms" if think_ms else "closed loop"


def main_wrk(args: argparse.Namespace) -> int:
    """Throughput of the read routes relative to ``/healthz``, and the lease calls' latency
    with ``--clients`` agents, paced by each ``--think-ms`` and in closed loop (module
    docstring)."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    if args.smoke:
        args.clients, args.duration, args.studies, args.rounds = 5, 1.0, 5, 1
        args.large_trials = min(args.large_trials, 2000)
    thinks = sorted({float(t) for t in args.think_ms if t > 0})
    if not thinks:
        raise SystemExit("--think-ms: at least one think time > 0 ms")
    tag = "load_api_wrk_smoke" if args.smoke else "load_api_wrk"
    with tempfile.TemporaryDirectory(prefix="phitune-load-") as tmp:
        data_dir = Path(tmp)
        study_id, _ = seed_store(data_dir, args.studies)
        store = Store(f"sqlite:///{data_dir / 'phitune.db'}")
        leases = LeaseBench(store, args.clients, args.large_trials)
        env = {"PHITUNE_API_TOKEN": TOKEN, "PHITUNE_RECONCILE_INTERVAL_S": "0",
               "PHITUNE_MAX_CONCURRENT_STUDIES": str(args.studies + 10),
               "PHITUNE_LEASE_TTL_S": "86400",  # no lease expires during the bench
               "PHITUNE_LOCAL_RAY": "per-study"}  # reads need no Ray head
        proc, url = start_api(data_dir, None, data_dir / "api.log", extra_env=env)
        scenarios = [("/healthz", "/healthz"), ("GET study", f"/v1/studies/{study_id}"),
                     ("GET list(20)", "/v1/studies?limit=20")]
        rows = []
        # claims use up offered trials: closed loop, twice what the fastest claim run so far
        # took; paced, half again what the agents can ask for at most
        rate = 400.0

        def measure(rnd: int, name: str, think: float, run: Any) -> dict[str, Any]:
            load_before = os.getloadavg()[0]
            row = {"tool": "wrk", "round": rnd, "loop": "paced" if think else "closed",
                   "scenario": name, "clients": args.clients, "think_ms": think,
                   "duration_s": args.duration, **run(),
                   "loadavg_1m_before": round(load_before, 2),
                   "loadavg_1m_after": round(os.getloadavg()[0], 2)}
            print(f"round {rnd} {_pace(think):>13} {name:>24}: {row['rps']} req/s, p50 "
                  f"{row['p50_ms']} ms, p99 {row['p99_ms']} ms, non-2xx {row['non_2xx']} "
                  f"{row.get('statuses', '')}, load {row['loadavg_1m_before']}", flush=True)
            return row

        def target(name: str, think: float) -> int:
            if name in ("claim (201)", CLAIM_LARGE):
                return (math.ceil(1.5 * args.clients * args.duration * 1000 / think) if think
                        else math.ceil(2 * rate * args.duration)) + args.clients
            return 2 * args.clients

        def path_of(name: str) -> str:
            return LEASE_CALLS[name].split(" ", 2)[1].rstrip(",") if name in LEASE_CALLS \
                else name

        try:
            if not args.smoke:  # warm-up: connections, lazy imports, the claims' rate
                for _, path in scenarios:
                    run_wrk(url, path, args.clients, 1)
                for name in LEASE_CALLS:
                    warm = leases.run(url, data_dir, name, args.clients, 1, 3 * args.clients)
                    if name == "claim (201)":
                        rate = warm["rps"]
            for rnd in range(1, args.rounds + 1):
                shift = (rnd - 1) % len(scenarios)  # rotate the order: no route always first
                for name, path in scenarios[shift:] + scenarios[:shift]:
                    rows.append(measure(rnd, name, 0.0, lambda p=path: {
                        "path": p.replace(study_id, "{id}"),
                        **run_wrk(url, p, args.clients, args.duration)}))
                for think in [*thinks, 0.0]:
                    names = (["/healthz"] if think else []) + list(LEASE_CALLS)
                    for name in names:  # in an agent's order: claim, heartbeat, report
                        rows.append(measure(rnd, name, think, lambda n=name, th=think: {
                            "path": path_of(n),
                            **leases.run(url, data_dir, n, args.clients, args.duration,
                                         target(n, th), th)}))
                        if name == "claim (201)" and not think:
                            rate = max(rate, rows[-1]["rps"])
        finally:
            _stop(proc)
            leases.close()
            store.engine.dispose()
    goals = {"GET study": 0.5, "GET list(20)": 0.25}
    for r in rows:  # against /healthz of the same round and pace: the busy machine drifts
        healthz = next(h["rps"] for h in rows if h["round"] == r["round"]
                       and h["scenario"] == "/healthz" and h["think_ms"] == r["think_ms"])
        r["ratio_to_healthz"] = round(r["rps"] / healthz, 3) if healthz else float("nan")
        r["goal_ratio"] = goals.get(r["scenario"], "") if not r["think_ms"] else ""
        r["goal_p99_ms"] = LEASE_GOAL_P99_MS if r["scenario"] in LEASE_CALLS else ""
        r["offered_rps"] = (round(args.clients * 1000 / r["think_ms"]) if r["think_ms"]
                            else "")
    by_pace = {t: [r for r in rows if r["think_ms"] == t] for t in [*thinks, 0.0]}
    closed = by_pace[0.0]

    def of(group: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
        return [r for r in group if r["scenario"] == name]

    summary = {name: (_median(of(closed, name), "rps"), _median(of(closed, name),
                                                                "ratio_to_healthz"))
               for name, _ in scenarios}
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / f"{tag}.csv", rows)

    fig, (ax, lax) = new_figure(13, 4.2, ncols=2)
    names = [name for name, _ in scenarios]
    calls = ["/healthz", *LEASE_CALLS]
    for rnd in range(1, args.rounds + 1):
        ax.plot(names, [next(r["ratio_to_healthz"] for r in closed
                             if r["round"] == rnd and r["scenario"] == n) for n in names],
                "o", color="tab:blue", alpha=0.5, label="one round" if rnd == 1 else None)
    ax.plot(names, [summary[n][1] for n in names], "_", color="black", markersize=30,
            label="median")
    for name, goal in goals.items():
        i = names.index(name)
        ax.hlines(goal, i - 0.3, i + 0.3, colors="tab:red", linestyles="--",
                  label="goal" if name == "GET study" else None)
    ax.set_ylabel("throughput / /healthz (same round)")
    ax.set_ylim(0, max(1.1, 1.05 * max(r["ratio_to_healthz"] for r in closed
                                       if r["scenario"] in names)))
    ax.set_title(f"reads: wrk, {args.clients} connections (closed loop), one uvicorn "
                 f"process, {args.rounds} rounds", fontsize=10)
    colors = ["tab:green", "tab:olive", "tab:cyan", "tab:purple"]
    for k, (think, group) in enumerate(by_pace.items()):
        color = colors[k % len(colors)] if think else "tab:gray"
        label = (f"{think:g} ms think" if think else "closed loop (saturation)")
        xs = [c for c in calls if of(group, c)]
        lax.plot(xs, [_median(of(group, c), "p99_ms") for c in xs], "o", color=color,
                 label=f"p99, {label}")
        lax.plot(xs, [_median(of(group, c), "p50_ms") for c in xs], "x", color=color,
                 label=f"p50, {label}")
    lax.axhline(LEASE_GOAL_P99_MS, color="tab:red", linestyle="--", label="p99 goal")
    lax.set_yscale("log")
    lax.set_ylabel("latency (ms, log; median over rounds)")
    lax.set_title(f"lease calls: {args.clients} agents (wrk connections)", fontsize=10)
    lax.tick_params(axis="x", labelsize=7, labelrotation=20)
    for a in (ax, lax):
        a.legend(fontsize=7)
        a.grid(alpha=0.3)
    fig.savefig(args.out / f"{tag}.png", dpi=120, bbox_inches="tight")

    info = machine_info()
    command = (f"python -m bench.load_api --wrk --duration {args.duration:g} "
               f"--rounds {args.rounds} --think-ms {' '.join(f'{t:g}' for t in thinks)} "
               f"--large-trials {args.large_trials}" + (" --note ..." if args.note else ""))
    if args.smoke:
        command = "python -m bench.load_api --wrk --smoke"
    lines = [f"# API throughput relative to /healthz and lease-call latency ({args.clients} "
             "connections, wrk)", "",
             provenance_md(info, command, "n/a (no randomness)"), "",
             "| scenario | median req/s | median × /healthz | goal |", "|---|---|---|---|"]
    for name in names:
        goal = goals.get(name)
        verdict = "" if goal is None else (
            f"≥ {goal} ({'met' if summary[name][1] >= goal else 'missed'})")
        lines.append(f"| {name} | {summary[name][0]:.0f} | {summary[name][1]:.2f} | {verdict} |")

    verdicts: list[str] = []
    at = len(lines)
    for think in thinks:
        paced = by_pace[think]
        p99 = {n: _median(of(paced, n), "p99_ms") for n in LEASE_CALLS}
        met = [n for n, v in p99.items() if v <= LEASE_GOAL_P99_MS]
        worst = max(p99, key=lambda n: p99[n])
        healthz_p99 = _median(of(paced, "/healthz"), "p99_ms")
        offered = round(args.clients * 1000 / think)
        sent = {n: _median(of(paced, n), "rps") for n in LEASE_CALLS}
        verdicts.append(f"{think:g} ms think time: {len(met)} of {len(p99)} calls "
                        f"(slowest p99 {p99[worst]:.1f} ms, {worst})")
        lines += ["", f"## The lease calls, {args.clients} agents, {think:g} ms think time", "",
                  f"Goal (issue 22): p99 ≤ {LEASE_GOAL_P99_MS:g} ms for each call an agent "
                  f"makes. Each of the {args.clients} wrk connections is an agent that waits "
                  f"{think:g} ms on average (uniform in {think / 2:g}–{1.5 * think:g} ms, wrk's "
                  "`delay()`; not part of the latency) before each call of the run: at most "
                  f"**{offered} calls a second** of the kind measured ({args.clients} × 1000 / "
                  f"{think:g}). Real agents heartbeat every third of the lease TTL (every "
                  f"{60 / 3:g} s at the default 60 s: {args.clients} agents send "
                  f"{args.clients / 20:g} heartbeats a second) and claim and report once per "
                  "trial. Median over rounds; the verdict is on the median p99, the worst "
                  "round is shown next to it.", ""]
        lines += _lease_table(paced, ["/healthz", *LEASE_CALLS], goal=True)
        lines += ["", f"At {think:g} ms think time the lease goal (p99 ≤ "
                  f"{LEASE_GOAL_P99_MS:g} ms for every call) is "
                  f"**{'met' if len(met) == len(p99) else 'not met'}**: {len(met)} of "
                  f"{len(p99)} calls; the slowest is {worst} at p99 {p99[worst]:.1f} ms, next to "
                  f"/healthz's {healthz_p99:.1f} ms at the same pace. "
                  f"The agents sent {min(sent.values()):.0f}–{max(sent.values()):.0f} "
                  f"req/s of each call (offered {offered} at most: an agent waits for an "
                  "answer before it thinks again).", ""]

    lines[at:at] = ["", f"Lease calls, {args.clients} agents, p99 ≤ {LEASE_GOAL_P99_MS:g} ms: "
                    + "; ".join(verdicts) + ". Closed loop (no think time) measures "
                    "saturation, not an agent's wait (last section)."]
    size_lines = ["## A claim's cost and the study's size", "",
                  "Each claim run on the small study gets a fresh study holding only the "
                  "trials it may claim; the large study also holds "
                  f"{args.large_trials} finished trials (and every trial the earlier runs "
                  "on it claimed).", "",
                  "| load | study | trials in the study (median at the run's start) | "
                  "offered | median req/s | median p50 ms | median p99 ms |",
                  "|---|---|---|---|---|---|---|"]
    for think, group in by_pace.items():
        for name in ("claim (201)", CLAIM_LARGE):
            rs = of(group, name)
            size_lines.append(
                f"| {_pace(think)} | {'large' if name == CLAIM_LARGE else 'small'} | "
                f"{_median(rs, 'study_trials'):.0f} | {_median(rs, 'study_offered'):.0f} | "
                f"{_median(rs, 'rps'):.0f} | {_median(rs, 'p50_ms'):.1f} | "
                f"{_median(rs, 'p99_ms'):.1f} |")
    small, large = of(closed, "claim (201)"), of(closed, CLAIM_LARGE)
    grow = _median(large, "rps") / _median(small, "rps")
    slowest_pace = max(thinks)
    p99_grow = (_median(of(by_pace[slowest_pace], CLAIM_LARGE), "p99_ms")
                / _median(of(by_pace[slowest_pace], "claim (201)"), "p99_ms"))
    size = _median(large, "study_trials") / _median(small, "study_trials")
    size_lines += ["", f"With {size:.0f}× the trials, a claim runs at {grow:.2f}× the "
                   "closed-loop throughput (the per-claim cost) and has "
                   f"{p99_grow:.2f}× the p99 at {slowest_pace:g} ms think time: "
                   + ("within ±25 %, so a claim's cost does not grow with the study's trial "
                      "count" if 0.75 <= grow <= 1.25 and p99_grow <= 1.25 else
                      "more than 25 % apart: a claim's cost depends on the study's size")
                   + " (both of its lookups are index seeks, `service.store.external`).", ""]
    lines += size_lines

    slowest = min(LEASE_CALLS, key=lambda n: _median(of(closed, n), "rps"))
    slow_rps = _median(of(closed, slowest), "rps")
    lines += [f"## Saturation: the same calls in closed loop, {args.clients} connections, no "
              "think time", "",
              "Each connection sends its next call as soon as the last one is answered: this "
              "measures the server's throughput, not what an agent waits. By Little's law a "
              "call's mean latency is then connections / throughput, whatever the call: "
              f"{slowest} at {slow_rps:.0f} req/s keeps {args.clients} connections waiting "
              f"{1000 * args.clients / slow_rps:.0f} ms on average; even `/healthz` has a p99 "
              f"of {_median(of(closed, '/healthz'), 'p99_ms'):.0f} ms in closed loop here. A "
              f"p99 of {LEASE_GOAL_P99_MS:g} ms with {args.clients} saturating connections "
              f"would need well over {1000 * args.clients / LEASE_GOAL_P99_MS:.0f} req/s of "
              "each call.", ""]
    lines += _lease_table(closed, list(LEASE_CALLS), goal=False)
    lines += ["", "Every run (each ratio against `/healthz` of the same round and pace):", "",
              "| round | pace | scenario | req/s | × /healthz | p50 ms | p90 ms | p99 ms | "
              "non-2xx | answers | trials in study | load avg before → after |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['round']} | {_pace(r['think_ms'])} | {r['scenario']} | {r['rps']} "
                     f"| {r['ratio_to_healthz']} | {r['p50_ms']} | {r['p90_ms']} | "
                     f"{r['p99_ms']} | {r['non_2xx']} | {r.get('statuses', '')} | "
                     f"{r.get('study_trials', '')} | "
                     f"{r['loadavg_1m_before']} → {r['loadavg_1m_after']} |")
    loads = [r["loadavg_1m_before"] for r in rows]
    lines += ["", f"Server, wrk and any other jobs share this machine's {os.cpu_count()} CPUs; "
              f"the 1-minute load average before the runs was {min(loads):g}–{max(loads):g} "
              "(see each run). The read goals are ratios, so each route is compared with "
              "`/healthz` measured in the same round against the same server, and the median "
              "over rounds is reported. `/healthz` goes through the same middleware and auth "
              "dependency as the other routes.", "",
              "How the lease calls are measured: running `trainer: external` studies are "
              "seeded in the store with the rows the driver's proxy trainables offer "
              "(`offer_trial`'s, many per transaction) and leases by `claim_trial` (no driver, "
              "no Ray: the API reads the same rows; their \"driver\" is a `sleep`, so "
              "reconcile leaves them alone). A Lua script sends the bearer token and an "
              f"`X-Phitune-Agent` header, the agents ({args.clients}) taken round robin, "
              "counts the answers and, paced, waits the think time. **claim (201)**: a fresh "
              "study per run holding the trials the run may claim (closed loop twice what the "
              "fastest claim run so far took, paced 1.5 × what the agents can ask for), so "
              "every claim gets a new lease (the answers column shows any 204). **claim "
              "(201), large study**: the same on the large study. **heartbeat**: one lease "
              "per agent on a third study, its ids collected when seeding; each heartbeat "
              "comes from the lease's own agent. **claim (204 poll)**: claims on that study, "
              "where every trial is leased: the idle agent's poll. **result (first)**: the "
              f"leases the claim run before took (at least {2 * args.clients}: topped up by "
              "claims in the store), each reported once by its agent; the run ends when they "
              "are all reported, so it can be shorter than the others; wrk still divides by "
              "`--duration`, so its req/s is connections / (mean latency + think time) (one "
              "request in flight per connection; wrk's own figure is `rps_wrk` in the CSV), "
              "and the requests then in flight are repeats, counted in the table. **result "
              "(repeat)**: every lease reported so far reports the same body again (200, "
              "idempotent). The lease TTL is set to a day so no lease expires during the "
              "bench. A claim, a heartbeat and a first report are writes (one conditional "
              "`UPDATE`; a claim adds a lease row), serialised by SQLite's write lock, each "
              "committed to the WAL with an fsync (SQLite's default `synchronous=FULL`).", "",
              "The read routes' before/after comparison of issue 22's read change (rows in "
              "`load_api_wrk_before.csv`) is in an earlier version of this file (`git show "
              "310b1de:bench/results/load_api_wrk.md`); the closed-loop-only lease run with "
              "the claim's old OR query (p99 1–2.3 s, its claim study 6514 trials) is `git "
              "show e282cda:bench/results/load_api_wrk.md`.",
              "", f"![throughput ratios and lease latency]({tag}.png)", ""]
    if args.note:
        lines[-2:-2] = [args.note, ""]
    (args.out / f"{tag}.md").write_text("\n".join(lines))
    return 0


def main_asgi(args: argparse.Namespace) -> int:
    """Per-request cost of the read routes through the ASGI app, in-process (module doc)."""
    from service.api.main import create_app
    from service.config import Settings

    with tempfile.TemporaryDirectory(prefix="phitune-load-") as tmp:
        data_dir = Path(tmp)
        study_id, _ = seed_store(data_dir, args.studies)
        settings = Settings(data_dir=data_dir, api_token=TOKEN, reconcile_interval_s=0,
                            local_ray="per-study", max_concurrent_studies=args.studies + 10)
        app = create_app(settings)
        app.state.store = Store(settings.sqlalchemy_url)  # what the lifespan sets for reads
        scenarios = [("/healthz", "/healthz", b""), ("GET study", f"/v1/studies/{study_id}", b""),
                     ("GET list(20)", "/v1/studies", b"limit=20")]

        async def call(path: str, query: bytes) -> None:
            sent: list[dict[str, Any]] = []

            async def receive() -> dict[str, Any]:
                return {"type": "http.request", "body": b"", "more_body": False}

            async def send(message: dict[str, Any]) -> None:
                sent.append(message)

            await app({"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
                       "method": "GET", "scheme": "http", "path": path,
                       "raw_path": path.encode(), "query_string": query, "root_path": "",
                       "headers": [(b"host", b"127.0.0.1"),
                                   (b"authorization", f"Bearer {TOKEN}".encode())],
                       "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 8000),
                       "state": {}}, receive, send)
            assert sent[0]["status"] == 200, sent

        async def per_request_us(path: str, query: bytes, n: int) -> float:
            async def worker() -> None:
                for _ in range(n // args.clients):
                    await call(path, query)
            t0 = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(args.clients)))
            return (time.perf_counter() - t0) / (n // args.clients * args.clients) * 1e6

        async def run() -> list[dict[str, Any]]:
            out = []
            for _, path, query in scenarios:  # warm-up: imports, caches, connections
                await per_request_us(path, query, 4 * args.clients)
            for rnd in range(1, args.rounds + 1):
                for name, path, query in scenarios:
                    load = os.getloadavg()[0]
                    out.append({"tool": "asgi", "round": rnd, "scenario": name,
                                "clients": args.clients, "requests": 20 * args.clients,
                                "us_per_request": round(await per_request_us(
                                    path, query, 20 * args.clients), 1),
                                "loadavg_1m_before": round(load, 2)})
            return out

        rows = asyncio.run(run())
        app.state.store.engine.dispose()
    best = {name: min(r["us_per_request"] for r in rows if r["scenario"] == name)
            for name, _, _ in scenarios}
    goals = {"GET study": 0.5, "GET list(20)": 0.25}
    for r in rows:
        r["best_us"] = best[r["scenario"]]
        r["ratio_to_healthz"] = round(best["/healthz"] / best[r["scenario"]], 3)
        r["goal_ratio"] = goals.get(r["scenario"], "")
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "load_api_asgi.csv", rows)
    info = machine_info()
    command = f"python -m bench.load_api --asgi --rounds {args.rounds} --clients {args.clients}"
    lines = [f"# Read routes' cost through the ASGI app ({args.clients} concurrent requests, "
             "in-process)", "", provenance_md(info, command, "n/a (no randomness)"), "",
             "| scenario | best µs / request | rate × /healthz | goal |",
             "|---|---|---|---|"]
    for name, _, _ in scenarios:
        ratio = best["/healthz"] / best[name]
        goal = goals.get(name)
        verdict = "" if goal is None else f"≥ {goal} ({'met' if ratio >= goal else 'missed'})"
        lines.append(f"| {name} | {best[name]:.0f} | {ratio:.2f} | {verdict} |")
    lines += ["", "Per request, the best of the rounds (other jobs on the machine only ever "
              "add time). No sockets and no HTTP parsing: those cost every route the same, so "
              "the ratios over HTTP (`load_api_wrk.md`) are higher than these.", ""]
    if args.note:
        lines += [args.note, ""]
    (args.out / "load_api_asgi.md").write_text("\n".join(lines))
    for line in lines[-(len(scenarios) + 5):]:
        print(line)
    return 0


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--duration", type=float, default=30.0)
    parser.add_argument("--studies", type=int, default=200)
    parser.add_argument("--think", type=float, default=1.0,
                        help="seconds between a polling client's requests")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--wrk", action="store_true",
                        help="throughput relative to /healthz with wrk (issue #12 goals)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="--wrk, --asgi: rounds of (/healthz, GET study, GET list(20))")
    parser.add_argument("--asgi", action="store_true",
                        help="per-request cost through the ASGI app in-process (cross-check)")
    parser.add_argument("--think-ms", type=float, nargs="+", default=[100.0, 1000.0],
                        help="--wrk: agents' mean think times before each lease call (ms), "
                        "one paced run of every call per value")
    parser.add_argument("--large-trials", type=int, default=50_000,
                        help="--wrk: finished trials of the large claim study")
    parser.add_argument("--note", default="",
                        help="--wrk, --asgi: a paragraph added to the report (a before/after)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if args.wrk:
        return main_wrk(args)
    if args.asgi:
        return main_asgi(args)
    if args.smoke:
        args.clients, args.duration, args.studies, args.think = 5, 2.0, 5, 0.2
    tag = "load_api_smoke" if args.smoke else "load_api"

    with tempfile.TemporaryDirectory(prefix="phitune-load-") as tmp:
        data_dir = Path(tmp)
        study_id, key = seed_store(data_dir, args.studies)
        # no scenario starts a study (the POST replays an existing one), so no Ray: without
        # per-study, `phitune serve` would start the shared head, which outlives the server
        env = {"PHITUNE_API_TOKEN": TOKEN, "PHITUNE_RECONCILE_INTERVAL_S": "0",
               "PHITUNE_MAX_CONCURRENT_STUDIES": str(args.studies + 10),
               "PHITUNE_LOCAL_RAY": "per-study"}
        proc, url = start_api(data_dir, None, data_dir / "api.log", extra_env=env)
        scenarios = {
            "GET study": {"method": "GET", "url": f"/v1/studies/{study_id}"},
            "GET list(20)": {"method": "GET", "url": "/v1/studies", "params": {"limit": 20}},
            "POST replay": {"method": "POST", "url": "/v1/studies", "json": SPEC,
                            "headers": {"Idempotency-Key": key}},
            "POST invalid": {"method": "POST", "url": "/v1/studies",
                             "json": {**SPEC, "model": "no-such-model"}},
        }
        rows, samples = [], {}
        try:
            runs = [("saturated", name, request, 0.0) for name, request in scenarios.items()]
            runs += [("polling", name, scenarios[name], args.think)
                     for name in ("GET study", "GET list(20)", "POST replay")]
            for shape, name, request, think in runs:
                load_before = os.getloadavg()[0]
                latencies, statuses, elapsed = asyncio.run(
                    run_scenario(url, request, args.clients, args.duration, think))
                ms = [x * 1000 for x in latencies]
                samples[f"{name}, {shape}"] = ms
                rows.append({
                    "shape": shape, "scenario": name, "clients": args.clients,
                    "think_s": think, "duration_s": round(elapsed, 2),
                    "requests": len(ms), "rps": round(len(ms) / elapsed, 1),
                    "p50_ms": round(quantile(ms, 0.50), 2),
                    "p90_ms": round(quantile(ms, 0.90), 2),
                    "p99_ms": round(quantile(ms, 0.99), 2),
                    "max_ms": round(max(ms), 2), "mean_ms": round(statistics.fmean(ms), 2),
                    "statuses": " ".join(f"{k}:{v}" for k, v in sorted(statuses.items())),
                    "loadavg_1m_before": round(load_before, 2),
                    "loadavg_1m_after": round(os.getloadavg()[0], 2),
                })
                print(f"{shape:>9} {name:>14}: {rows[-1]['requests']} req, "
                      f"{rows[-1]['rps']} req/s, p50 {rows[-1]['p50_ms']} ms, "
                      f"p99 {rows[-1]['p99_ms']} ms [{rows[-1]['statuses']}]", flush=True)
        finally:
            _stop(proc)

    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / f"{tag}.csv", rows)
    fig, axes = new_figure(11, 4, ncols=2)
    for ax, shape in zip(axes, ("saturated", "polling"), strict=True):
        for label, ms in samples.items():
            if not label.endswith(shape):
                continue
            ordered = sorted(ms)
            ax.plot(ordered, [(i + 1) / len(ordered) for i in range(len(ordered))],
                    label=label.rsplit(",", 1)[0])
        ax.axvline(50, color="grey", linestyle="--", linewidth=1, label="50 ms (read goal)")
        ax.set_xscale("log")
        ax.set_xlabel("latency (ms, log)")
        ax.set_ylabel("fraction of requests ≤ x")
        think = "" if shape == "saturated" else f", {args.think:g} s think time"
        ax.set_title(f"{shape}: {args.clients} clients{think}", fontsize=10)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.savefig(args.out / f"{tag}.png", dpi=120, bbox_inches="tight")

    info = machine_info()
    command = "python -m bench.load_api" + (" --smoke" if args.smoke else "")
    lines = [f"# API latency under load ({args.clients} concurrent clients)", "",
             provenance_md(info, command, "n/a (no randomness)"), "",
             "| load shape | scenario | requests | req/s | p50 ms | p90 ms | p99 ms | max ms "
             "| statuses | load avg before |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['shape']} | {r['scenario']} | {r['requests']} | {r['rps']} | "
                     f"{r['p50_ms']} | {r['p90_ms']} | {r['p99_ms']} | {r['max_ms']} | "
                     f"{r['statuses']} | {r['loadavg_1m_before']} |")
    polling_p99 = max(r["p99_ms"] for r in rows
                      if r["shape"] == "polling" and r["scenario"].startswith("GET"))
    best_rps = max(r["rps"] for r in rows if r["shape"] == "saturated")
    saturated_p50 = min(r["p50_ms"] for r in rows if r["shape"] == "saturated")
    lines += ["", f"Read p99 with polling clients ({args.think:g} s think time): "
              f"**{polling_p99} ms** ({'meets' if polling_p99 <= 50 else 'misses'} the 50 ms "
              f"goal). Saturated, the single uvicorn process serves up to {best_rps} req/s; "
              f"latency is then {args.clients} clients / throughput (Little's law), here a "
              f"p50 of {saturated_p50} ms or more. The load generator runs on the same cores; "
              "`load avg` is the machine's 1-minute load average before each run (other jobs "
              "on the machine included).",
              "", f"![latency CDF]({tag}.png)", ""]
    (args.out / f"{tag}.md").write_text("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
