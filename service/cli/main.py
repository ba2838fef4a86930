"""``phitune`` command line: serve the API, submit specs, watch studies, fetch the best φ.

Errors are one line on stderr and exit status 2 (bad input) or 1 (failure), never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from service.cli import schedules
from service.cli.format import CLIError, format_best, load_spec, print_json

DEFAULT_URL = os.environ.get("PHITUNE_URL", "http://127.0.0.1:8000")


def _client(args: argparse.Namespace) -> Any:
    from service.client import PhiTuneClient

    return PhiTuneClient(args.url, token=args.token or os.environ.get("PHITUNE_TOKEN"))


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from service.api.main import create_app
    from service.config import Settings

    overrides: dict[str, Any] = {}
    if args.host:
        overrides["host"] = args.host
    if args.port:
        overrides["port"] = args.port
    settings = Settings(**overrides)
    try:
        app = create_app(settings)
    except ValueError as exc:  # e.g. a network address without an API token
        raise CLIError(str(exc)) from None
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=args.log_level)
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    with _client(args) as client:
        study = client.submit(load_spec(args.spec), idempotency_key=args.idempotency_key)
        print(study.id)
        if args.watch:
            study = client.wait(study.id, progress=True, poll=args.poll)
            return _report_final(client, study)
    return 0


def _report_final(client: Any, study: Any) -> int:
    if study.status != "succeeded":
        print(f"study {study.id} {study.status}: {study.error}", file=sys.stderr)
        return 1
    print(format_best(client.best(study.id)))
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
        studies = client.list(status=args.status, limit=args.limit)
    for s in studies.data:
        best = "" if s.progress.best_value is None else f" best={s.progress.best_value:.4f}"
        print(f"{s.id}  {s.status:<9} {s.spec.model}/{s.spec.dataset}{best}")
    return 0


def cmd_best(args: argparse.Namespace) -> int:
    with _client(args) as client:
        best = client.best(args.study_id)
    if args.json:
        print_json(best.model_dump(mode="json"))
    else:
        print(format_best(best))
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    with _client(args) as client:
        study = client.wait(args.study_id, progress=True, poll=args.poll, timeout=args.timeout)
        return _report_final(client, study)


def cmd_cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        study = client.cancel(args.study_id)
    print(f"{study.id} {study.status}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from service.cli.demo import run_demo

    return run_demo(data_dir=Path(args.data_dir), steps=args.steps, trials=args.trials)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="phitune", description="Tune the UBA learning-rate schedule for a fixed budget.")
    parser.add_argument("--url", default=DEFAULT_URL, help="API URL (env PHITUNE_URL)")
    parser.add_argument("--token", default=None, help="API token (env PHITUNE_TOKEN)")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the API server (settings from PHITUNE_* env)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--log-level", default="info")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("submit", help="submit a study spec (YAML or JSON file, - for stdin)")
    p.add_argument("spec")
    p.add_argument("--watch", action="store_true", help="follow progress, print the best")
    p.add_argument("--poll", type=float, default=2.0)
    p.add_argument("--idempotency-key")
    p.set_defaults(func=cmd_submit)

    for name, func, helptext in (("status", cmd_status, "a study's status and progress"),
                                 ("best", cmd_best, "the best schedule of a finished study")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("study_id")
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=func)

    p = sub.add_parser("wait", help="follow a study until it ends")
    p.add_argument("study_id")
    p.add_argument("--poll", type=float, default=2.0)
    p.add_argument("--timeout", type=float)
    p.set_defaults(func=cmd_wait)

    p = sub.add_parser("cancel", help="cancel a running study")
    p.add_argument("study_id")
    p.set_defaults(func=cmd_cancel)

    p = sub.add_parser("list", help="list studies")
    p.add_argument("--status")
    p.add_argument("--limit", type=int, default=50)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("demo", help="start Ray + the API locally and tune a small real study")
    p.add_argument("--data-dir", default=".phitune/demo")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--trials", type=int, default=8)
    p.set_defaults(func=cmd_demo)

    schedules.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from service.client import PhiTuneError

    try:
        return int(args.func(args) or 0)
    except CLIError as exc:
        print(f"phitune: error: {exc}", file=sys.stderr)
        return 2
    except PhiTuneError as exc:
        print(f"phitune: error: {exc}", file=sys.stderr)
        return 2 if 400 <= exc.status_code < 500 else 1
    except KeyboardInterrupt:
        print("phitune: interrupted", file=sys.stderr)
        return 130
