"""Shared pieces of the evidence benchmarks (issue #8): provenance, result files, statistics
and one training run.

Run the benchmarks as modules from the repository root (``python -m bench.schedule_quality``)
so that ``bench.common`` is importable; every benchmark has a ``--smoke`` size that the test
suite runs (``tests/bench/test_bench_smoke.py``) so the code cannot rot.

Why these helpers:

* **Provenance in every result** (:func:`provenance`, :func:`provenance_md`,
  :func:`write_markdown`): command line, git commit + dirty flag, UTC date, machine, device,
  load average before and after, library versions and seeds next to every number, written by
  one helper (issue #14 item 1); a README number must come from a committed file.
* **Paired statistics** (:func:`paired`): every arm of a comparison is trained on the same
  seeds (same init, same batch order), so per-seed differences remove most of the seed noise;
  the p-value is an exact sign-flip permutation test (no scipy, no normality assumption).
* **One training run** (:func:`train_final`): :func:`trainables.loop.run_training`, the loop
  every trial runs, with a diverged run recorded as NaN instead of crashing the benchmark.
  Benchmarks that tune hold out data with :func:`trainables.datasets.split_validation`, so a
  schedule is never selected on the numbers it is judged by.
"""

from __future__ import annotations

import csv
import datetime as _dt
import itertools
import logging
import math
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainables.datasets import DataBundle
from trainables.loop import run_training

logger = logging.getLogger(__name__)

RESULTS_DIR = Path(__file__).resolve().with_name("results")
REPO_ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- provenance

# When bench.common is first imported, i.e. at the start of a bench script: the "before" of
# the load average and the start time of every result that does not call provenance() earlier.
_IMPORTED_AT = (time.time(), os.getloadavg())


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True,
                             timeout=10, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def _git_commit() -> str:
    return (_git("rev-parse", "--short", "HEAD") or "").strip() or "unknown"


def git_state() -> tuple[str, bool | None]:
    """HEAD's short hash and whether tracked files differ from it (None when git is missing).

    Why the dirty flag: a number produced from uncommitted code cannot be reproduced from the
    hash alone, and the reader must be told so.
    """
    status = _git("status", "--porcelain", "--untracked-files=no")
    return _git_commit(), (None if status is None else bool(status.strip()))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _version(module: str) -> str:
    try:
        return str(__import__(module).__version__)
    except Exception:  # noqa: BLE001 - a missing optional library is recorded, not fatal
        return "not installed"


def _main_command() -> str:
    """``python -m bench.x args`` for a module run, ``python path args`` for a script."""
    import sys

    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    head = (f"python -m {spec.name}" if spec is not None and spec.name != "__main__"
            else f"python {os.path.relpath(sys.argv[0], REPO_ROOT)}")
    return " ".join([head, *sys.argv[1:]])


def gpu_name() -> str:
    """The CUDA device name, or ``"no GPU"``: a GPU number is measured, never estimated."""
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return "no GPU"


def provenance(command: str | None = None, seeds: str = "n/a", device: str = "cpu",
               started: tuple[float, tuple[float, float, float]] | None = None
               ) -> dict[str, Any]:
    """Everything a reader needs to judge and redo a number (issue #14, item 1).

    Call it once at the start of a benchmark (that records the load average *before*) and
    render it with :func:`provenance_md` at the end (that adds the load average *after*)::

        prov = provenance(seeds="training seeds 0..4; sampler seed 0")
        rows = run_the_benchmark()
        write_csv(out / "x.csv", rows)                      # raw per-seed rows
        write_markdown(out / "x.md", "# X\\n", prov, body)  # header + body + x.provenance.json

    ``command`` defaults to the running script's command line; ``started`` (time, loadavg)
    defaults to now (or to the import of this module when :func:`machine_info` is used).
    """
    t0, load0 = started or (time.time(), os.getloadavg())
    commit, dirty = git_state()
    return {
        "command": command or _main_command(),
        "git_commit": commit,
        "git_dirty": dirty,
        "date_utc": _dt.datetime.fromtimestamp(t0, _dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "ram_gib": _ram_gib(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "gpu": gpu_name(),
        "load_before": [round(x, 2) for x in load0],
        "load_after": None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "ray": _version("ray"),
        "optuna": _version("optuna"),
        "numpy": _version("numpy"),
        "platform": platform.platform(),
        "seeds": seeds,
    }


def machine_info(device: str = "cpu") -> dict[str, Any]:
    """:func:`provenance` started at this module's import (older call sites; the command and
    seeds are passed to :func:`provenance_md`)."""
    return provenance(device=device, started=_IMPORTED_AT)


def finish_provenance(info: dict[str, Any]) -> dict[str, Any]:
    """Record the load average *after* the run (idempotent: the first call wins)."""
    if info.get("load_after") is None:
        info["load_after"] = [round(x, 2) for x in os.getloadavg()]
    return info


def provenance_md(info: dict[str, Any], command: str | None = None,
                  seeds: str | None = None) -> str:
    """The markdown block every result file starts with (finishes ``info`` first)."""
    finish_provenance(info)
    if command is not None:
        info["command"] = command
    if seeds is not None:
        info["seeds"] = seeds
    dirty = {True: " (dirty: uncommitted changes)", False: " (clean)", None: ""}[
        info.get("git_dirty")]
    ram = f", {info['ram_gib']} GiB RAM" if info.get("ram_gib") else ""
    gpu = info.get("gpu", "no GPU")
    gpu_text = ("GPU: not measured (no device lent)" if gpu == "no GPU"
                else f"GPU {gpu}")
    lines = [
        f"- produced by: `{info['command']}`",
        f"- date: {info['date_utc']}, git commit {info['git_commit']}{dirty}",
        f"- machine: {info['cpu']} ({info['cpu_count']} CPUs visible{ram}, torch threads "
        f"{info['torch_threads']}), device {info['device']}; {gpu_text}",
        "- load average (1/5/15 min) before: "
        + " / ".join(f"{x:.2f}" for x in info["load_before"])
        + ", after: " + " / ".join(f"{x:.2f}" for x in info["load_after"]),
        f"- versions: Python {info['python']}, torch {info['torch']}, ray {info['ray']}, "
        f"optuna {info['optuna']}, numpy {info['numpy']}; {info['platform']}",
        f"- seeds: {info['seeds']}",
    ]
    return "\n".join(lines) + "\n"


def sidecar_path(md_path: Path) -> Path:
    """``x.md`` → ``x.provenance.json``."""
    return md_path.with_name(md_path.stem + ".provenance.json")


def write_markdown(path: Path, title: str, info: dict[str, Any], body: str) -> None:
    """Write ``title`` + provenance header + ``body`` to ``path`` and the same provenance as
    JSON next to it (machine-readable for the README renderer)."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    header = provenance_md(info)
    path.write_text(title.rstrip("\n") + "\n\n" + header + "\n" + body.lstrip("\n"))
    sidecar_path(path).write_text(json.dumps(info, indent=2) + "\n")


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Write dict rows (union of keys, first-seen order) as CSV."""
    path.parent.mkdir(parents=True, exist_ok=True)
    keys: dict[str, None] = {}
    for row in rows:
        keys.update(dict.fromkeys(row))
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(keys))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _fmt_cell(v) for k, v in row.items()})


