"""Speed and accuracy of tuning.curvature vs PyHessian on the project's small CPU models.

Task (both tools, same model, same batch, float32, eval mode): lambda_max + trace + SLQ
density. Settings:

* phitune: ``estimate_curvature(lanczos_steps=30, num_probes=8, power_iters=50, tol=1e-3)``
  (one batched Lanczos run gives the density and trace, a warm-started power iteration
  confirms lambda_max);
* PyHessian 0.1 (Yao et al. 2020): ``eigenvalues(maxIter=100, tol=1e-3)``,
  ``trace(maxIter=100, tol=1e-3)``, ``density(iter=30, n_v=8)`` - its documented methods,
  with the same SLQ size as ours.

Ground truth: eigvalsh of the full float64 Hessian for the digits models (built column by
column with double backward); for the larger CNN an independent long Lanczos run (ARPACK's
``eigsh`` on plain autograd HVPs) for λmax and a 200-probe Hutchinson trace with its standard
error (issue 14: this case used to be scored against phitune's own long Lanczos run).

PyHessian is GPL-3 and unmaintained: it is never a dependency of phitune. This script
imports it only from a local download (``pip download --no-deps pyhessian -d /tmp/pyhessian``
then unzip; pass ``--pyhessian DIR``). Its ``density`` calls ``torch.eig``, removed in
PyTorch 2; the script supplies ``torch.eig`` for the duration of the run from
``torch.linalg.eigh`` (T is symmetric tridiagonal, so this is the same decomposition).

Run: ``.venv/bin/python bench/curvature_bench.py --pyhessian /tmp/pyhessian/ext``
Writes bench/results/curvature_bench.{csv,md,png}.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import importlib.util
import logging
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import provenance, provenance_md, sidecar_path  # noqa: E402
from trainables.models import cnn, mlp  # noqa: E402
from tuning.curvature import estimate_curvature  # noqa: E402
from tuning.curvature._operator import CurvatureOperator  # noqa: E402

logger = logging.getLogger("curvature_bench")
OUT = ROOT / "bench" / "results"


# ----------------------------------------------------------------------------- data, models
def digits() -> tuple[torch.Tensor, torch.Tensor]:
    spec = importlib.util.find_spec("sklearn")
    assert spec is not None and spec.origin is not None, "pip install --no-deps scikit-learn"
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    arr = np.loadtxt(gzip.open(path, "rt"), delimiter=",")
    x = torch.tensor(arr[:, :64] / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    return x, torch.tensor(arr[:, 64], dtype=torch.long)


def fashion(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    root = Path("/usr/share/datasets/fashion-mnist")
    x = np.frombuffer(gzip.open(root / "train-images-idx3-ubyte.gz").read(), np.uint8,
                      offset=16).reshape(-1, 1, 28, 28)[:n]
    y = np.frombuffer(gzip.open(root / "train-labels-idx1-ubyte.gz").read(), np.uint8,
                      offset=8)[:n]
    return torch.tensor(x / 255.0, dtype=torch.float32), torch.tensor(y, dtype=torch.long)


def trained(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int) -> None:
    """A few SGD steps so the spectrum is that of a model in training, not at init."""
    torch.manual_seed(0)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    for i in range(steps):
        idx = torch.arange(i * 128, (i + 1) * 128) % len(x)
        opt.zero_grad()
        F.cross_entropy(model(x[idx]), y[idx]).backward()
        opt.step()
    model.eval()


def cases(quick: bool) -> list[dict]:
    xd, yd = digits()
    info8 = {"input_shape": (1, 8, 8), "num_classes": 10, "task": "classification"}
    torch.manual_seed(0)
    # quick (the test suite's smoke run): a 16-unit MLP (1,210 parameters: its exact Hessian
    # is 4x cheaper than the 32-unit one's) and the CNN on 512 images
    hidden, n_cnn = ((16,), 512) if quick else ((32,), 1024)
    out = [
        {"name": "mlp-digits", "model": mlp(info8, hidden_sizes=hidden), "x": xd, "y": yd},
        {"name": "cnn-digits", "model": cnn(info8, width=6, batch_norm=True), "x": xd[:n_cnn],
         "y": yd[:n_cnn]},
    ]
    if not quick and Path("/usr/share/datasets/fashion-mnist").exists():
        xf, yf = fashion(256)
        info28 = {"input_shape": (1, 28, 28), "num_classes": 10, "task": "classification"}
        out.append({"name": "cnn-fashion", "model": cnn(info28, width=8, batch_norm=True),
                    "x": xf, "y": yf})
    for c in out:
        trained(c["model"], c["x"], c["y"], steps=30)
        c["params"] = sum(p.numel() for p in c["model"].parameters())
    return out


# ----------------------------------------------------------------------------- ground truth
def full_hessian_eigs(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    """Eigenvalues of the exact float64 Hessian, built column by column (double backward)."""
    m64 = _clone(model).double()
    op = CurvatureOperator(m64, F.cross_entropy, [(x.double(), y)])
    cols = []
    for i in range(0, op.n, 256):
        e = torch.zeros(op.n, min(256, op.n - i), dtype=torch.float64)
        e[torch.arange(i, i + e.shape[1]), torch.arange(e.shape[1])] = 1.0
        cols.append(op.matvec(e))
    h = torch.cat(cols, 1).numpy()
    return np.linalg.eigvalsh(0.5 * (h + h.T))


def reference_lanczos(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
                      probes: int = 200, tol: float = 1e-10, seed: int = 0) -> dict:
    """An independent reference where the full Hessian is too large to build on a CPU.

    λmax: ARPACK's implicitly restarted Lanczos (``scipy.sparse.linalg.eigsh``, k=1, which="LA",
    ``tol``), trace: Hutchinson with ``probes`` Rademacher vectors and its standard error; both
    on float64 Hessian-vector products by plain double backward. Neither phitune's operator
    nor its Lanczos is involved (issue 14: cnn-fashion used to be scored against phitune's own
    long run).
    """
    from scipy.sparse.linalg import LinearOperator, eigsh

    m = _clone(model).double().eval()
    params = list(m.parameters())
    loss = F.cross_entropy(m(x.double()), y)
    flat_g = torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params,
                                                                   create_graph=True)])
    n = flat_g.numel()

    def hvp(v: np.ndarray) -> np.ndarray:
        vt = torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64).reshape(-1))
        hv = torch.autograd.grad(flat_g, params, grad_outputs=vt, retain_graph=True)
        return torch.cat([h.reshape(-1) for h in hv]).detach().numpy()

    op = LinearOperator((n, n), matvec=hvp, dtype=np.float64)
    lam = float(eigsh(op, k=1, which="LA", tol=tol, return_eigenvectors=False,
                      v0=np.ones(n) / np.sqrt(n))[0])
    rng = np.random.default_rng(seed)
    est = np.array([z @ hvp(z) for z in (rng.choice([-1.0, 1.0], n) for _ in range(probes))])
    tr, se = float(est.mean()), float(est.std(ddof=1) / np.sqrt(probes))
    return {"lambda_max": lam, "trace": tr,
            "source": f"ARPACK eigsh λmax (tol {tol:g}); trace Hutchinson {probes} probes "
                      f"(rel. se {se / abs(tr):.1e}); float64 autograd HVPs"}


def _clone(model: torch.nn.Module) -> torch.nn.Module:
    import copy

    return copy.deepcopy(model)


# ----------------------------------------------------------------------------- the two tools
def run_phitune(model, x, y, **kw) -> dict:
    t0 = time.perf_counter()
    rep = estimate_curvature(model, F.cross_entropy, [(x, y)], **kw)
    sec = time.perf_counter() - t0
    return {"seconds": sec, "hvp": int(rep.cost["hvp_count"]), "lambda_max": rep.lambda_max,
            "trace": rep.trace, "grid": np.array(rep.density_grid),
            "density": np.array(rep.density_values), "converged": rep.converged}


class _Counter:
    def __init__(self) -> None:
        self.n = 0


def load_pyhessian(path: str | None):
    if path is None:
        return None
    sys.path.insert(0, path)
    try:
        import pyhessian  # noqa: F401
    except ImportError as exc:
        logger.warning("PyHessian not importable from %s: %s", path, exc)
        return None
    # the package re-exports the class under the module's name: take the module itself
    return sys.modules["pyhessian.hessian"]


def run_pyhessian(ph, model, x, y, counter: _Counter) -> dict:
    orig_eig = getattr(torch, "eig", None)  # in torch 2 a stub that raises

    def eig(t: torch.Tensor, eigenvectors: bool = True):  # the torch<2 API PyHessian calls
        w, v = torch.linalg.eigh(t)
        return torch.stack([w, torch.zeros_like(w)], 1), v

    torch.eig = eig  # type: ignore[attr-defined]
    for p in model.parameters():
        p.grad = None  # PyHessian accumulates its create_graph gradient into .grad
    try:
        t0 = time.perf_counter()
        counter.n = 0
        h = ph.hessian(model, F.cross_entropy, data=(x, y), cuda=False)
        top, _ = h.eigenvalues(maxIter=100, tol=1e-3)
        tr = h.trace(maxIter=100, tol=1e-3)
        eigs, weights = h.density(iter=30, n_v=8)
        sec = time.perf_counter() - t0
    finally:
        if orig_eig is None:
            del torch.eig  # type: ignore[attr-defined]
        else:
            torch.eig = orig_eig  # type: ignore[attr-defined]
        for p in model.parameters():
            p.grad = None
    return {"seconds": sec, "hvp": counter.n, "lambda_max": float(top[0]),
            "trace": float(np.mean(tr)), "eigs": eigs, "weights": weights, "converged": True}


def install_counter(ph, counter: _Counter) -> None:
    orig: Callable = ph.hessian_vector_product

    def counted(*a, **k):
        counter.n += 1
        return orig(*a, **k)

    ph.hessian_vector_product = counted


# ----------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="curvature speed/accuracy benchmark")
    ap.add_argument("--pyhessian", default=os.environ.get("PYHESSIAN_DIR"),
                    help="directory containing the unzipped pyhessian package")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true",
                    help="digits models only, smaller (the test suite's smoke run)")
    ap.add_argument("--out", type=Path, default=OUT, help="results directory")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(1)
    args.prov = provenance(
        command="python bench/curvature_bench.py " + " ".join(
            argv if argv is not None else sys.argv[1:]),
        seeds="model init torch.manual_seed(0); estimator seeds = repeat index 0..n-1")
    ph = load_pyhessian(args.pyhessian)
    counter = _Counter()
    if ph is not None:
        install_counter(ph, counter)

    rows, plots = [], []
    for case in cases(args.quick):
        model, x, y = case["model"], case["x"], case["y"]
        if case["params"] <= 2500:
            ev = full_hessian_eigs(model, x, y)
            truth = {"lambda_max": float(ev.max()), "trace": float(ev.sum()),
                     "source": "full Hessian eigvalsh"}
        else:
            ev, truth = None, reference_lanczos(model, x, y)
        results: dict[str, list[dict]] = {"phitune": [], "phitune-fast": [], "pyhessian": []}
        for rep in range(args.repeats):
            results["phitune"].append(run_phitune(model, x, y, lanczos_steps=30, num_probes=8,
                                                  power_iters=50, tol=1e-3, seed=rep))
            results["phitune-fast"].append(run_phitune(model, x, y, lanczos_steps=20,
                                                       num_probes=4, power_iters=50, tol=1e-3,
                                                       seed=rep))
            if ph is not None:
                torch.manual_seed(rep)
                results["pyhessian"].append(run_pyhessian(ph, model, x, y, counter))
        for tool, runs in results.items():
            if not runs:
                continue
            lm = np.array([r["lambda_max"] for r in runs])
            tr = np.array([r["trace"] for r in runs])
            rows.append({
                "model": case["name"], "params": case["params"], "samples": len(x),
                "tool": tool, "repeats": len(runs),
                "seconds_median": statistics.median(r["seconds"] for r in runs),
                "seconds_min": min(r["seconds"] for r in runs),
                "hvp_count": int(statistics.median(r["hvp"] for r in runs)),
                "lambda_max": float(np.median(lm)),
                "lambda_max_max_rel_err": float(np.abs(lm / truth["lambda_max"] - 1).max()),
                "trace": float(np.median(tr)),
                "trace_max_rel_err": float(np.abs(tr / truth["trace"] - 1).max()),
                "truth_lambda_max": truth["lambda_max"], "truth_trace": truth["trace"],
                "truth_source": truth["source"],
            })
            logger.info("%s %s: %s", case["name"], tool, rows[-1])
        plots.append((case, ev, results))

    write_outputs(rows, plots, ph is not None, args)
    return 0


def write_outputs(rows: list[dict], plots: list, have_ph: bool, args) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "curvature_bench.csv").open("w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=list(rows[0]))
        wr.writeheader()
        for r in rows:
            wr.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.2 * len(plots), 3.6))
    for i, (case, ev, results) in enumerate(plots):
        ax = fig.add_subplot(1, len(plots), i + 1)
        r = results["phitune"][0]
        ax.semilogy(r["grid"], np.maximum(r["density"], 1e-8), label="phitune SLQ")
        if results["pyhessian"]:
            p = results["pyhessian"][0]
            sigma = r["grid"][1] - r["grid"][0]
            dens = np.zeros_like(r["grid"])
            for e, w in zip(p["eigs"], p["weights"], strict=True):
                d = (r["grid"][:, None] - np.array(e)[None, :]) / (2 * sigma)
                dens += np.exp(-0.5 * d**2) @ np.array(w) / (2 * sigma * np.sqrt(2 * np.pi))
            ax.semilogy(r["grid"], np.maximum(dens / len(p["eigs"]), 1e-8), ls="--",
                        label="PyHessian SLQ")
        if ev is not None:
            hist, edges = np.histogram(ev, bins=60, density=True)
            ax.stairs(np.maximum(hist, 1e-8), edges, color="k", alpha=0.4,
                      label="exact eigenvalues")
        ax.set_title(f"{case['name']} ({case['params']} params)", fontsize=9)
        ax.set_xlabel("eigenvalue")
        ax.set_ylim(1e-6, None)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "curvature_bench.png", dpi=90)

    lines = [
        "# Curvature benchmark: phitune vs PyHessian",
        "",
        provenance_md(args.prov),
        "PyHessian 0.1 (local download, not a dependency)." if have_ph else
        "PyHessian: not available in this run.",
        "",
        "Task: lambda_max + trace + SLQ density on one batch, float32, eval mode. "
        "phitune: 30 Lanczos steps x 8 probes (the defaults), warm-started power iteration "
        "(tol 1e-3); phitune-fast: 20 steps x 4 probes. PyHessian: eigenvalues(maxIter=100, tol=1e-3), trace(maxIter=100, "
        "tol=1e-3), density(iter=30, n_v=8). Errors are the worst of "
        f"{args.repeats} repeats against the truth column; times are min / median over "
        "the repeats.",
        "",
        "| model | params | samples | tool | seconds min / median | HVPs | lambda_max (max "
        "rel err) | trace (max rel err) | truth |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['model']} | {r['params']} | {r['samples']} | {r['tool']} | "
            f"{r['seconds_min']:.2f} / {r['seconds_median']:.2f} | {r['hvp_count']} | "
            f"{r['lambda_max']:.4g} "
            f"({r['lambda_max_max_rel_err']:.1e}) | {r['trace']:.4g} "
            f"({r['trace_max_rel_err']:.1e}) | {r['truth_source']} |"
        )
    if have_ph:
        lines += ["", "Speed-up (PyHessian median seconds / phitune median seconds):", ""]
        by = {(r["model"], r["tool"]): r for r in rows}
        for model in dict.fromkeys(r["model"] for r in rows):
            b = by.get((model, "pyhessian"))
            for tool in ("phitune", "phitune-fast"):
                a = by.get((model, tool))
                if a and b:
                    lines.append(
                        f"- {model}, {tool}: {b['seconds_median'] / a['seconds_median']:.1f}x "
                        f"({b['hvp_count']} vs {a['hvp_count']} HVPs)")
    else:
        lines += ["", "PyHessian could not be imported (pass --pyhessian DIR); only phitune "
                  "was measured."]
    lines += ["", "Density plot: curvature_bench.png (log scale; grey = exact eigenvalue "
              "histogram where the full Hessian is available).", ""]
    (out / "curvature_bench.md").write_text("\n".join(lines))
    import json

    sidecar_path(out / "curvature_bench.md").write_text(json.dumps(args.prov, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())
