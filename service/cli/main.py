"""``phitune`` command line: serve the API, submit specs, watch studies, fetch the best φ.

Errors are one line on stderr and exit status 2 (bad input) or 1 (failure), never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from service.cli import agent, schedules
from service.cli.format import CLIError, format_best, format_winner, load_spec, print_json

DEFAULT_URL = os.environ.get("PHITUNE_URL", "http://127.0.0.1:8000")


def _client(args: argparse.Namespace) -> Any:
    from service.client import PhiTuneClient

    return PhiTuneClient(args.url, token=args.token or os.environ.get("PHITUNE_TOKEN"))


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.api.auth import listening_socket
    from service.api.main import create_app
    from service.config import Settings
    from service.launch.ray_head import with_shared_head

    overrides: dict[str, Any] = {}
    if args.host:
        overrides["host"] = args.host
    if args.port:
        overrides["port"] = args.port
    settings = Settings(**overrides)
    try:
        settings.check_exposure()  # before starting anything
        # one local Ray head (one dashboard) for every driver, unless a cluster is configured
        settings = with_shared_head(settings)
        app = create_app(settings)
    except (ValueError, RuntimeError) as exc:  # an exposed API without a token; no Ray head
        raise CLIError(str(exc)) from None
    if settings.ray_dashboard_address and settings.local_ray == "shared":
        print(f"Ray dashboard: {settings.ray_dashboard_address}", file=sys.stderr, flush=True)
    try:  # the address really bound, not only the configured name, must be loopback
        sock = listening_socket(settings.host, settings.port,
                                has_token=settings.resolved_api_token() is not None)
    except (OSError, ValueError) as exc:
        raise CLIError(f"cannot serve on {settings.host}:{settings.port}: {exc}") from None
    server = uvicorn.Server(uvicorn.Config(app, log_level=args.log_level))
    server.run(sockets=[sock])
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    with _client(args) as client:
        study = client.submit(load_spec(args.spec), idempotency_key=args.idempotency_key)
        if args.json and not args.watch:
            print_json(study.model_dump(mode="json"))
        else:
            print(study.id)
        if args.watch:
            study = client.wait(study.id, progress=True, poll=args.poll)
            return _report_final(client, study, as_json=args.json)
    return 0


def _report_final(client: Any, study: Any, *, as_json: bool = False) -> int:
    if study.status != "succeeded":
        print(f"study {study.id} {study.status}: {study.error}", file=sys.stderr)
        return 1
    best = client.best(study.id)
    if as_json:
        print_json(best.model_dump(mode="json"))
    else:
        print(format_best(best))
        advice = format_winner(client.result(study.id))
        if advice:
            print(advice)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from service.client import format_progress

    with _client(args) as client:
        study = client.get(args.study_id)
        if args.json:
            print_json(study.model_dump(mode="json"))
        else:
            print(f"{study.id} {study.name or ''}".strip())
            print(format_progress(study))
            if study.dashboard_url:
                print(f"Ray dashboard: {study.dashboard_url}")
            if study.error:
                print(f"error: {study.error}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        studies = client.list(status=args.status, limit=args.limit, offset=args.offset)
    if args.json:
        print_json(studies.model_dump(mode="json"))
        return 0
    for s in studies.data:
        best = "" if s.progress.best_value is None else f" best={s.progress.best_value:.4f}"
        what = "external" if s.spec.trainer == "external" else f"{s.spec.model}/{s.spec.dataset}"
        print(f"{s.id}  {s.status:<9} {what}{best}")
    return 0


def cmd_trials(args: argparse.Namespace) -> int:
    with _client(args) as client:
        trials = client.trials(args.study_id, status=args.status,
                               budget_steps=args.budget_steps, limit=args.limit,
                               offset=args.offset)
    if args.json:
        print_json(trials.model_dump(mode="json"))
        return 0
    for t in trials.data:
        metrics = " ".join(f"{k}={v:.4g}" for k, v in sorted(t.metrics.items()))
        params = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                          for k, v in sorted(t.params.items()))
        print(f"{t.trial_id}  {t.status:<10} budget={t.budget_steps} step={t.step} "
              f"{params} {metrics}".rstrip())
    return 0


def cmd_grad_norms(args: argparse.Namespace) -> int:
    with _client(args) as client:
        norms = client.grad_norms(args.study_id, args.trial_id)
    if args.json:
        print_json(norms.model_dump(mode="json"))
        return 0
    finite = [v for v in norms.values if v is not None]
    summary = (f"min={min(finite):.4g} median={sorted(finite)[len(finite) // 2]:.4g} "
               f"max={max(finite):.4g}" if finite else "no finite values")
    print(f"{norms.trial_id}  {norms.norm} norm of {norms.total_steps} updates "
          f"(stride {norms.stride}; refine with optimizer={norms.refine_optimizer()}): {summary}")
    return 0


def cmd_result(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.result(args.study_id)
    if args.json:
        print_json(result.model_dump(mode="json"))
        return 0
    for b in result.budgets:
        best = format_best(b.best) if b.best else "no trial finished"
        print(f"budget {b.budget_steps} steps ({b.fraction:.0%}), {b.num_trials} trials, "
              f"{b.num_failed} failed: {best}")
    return 0


def cmd_best(args: argparse.Namespace) -> int:
    with _client(args) as client:
        best = client.best(args.study_id)
        result = None if args.json else client.result(args.study_id)
    if args.json:
        print_json(best.model_dump(mode="json"))
    else:
        print(format_best(best))
        advice = format_winner(result)
        if advice:
            print(advice)
    return 0


def cmd_budgets(args: argparse.Namespace) -> int:
    with _client(args) as client:
        budgets = client.budgets(args.study_id)
    if args.json:
        print_json(budgets.model_dump(mode="json"))
        return 0
    print(f"{budgets.metric} ({budgets.mode}) by budget:")
    for row in budgets.curve:
        print("  " + "  ".join(f"{k}={v}" for k, v in row.model_dump().items()))
    for base in budgets.baselines:
        print("  baseline " + "  ".join(f"{k}={v}" for k, v in base.model_dump().items()))
    if budgets.target is not None:
        print("target: " + "  ".join(f"{k}={v}" for k, v in budgets.target.model_dump().items()))
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    with _client(args) as client:
        png = client.plot(args.study_id, args.which)
    out = Path(args.output or f"{args.study_id}-{args.which}.png")
    try:
        out.write_bytes(png)
    except OSError as exc:
        raise CLIError(f"cannot write {str(out)!r}: {exc.strerror}") from None
    print(out)
    return 0


def cmd_curvature(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.curvature(load_spec(args.spec), wait=not args.no_wait,
                               timeout=args.timeout, poll=args.poll)
    if args.json:
        print_json(job.model_dump(mode="json"))
        return 0
    print(f"{job.id} {job.status}")
    if job.error:
        print(f"error: {job.error}")
    for s in job.suggestions or []:
        print("  " + "  ".join(f"{k}={v}" for k, v in s.items()))
    return 0 if job.status in ("succeeded", "queued", "running") else 1


def cmd_recommend(args: argparse.Namespace) -> int:
    """``phitune recommend spec.yaml``: the φ and phases to start that study from (a spec
    whose curvature is measured is a job on the server: polled until it ends)."""
    from service.client import PhiTuneClient

    token = args.token or os.environ.get("PHITUNE_TOKEN")
    with PhiTuneClient(args.url, token=token) as client:
        rec = client.recommend(load_spec(args.spec), timeout=args.timeout)
    if args.json:
        print_json(rec.model_dump(mode="json"))
        return 0
    print(f"phi={rec.phi:g} phases={rec.phases} source={rec.source} "
          f"(budget {rec.budget_steps} steps, {rec.optimizer})")
    for unit, gap in rec.expected_gap.items():
        print(f"  expected gap to the tuned φ ({unit}): median {gap.get('median')}, "
              f"p90 {gap.get('p90')}, worst {gap.get('worst')} over {gap.get('n')} cases")
    for s in rec.suggestions:
        print(f"  {s['source']:>14}  phi={s['phi']:.4g}"
              + (f"  ({s['kappa_definition']} κ)" if s.get("kappa_definition") else ""))
    for w in rec.warnings:
        print(f"  warning: {w}")
    return 0


def cmd_recommend_phi(args: argparse.Namespace) -> int:
    with _client(args) as client:
        rec = client.recommend_phi(args.model, args.dataset, args.optimizer, args.budget)
    if args.json:
        print_json(rec.model_dump(mode="json"))
        return 0
    print(f"phi={rec.phi:g} source={rec.source} ({rec.history_studies} past studies)")
    for s in rec.suggestions:
        print("  " + "  ".join(f"{k}={v}" for k, v in s.items()))
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    with _client(args) as client:
        study = client.wait(args.study_id, progress=True, poll=args.poll, timeout=args.timeout)
        return _report_final(client, study, as_json=args.json)


def cmd_cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        study = client.cancel(args.study_id)
    if args.json:
        print_json(study.model_dump(mode="json"))
    else:
        print(f"{study.id} {study.status}")
    return 0


def cmd_extend(args: argparse.Namespace) -> int:
    with _client(args) as client:
        study = client.extend(args.study_id, args.iterations)
        if args.json and not args.watch:
            print_json(study.model_dump(mode="json"))
        else:
            print(f"{study.id} {study.status} (num_trials={study.spec.num_trials}, "
                  f"ladder.iterations={study.spec.ladder.iterations})")
        if args.watch:
            study = client.wait(study.id, progress=True, poll=args.poll)
            return _report_final(client, study, as_json=args.json)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from service.cli.demo import run_demo

    return run_demo(data_dir=Path(args.data_dir), steps=args.steps, trials=args.trials)


#: Top-level module -> the extra that installs it. A verb that needs the server or the
#: schedule library names the extra instead of failing with a traceback on the base install.
_EXTRA_OF = {"torch": "schedules", "numpy": "schedules", "matplotlib": "server", "ray": "server",
             "optuna": "server", "fastapi": "server", "starlette": "server", "uvicorn": "server",
             "sqlalchemy": "server", "alembic": "server", "pydantic_settings": "server",
             "scipy": "server"}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("phitune")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _study_id(p: argparse.ArgumentParser) -> None:
    p.add_argument("study_id", help="the study's id (printed by submit, listed by list)")


def _json(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print the API's JSON response")


def _watch_args(p: argparse.ArgumentParser, timeout: bool = True) -> None:
    p.add_argument("--poll", type=float, default=2.0,
                   help="seconds between status polls (default 2)")
    if timeout:
        p.add_argument("--timeout", type=float,
                       help="give up after this many seconds (default: wait forever)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="phitune", description="Tune the UBA learning-rate schedule for a fixed budget.")
    parser.add_argument("--version", action="version", version=f"phitune {_version()}",
                        help="print the installed phitune version and exit")
    parser.add_argument("--url", default=DEFAULT_URL, help="API URL (env PHITUNE_URL)")
    parser.add_argument("--token", default=None, help="API token (env PHITUNE_TOKEN)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("serve", help="run the API server (settings from PHITUNE_* env; "
                       "needs phitune[server])")
    p.add_argument("--host", help="bind address (default PHITUNE_HOST or 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default PHITUNE_PORT or 8000)")
    p.add_argument("--log-level", default="info", help="uvicorn log level (default info)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("submit", help="submit a study spec (YAML or JSON file, - for stdin)")
    p.add_argument("spec", help="path of the spec file (YAML or JSON), - for stdin")
    p.add_argument("--watch", action="store_true", help="follow progress, print the best")
    _watch_args(p, timeout=False)
    p.add_argument("--idempotency-key",
                   help="submitting again with the same key returns the same study")
    _json(p)
    p.set_defaults(func=cmd_submit)

    p = sub.add_parser("status", help="a study's status and progress")
    _study_id(p)
    _json(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("list", help="list studies, newest first")
    p.add_argument("--status", help="only studies in this state (queued, running, succeeded, "
                   "failed, cancelled)")
    p.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    p.add_argument("--offset", type=int, default=0, help="skip this many (paging)")
    _json(p)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("trials", help="a study's trials: parameters, step, metrics")
    _study_id(p)
    p.add_argument("--status", help="only trials in this state (e.g. terminated, error)")
    p.add_argument("--budget-steps", type=int, help="only trials of this budget (steps)")
    p.add_argument("--limit", type=int, default=1000, help="at most this many (default 1000)")
    p.add_argument("--offset", type=int, default=0, help="skip this many (paging)")
    _json(p)
    p.set_defaults(func=cmd_trials)

    p = sub.add_parser("grad-norms", help="a finished trial's gradient norm per update (the "
                       "input of a refined schedule)")
    _study_id(p)
    p.add_argument("trial_id", help="the trial's id (see `phitune trials`)")
    _json(p)
    p.set_defaults(func=cmd_grad_norms)

    p = sub.add_parser("result", help="the full result of a finished study (every budget)")
    _study_id(p)
    _json(p)
    p.set_defaults(func=cmd_result)

    p = sub.add_parser("best", help="the best schedule of a finished study")
    _study_id(p)
    _json(p)
    p.set_defaults(func=cmd_best)

    p = sub.add_parser("budgets", help="metric vs budget, baselines, smallest budget to target")
    _study_id(p)
    _json(p)
    p.set_defaults(func=cmd_budgets)

    p = sub.add_parser("plot", help="save a study plot as PNG")
    _study_id(p)
    p.add_argument("--which", choices=("budgets", "phi"), default="budgets",
                   help="budgets: metric vs budget; phi: metric vs φ (default budgets)")
    p.add_argument("-o", "--output", help="PNG file to write (default <id>-<which>.png)")
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser("curvature", help="estimate the Hessian spectrum and its φ suggestions")
    p.add_argument("spec", help="curvature request file (YAML or JSON), - for stdin")
    p.add_argument("--no-wait", action="store_true", help="print the queued job and return")
    p.add_argument("--timeout", type=float, default=600.0,
                   help="give up waiting after this many seconds (default 600)")
    p.add_argument("--poll", type=float, default=1.0,
                   help="seconds between status polls (default 1)")
    _json(p)
    p.set_defaults(func=cmd_curvature)

    p = sub.add_parser("recommend", help="the φ and phases to start a study spec from "
                       "(measures curvature as a job on the server; evidence and expected "
                       "gap)")
    p.add_argument("spec", help="study spec file (YAML or JSON, as for submit), - for stdin")
    p.add_argument("--timeout", type=float, default=300.0,
                   help="seconds to wait for the answer (default 300)")
    _json(p)
    p.set_defaults(func=cmd_recommend)

    p = sub.add_parser("recommend-phi", help="the φ to start from for a model, dataset and "
                       "optimizer, from past studies and calibration (no measurement)")
    p.add_argument("model", help="model name from the registry, e.g. mlp")
    p.add_argument("dataset", help="dataset name from the registry, e.g. digits")
    p.add_argument("--optimizer", default="sgd", choices=("sgd", "adamw"),
                   help="optimizer of the run (default sgd)")
    p.add_argument("--budget", type=int, help="training budget in steps (history match)")
    _json(p)
    p.set_defaults(func=cmd_recommend_phi)

    p = sub.add_parser("wait", help="follow a study until it ends, then print its best")
    _study_id(p)
    _watch_args(p)
    _json(p)
    p.set_defaults(func=cmd_wait)

    p = sub.add_parser("cancel", help="cancel a queued or running study")
    _study_id(p)
    _json(p)
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("extend", help="more trials for a succeeded ladder study, the same "
                       "searcher state: append ladder iterations and queue it again")
    _study_id(p)
    p.add_argument("--iterations", type=int, default=1,
                   help="ladder iterations to append, each with the study's per-iteration "
                   "candidate count (default 1)")
    p.add_argument("--watch", action="store_true",
                   help="follow the extended run, then print the new best")
    _watch_args(p, timeout=False)
    _json(p)
    p.set_defaults(func=cmd_extend)

    p = sub.add_parser("demo", help="start Ray + the API locally and tune a small real study")
    p.add_argument("--data-dir", default=".phitune/demo",
                   help="where the demo's store, logs and Ray results go")
    p.add_argument("--steps", type=int, default=400, help="training budget in steps")
    p.add_argument("--trials", type=int, default=8, help="trials to run")
    p.set_defaults(func=cmd_demo)

    schedules.register(sub)
    agent.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    argv, command = agent.split_command(sys.argv[1:] if argv is None else list(argv))
    args = parser.parse_args(argv)
    if command is not None:
        args.cmd = command
    from service.client import PhiTuneClientError

    try:
        return int(args.func(args) or 0)
    except CLIError as exc:
        print(f"phitune: error: {exc}", file=sys.stderr)
        return 2
    except PhiTuneClientError as exc:
        print(f"phitune: error: {exc}", file=sys.stderr)
        return 2 if 400 <= exc.status_code < 500 else 1
    except ModuleNotFoundError as exc:
        extra = _EXTRA_OF.get((exc.name or "").split(".")[0])
        if extra is None:
            raise
        print(f"phitune: error: `phitune {args.command}` needs {exc.name}, which the base "
              f"install (the client) leaves out: pip install 'phitune[{extra}]'",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("phitune: interrupted", file=sys.stderr)
        return 130
