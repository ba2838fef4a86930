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

``--asgi`` is the cross-check that a busy machine cannot skew as much: the same three
requests driven through the whole ASGI app in-process (middleware, auth, routing,
dependencies, the thread-pool hop, the route; no sockets, no HTTP parsing, which costs every
route the same), ``--clients`` at a time; per request the best of ``--rounds`` repeats, so
time other jobs took from the CPU counts as little as possible.

    python -m bench.load_api                 # 50 clients, 30 s per scenario
    python -m bench.load_api --wrk --duration 10 --rounds 3
    python -m bench.load_api --asgi --rounds 5
    python -m bench.load_api --smoke         # 5 clients, 2 s per scenario (test suite)
"""

from __future__ import annotations

import argparse
import asyncio
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

from bench.common import machine_info, new_figure, provenance_md, write_csv
from service.cli.demo import _stop, start_api
from service.schemas import StudyCreate
from service.store import Store

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


def run_wrk(url: str, path: str, clients: int, duration: float) -> dict[str, Any]:
    """One ``wrk`` run (2 threads, ``clients`` keep-alive connections); parsed summary."""
    out = subprocess.run(
        ["wrk", "-t", "2", "-c", str(clients), "-d", f"{duration:g}s", "--timeout", "20s",
         "--latency",
         "-H", f"Authorization: Bearer {TOKEN}", url + path],
        capture_output=True, text=True, check=True, timeout=duration + 60).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    pct = dict(re.findall(r"^\s+(50|90|99)%\s+(\S+)", out, re.M))
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {"requests": requests, "rps": rps, "p50_ms": round(_ms(pct["50"]), 2),
            "p90_ms": round(_ms(pct["90"]), 2), "p99_ms": round(_ms(pct["99"]), 2),
            "non_2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": errors.group(1).strip() if errors else ""}


def main_wrk(args: argparse.Namespace) -> int:
    """Throughput of the read routes relative to ``/healthz`` (see the module docstring)."""
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install -y wrk")
    with tempfile.TemporaryDirectory(prefix="phitune-load-") as tmp:
        data_dir = Path(tmp)
        study_id, _ = seed_store(data_dir, args.studies)
        env = {"PHITUNE_API_TOKEN": TOKEN, "PHITUNE_RECONCILE_INTERVAL_S": "0",
               "PHITUNE_MAX_CONCURRENT_STUDIES": str(args.studies + 10),
               "PHITUNE_LOCAL_RAY": "per-study"}  # reads need no Ray head
        proc, url = start_api(data_dir, None, data_dir / "api.log", extra_env=env)
        scenarios = [("/healthz", "/healthz"), ("GET study", f"/v1/studies/{study_id}"),
                     ("GET list(20)", "/v1/studies?limit=20")]
        rows = []
        try:
            for _, path in scenarios:
                run_wrk(url, path, args.clients, 1)  # warm-up: connections, lazy imports
            for rnd in range(1, args.rounds + 1):
                shift = (rnd - 1) % len(scenarios)  # rotate the order: no route always first
                for name, path in scenarios[shift:] + scenarios[:shift]:
                    load_before = os.getloadavg()[0]
                    row = {"tool": "wrk", "round": rnd, "scenario": name,
                           "path": path.replace(study_id, "{id}"), "clients": args.clients,
                           "duration_s": args.duration,
                           **run_wrk(url, path, args.clients, args.duration),
                           "loadavg_1m_before": round(load_before, 2),
                           "loadavg_1m_after": round(os.getloadavg()[0], 2)}
                    rows.append(row)
                    print(f"round {rnd} {name:>13}: {row['rps']} req/s, p50 {row['p50_ms']} "
                          f"ms, p99 {row['p99_ms']} ms, non-2xx {row['non_2xx']}, load "
                          f"{row['loadavg_1m_before']}", flush=True)
        finally:
            _stop(proc)
    goals = {"GET study": 0.5, "GET list(20)": 0.25}
    for r in rows:  # against /healthz of the same round: the busy machine drifts between
        healthz = next(h["rps"] for h in rows
                       if h["round"] == r["round"] and h["scenario"] == "/healthz")
        r["ratio_to_healthz"] = round(r["rps"] / healthz, 3) if healthz else float("nan")
        r["goal_ratio"] = goals.get(r["scenario"], "")
    summary = {name: (statistics.median(r["rps"] for r in rows if r["scenario"] == name),
                      statistics.median(r["ratio_to_healthz"] for r in rows
                                        if r["scenario"] == name))
               for name, _ in scenarios}
    args.out.mkdir(parents=True, exist_ok=True)
    write_csv(args.out / "load_api_wrk.csv", rows)
    fig, ax = new_figure(6.5, 3.5)
    names = [name for name, _ in scenarios]
    for rnd in range(1, args.rounds + 1):
        ax.plot(names, [next(r["ratio_to_healthz"] for r in rows
                             if r["round"] == rnd and r["scenario"] == n) for n in names],
                "o", color="tab:blue", alpha=0.5, label="one round" if rnd == 1 else None)
    ax.plot(names, [summary[n][1] for n in names], "_", color="black", markersize=30,
            label="median")
    for name, goal in goals.items():
        i = names.index(name)
        ax.hlines(goal, i - 0.3, i + 0.3, colors="tab:red", linestyles="--",
                  label="goal" if name == "GET study" else None)
    ax.set_ylabel("throughput / /healthz (same round)")
    ax.set_ylim(0, max(1.1, 1.05 * max(r["ratio_to_healthz"] for r in rows)))
    ax.set_title(f"wrk, {args.clients} connections, one uvicorn process, {args.rounds} rounds",
                 fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.savefig(args.out / "load_api_wrk.png", dpi=120, bbox_inches="tight")
    info = machine_info()
    command = (f"python -m bench.load_api --wrk --duration {args.duration:g} "
               f"--rounds {args.rounds}" + (" --note ..." if args.note else ""))
    lines = [f"# API throughput relative to /healthz ({args.clients} connections, wrk)", "",
             provenance_md(info, command, "n/a (no randomness)"), "",
             "| scenario | median req/s | median × /healthz | goal |", "|---|---|---|---|"]
    for name in names:
        goal = goals.get(name)
        verdict = "" if goal is None else (
            f"≥ {goal} ({'met' if summary[name][1] >= goal else 'missed'})")
        lines.append(f"| {name} | {summary[name][0]:.0f} | {summary[name][1]:.2f} | {verdict} |")
    lines += ["", "Every run (each ratio against `/healthz` of the same round):", "",
              "| round | scenario | req/s | × /healthz | p50 ms | p90 ms | p99 ms | non-2xx "
              "| load avg before → after |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['round']} | {r['scenario']} | {r['rps']} | {r['ratio_to_healthz']} "
                     f"| {r['p50_ms']} | {r['p90_ms']} | {r['p99_ms']} | {r['non_2xx']} | "
                     f"{r['loadavg_1m_before']} → {r['loadavg_1m_after']} |")
    lines += ["", "Server, wrk and other jobs share this machine's 2 CPUs; during this run "
              "several other agents were using them (see the load averages, far above 2), so "
              "absolute numbers are low and noisy. The goals are ratios, so each route is "
              "compared with `/healthz` measured in the same round against the same server, "
              "and the median over rounds is reported. `/healthz` itself goes through the "
              "same middleware and auth dependency as the other routes.", "",
              "![throughput ratios](load_api_wrk.png)", ""]
    if args.note:
        lines[-2:-2] = [args.note, ""]
    (args.out / "load_api_wrk.md").write_text("\n".join(lines))
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