def _fmt_cell(v: Any) -> Any:
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def new_figure(width: float, height: float, ncols: int = 1) -> tuple[Any, Any]:
    """A matplotlib Figure on the Agg canvas (no pyplot global state) and its axes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols)
    return fig, axes


# ----------------------------------------------------------------------------- statistics


def mean_std(xs: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    m = statistics.fmean(xs)
    return m, (statistics.stdev(xs) if len(xs) > 1 else 0.0)


@dataclass(frozen=True)
class Paired:
    """Per-seed differences ``a - b`` of two arms trained on the same seeds."""

    n: int
    mean_diff: float
    std_diff: float
    wins: int
    ties: int
    losses: int
    p_value: float  # exact two-sided sign-flip permutation test of mean_diff

    def fmt(self, scale: float = 100.0, unit: str = " pt") -> str:
        return (f"{scale * self.mean_diff:+.2f} ± {scale * self.std_diff:.2f}{unit} "
                f"({self.wins}/{self.ties}/{self.losses}, p={self.p_value:.3g})")


def paired(a: Sequence[float], b: Sequence[float], tol: float = 1e-12) -> Paired:
    """Paired comparison of per-seed results ``a[i]`` vs ``b[i]``.

    The p-value enumerates all 2^n sign flips of the differences (exact for n <= 16, random
    10 000 flips beyond): under "no difference" each difference is as likely positive as
    negative. With 3 seeds the smallest possible p is 0.25, which the tables show honestly.
    """
    if len(a) != len(b) or not a:
        raise ValueError(f"paired() needs equal non-empty lengths, got {len(a)} and {len(b)}")
    d = [x - y for x, y in zip(a, b, strict=True)]
    n = len(d)
    observed = abs(statistics.fmean(d))
    if n <= 16:
        flips: Iterable[tuple[int, ...]] = itertools.product((1, -1), repeat=n)
        total = 2 ** n
    else:
        g = torch.Generator().manual_seed(0)
        signs = torch.randint(0, 2, (10_000, n), generator=g) * 2 - 1
        flips = (tuple(int(s) for s in row) for row in signs)
        total = 10_000
    extreme = sum(
        1 for s in flips
        if abs(statistics.fmean(si * di for si, di in zip(s, d, strict=True)))
        >= observed - 1e-15
    )
    m, sd = mean_std(d)
    return Paired(n=n, mean_diff=m, std_diff=sd, wins=sum(x > tol for x in d),
                  ties=sum(abs(x) <= tol for x in d), losses=sum(x < -tol for x in d),
                  p_value=extreme / total)


# ----------------------------------------------------------------------------- training


def train_final(config: Mapping[str, Any], bundle: DataBundle,
                keep: Sequence[str] = ()) -> dict[str, Any]:
    """Train one run with :func:`trainables.loop.run_training` and return its last metrics
    plus ``seconds`` (wall time). A diverged run returns NaN metrics instead of raising, so
    one bad schedule is a data point, not a crashed benchmark. ``keep``: non-numeric metrics
    to return too (the refinement bench needs the run's ``grad_norms``)."""
    from trainables.errors import DivergedError

    cfg = {"checkpoint_every": -1, "device": "cpu", **config}
    cfg.setdefault("eval_every", int(cfg["total_steps"]))  # evaluate at the end only
    t0 = time.perf_counter()
    try:
        metrics = run_training(cfg, lambda m, s: None, bundle=bundle)
    except DivergedError as exc:
        logger.warning("diverged: %s (%s)", exc, {k: cfg.get(k) for k in ("schedule", "phi")})
        metrics = {"val_accuracy": math.nan, "val_loss": math.nan, "train_loss": math.nan}
    out: dict[str, Any] = {k: float(v) for k, v in metrics.items()
                           if isinstance(v, int | float)}
    out.update({k: metrics[k] for k in keep if k in metrics})  # e.g. grad_norms (a dict)
    out["seconds"] = time.perf_counter() - t0
    return out
