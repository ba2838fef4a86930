"""Write requirements/runtime.lock and requirements/dev.lock from the installed virtualenv.

Why from the venv and not a resolver: the locks pin exactly what `make venv` installed and
the tests ran against (the mirror this project installs from is partly offline, so a fresh
resolve could pick other versions). The split follows pyproject.toml: runtime.lock is the
dependency closure of ``phitune[server,postgres,schedules,vision,dashboard]`` (what an API or
Ray image installs), dev.lock the closure of ``phitune[test]`` minus what runtime.lock already
pins. Markers are evaluated for this machine (Linux x86_64, the CUDA wheels torch pulls in).

    .venv/bin/python scripts/lock.py          # rewrite both files (also: make lock)
    .venv/bin/python scripts/lock.py --check  # exit 1 if they differ from the venv
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
RUNTIME_EXTRAS = ("server", "postgres", "schedules", "vision", "dashboard")
DEV_EXTRAS = ("test",)
HEADER = """\
# {what}
# Exact versions installed by `make venv` on Linux x86_64 / CPython 3.11. Do not edit:
# regenerate with `make lock` (= .venv/bin/python scripts/lock.py) after changing the venv.
# Used as pip constraints (-c) by the Makefile{docker}.
"""


def _applies(req: Requirement, extras: tuple[str, ...]) -> bool:
    if req.marker is None:
        return True
    env = default_environment()
    return any(req.marker.evaluate({**env, "extra": e}) for e in (extras or ("",)))


def closure(roots: list[Requirement]) -> dict[str, str]:
    """canonical name -> installed version for ``roots`` and everything they require."""
    found: dict[str, str] = {}
    stack = [(r, tuple(r.extras)) for r in roots]
    seen: set[tuple[str, tuple[str, ...]]] = set()
    while stack:
        req, extras = stack.pop()
        key = (canonicalize_name(req.name), tuple(sorted(extras)))
        if key in seen:
            continue
        seen.add(key)
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            print(f"lock: {req.name} is not installed (skipped)", file=sys.stderr)
            continue
        found[canonicalize_name(dist.metadata["Name"])] = dist.version
        for line in dist.requires or []:
            sub = Requirement(line)
            if _applies(sub, extras):
                stack.append((sub, tuple(sub.extras)))
    return found


def project_roots(extras: tuple[str, ...]) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in extras:
        lines += project.get("optional-dependencies", {}).get(extra, [])
    return [Requirement(x) for x in lines
            if canonicalize_name(Requirement(x).name) != canonicalize_name(project["name"])]


def render(what: str, pins: dict[str, str], docker: str = "") -> str:
    names = {canonicalize_name(d.metadata["Name"]): d.metadata["Name"]
             for d in metadata.distributions()}
    body = "".join(f"{names.get(k, k)}=={v}\n" for k, v in sorted(pins.items()))
    return HEADER.format(what=what, docker=docker) + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    runtime = closure(project_roots(RUNTIME_EXTRAS))
    dev = {k: v for k, v in closure(project_roots(DEV_EXTRAS)).items() if k not in runtime}
    files = {
        ROOT / "requirements" / "runtime.lock": render(
            "Runtime lock: phitune[" + ",".join(RUNTIME_EXTRAS) + "] and its dependencies.",
            runtime, " and deploy/Dockerfile"),
        ROOT / "requirements" / "dev.lock": render(
            "Dev lock: phitune[test] (pytest, ruff, import-linter, ...) beyond runtime.lock.",
            dev),
    }
    stale = [p for p, text in files.items() if not p.exists() or p.read_text() != text]
    if args.check:
        for p in stale:
            print(f"lock: {p.relative_to(ROOT)} is out of date (make lock)", file=sys.stderr)
        return 1 if stale else 0
    for p, text in files.items():
        p.parent.mkdir(exist_ok=True)
        p.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
