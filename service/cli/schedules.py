"""``phitune plot-schedule``: plot or print any registered schedule from the command line.

Examples::

    phitune plot-schedule uba --steps 1000 --param phi=5 --param phases=2 -o uba.png
    phitune plot-schedule uba --param phi=5 --compare cosine,rex,uba:phi=0.5 -o cmp.png
    phitune plot-schedule cosine --steps 10 --param eta_max=0.1 --values

Why it exists: choosing φ is easier when one *sees* the curve next to the schedules one knows
(φ = 2 ≈ cosine, φ ≈ 0.8 ≈ REX, large φ ≈ exponential; design.md "UBA math conventions"), and
it needs neither a server nor Ray: the values come from the same closed forms
(:mod:`tuning.schedules`, Eq. 5 for UBA) the trials use.

Parameters are typed by the schedule registry (the single source of truth the API uses too):
numbers, ``a,b,c`` for lists, ``true``/``false``, ``null``. Comparison curves (``--compare``)
get the main schedule's ``eta_max``/``eta_min``/``warmup_steps`` when they accept them, so all
curves share one peak; a comparison item may carry its own parameters as ``name:k=v:k=v``
(single values only, since ``,`` separates the items).

``tuning.schedules`` (torch, numpy, matplotlib) is imported only when the command runs, so
``register`` costs nothing for a client-only install.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from service.cli.format import CLIError

#: Largest ``--steps`` (the same cap as ``GET /v1/schedules``: values are computed in full).
MAX_STEPS = 200_000
#: Parameters the comparison curves inherit from the main schedule when they accept them.
SHARED_PARAMS = ("eta_max", "eta_min", "warmup_steps")
_TRUE = {"true", "yes", "on"}
_FALSE = {"false", "no", "off"}


def _parse_scalar(kind: str, raw: str) -> Any:
    if kind == "int":
        return int(raw)
    if kind == "bool":
        low = raw.lower()
        if low in _TRUE | {"1"}:
            return True
        if low in _FALSE | {"0"}:
            return False
        raise ValueError(f"{raw!r} is not a bool (true/false)")
    if kind == "str":
        return raw
    return float(raw)


def parse_param_value(schedule: str, key: str, raw: str) -> Any:
    """Type ``raw`` by the registry's kind for ``schedule.key``.

    Unknown keys are passed through as strings so that ``create_schedule`` refuses them with
    the list of valid parameter names (one error path for every unknown name).
    """
    from tuning.schedules import SCHEDULES

    pinfo = SCHEDULES[schedule].params.get(key)
    if pinfo is None:
        return raw
    items = [v.strip() for v in raw.split(",") if v.strip()]
    try:
        if pinfo.nullable and len(items) == 1 and items[0].lower() in {"null", "none"}:
            return None
        if pinfo.kind in ("float_list", "int_list"):
            return [_parse_scalar(pinfo.kind[:-5], v) for v in items]
        if pinfo.kind == "float_or_list" and len(items) > 1:
            return [float(v) for v in items]
        if len(items) == 1:
            kind = "float" if pinfo.kind == "float_or_list" else pinfo.kind
            return _parse_scalar(kind, items[0])
        raise ValueError(f"expected one value, got {len(items)}")
    except ValueError as exc:
        raise CLIError(
            f"{schedule}: parameter {key!r}: cannot parse {raw!r} ({exc}); "
            f"allowed: {pinfo.allowed()}"
        ) from exc


def _check_name(name: str) -> None:
    from tuning.schedules import SCHEDULES, UnknownScheduleError

    if name not in SCHEDULES:
        raise CLIError(str(UnknownScheduleError(name, list(SCHEDULES))))


def parse_params(schedule: str, pairs: list[str]) -> dict[str, Any]:
    """``["phi=5", "phases=2"]`` -> ``{"phi": 5.0, "phases": 2}`` typed by the registry."""
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CLIError(f"--param {pair!r}: expected KEY=VALUE, e.g. phi=5")
        if key in params:
            raise CLIError(f"--param {key!r} given twice (lists are comma-separated: a,b,c)")
        params[key] = parse_param_value(schedule, key, raw)
    return params


def parse_compare(items: list[str]) -> list[tuple[str, list[str]]]:
    """``["cosine,rex", "uba:phi=1"]`` -> ``[("cosine", []), ("rex", []), ("uba", ["phi=1"])]``."""
    out: list[tuple[str, list[str]]] = []
    for group in items:
        for item in group.split(","):
            item = item.strip()
            if not item:
                continue
            name, *pairs = item.split(":")
            out.append((name.strip(), [p for p in pairs if p.strip()]))
    return out


def build_schedules(args: argparse.Namespace) -> list[Any]:
    """The main schedule then each comparison, validated; library errors become CLIError."""
    from tuning.schedules import SCHEDULES, ScheduleError, create_schedule

    if not 1 <= args.steps <= MAX_STEPS:
        raise CLIError(f"--steps {args.steps} is out of range; allowed: 1 <= steps <= {MAX_STEPS}")
    _check_name(args.name)
    main_params = parse_params(args.name, args.param or [])
    wanted = [(args.name, main_params)]
    for name, pairs in parse_compare(args.compare or []):
        _check_name(name)
        own = parse_params(name, pairs)
        shared = {k: main_params[k] for k in SHARED_PARAMS
                  if k in main_params and k in SCHEDULES[name].params and k not in own}
        # A per-phase eta_max list only makes sense for UBA: share its peak otherwise.
        if isinstance(shared.get("eta_max"), list) and name != "uba":
            shared["eta_max"] = max(shared["eta_max"])
        wanted.append((name, {**shared, **own}))
    schedules = []
    for name, params in wanted:
        try:
            schedules.append(create_schedule(name, args.steps, **params))
        except ScheduleError as exc:
            raise CLIError(str(exc)) from exc
    return schedules


def cmd_plot_schedule(args: argparse.Namespace) -> int:
    """Write the PNG (``-o``) and/or print the values as JSON (``--values``)."""
    if not args.output and not args.values:
        raise CLIError("nothing to do: give -o FILE.png and/or --values")
    try:
        schedules = build_schedules(args)
    except ImportError as exc:  # client-only install: no torch/numpy
        raise CLIError(f"plot-schedule needs the full phitune install ({exc})") from exc
    if args.output:
        from tuning.schedules.plot import plot_schedules

        png = plot_schedules(schedules, title=args.title, log_y=args.log_y)
        try:
            Path(args.output).write_bytes(png)
        except OSError as exc:
            raise CLIError(f"cannot write {args.output!r}: {exc.strerror}") from exc
        print(f"wrote {args.output} ({len(schedules)} curve{'s' if len(schedules) > 1 else ''}, "
              f"{args.steps} steps)")
    if args.values:
        docs = [{**s.to_dict(), "eta_max": s.eta_max, "relative": s.relative,
                 "values": s.values()} for s in schedules]
        print(json.dumps(docs[0] if len(docs) == 1 else docs))
    return 0


def register(subparsers: Any) -> None:
    """Add ``plot-schedule`` to the ``phitune`` sub-commands (called by ``service.cli``)."""
    p = subparsers.add_parser(
        "plot-schedule",
        help="plot (PNG) or print (JSON) a learning-rate schedule, optionally vs others",
        description="Plot or print any registered schedule; no server needed.",
    )
    p.add_argument("name", help="schedule name, e.g. uba, cosine, step, rex, onecycle")
    p.add_argument("--steps", type=int, default=1000, help="total_steps T (default 1000)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="schedule parameter, repeatable: --param phi=5 --param phases=2")
    p.add_argument("--compare", action="append", metavar="NAMES",
                   help="comma-separated schedules to overlay, each optionally name:k=v:k=v")
    p.add_argument("-o", "--output", help="write the plot to this PNG file")
    p.add_argument("--values", action="store_true", help="print the schedule(s) as JSON")
    p.add_argument("--title", default=None, help="plot title (default: the schedule)")
    p.add_argument("--log-y", action="store_true", help="logarithmic LR axis")
    p.set_defaults(func=cmd_plot_schedule)
