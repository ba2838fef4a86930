"""Trainer overhead: samples/s of ``run_training`` vs a hand-written PyTorch loop.

Same model (same seed), same data, same optimizer, same UBA scheduler, same number of
steps. The hand-written loop is what one would write without phitune: data normalised once
as float tensors on the device, a ``randperm`` per epoch, slice, forward, loss, backward,
step, scheduler step, and no host sync until the end. ``run_training`` additionally keeps
uint8 data and normalises per batch, buffers losses for NaN detection and reports metrics;
its ``samples_per_s`` excludes evaluation time (one evaluation, at the end).

The goal is a ratio >= 0.95. Runs alternate (trainer, hand, trainer, ...) ``--repeats``
times and the median of each is reported, because the CPU is shared.

    python bench/trainer_overhead.py                    # CPU, small sizes (CI smoke test)
    python bench/trainer_overhead.py --device cuda --steps 300 --scale large

Writes bench/results/trainer_overhead.{csv,md,png}.
"""

from __future__ import annotations

import argparse
import csv
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import provenance, provenance_md, sidecar_path  # noqa: E402
from trainables import build_model, get_dataset, run_training  # noqa: E402
from trainables.loop import TrainConfig, build_scheduler  # noqa: E402

CASES = {
    "small": [
        ("mlp/digits", "mlp", {"hidden_sizes": [128, 64]}, "digits", {}, 64),
        ("cnn/mnist5k", "cnn", {"width": 16}, "mnist5k", {}, 64),
        (
            "transformer_lm/shakespeare",
            "transformer_lm",
            {"n_layer": 2, "n_head": 2, "d_model": 64},
            "shakespeare_char",
            {"block_size": 64, "max_chars": 200_000},
            32,
        ),
    ],
    "large": [
        ("cnn/fashion_mnist", "cnn", {"width": 64}, "fashion_mnist", {}, 256),
        ("resnet18/fashion_mnist", "resnet18", {"stem": "cifar"}, "fashion_mnist", {}, 256),
        (
            "transformer_lm/shakespeare",
            "transformer_lm",
            {"n_layer": 6, "n_head": 6, "d_model": 384},
            "shakespeare_char",
            {"block_size": 256},
            64,
        ),
    ],
}


def hand_loop(config: dict, bundle, device: torch.device) -> float:
    """A plain PyTorch loop over the same model/data/schedule; returns samples/s."""
    cfg = TrainConfig.from_mapping(config)
    torch.manual_seed(cfg.seed)
    data = bundle.to(device)
    model = build_model(cfg.model, data, **cfg.model_kwargs).to(device).train()
    x_all = data.preprocess(data.train_x) if data.preprocess else data.train_x
    y_all = data.train_y
    if cfg.optimizer == "adamw":
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    else:
        opt = torch.optim.SGD(
            model.parameters(),
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov,
            weight_decay=cfg.weight_decay,
        )
    sched = build_scheduler(cfg, opt)
    g = torch.Generator(device=device).manual_seed(cfg.seed)
    n, bs = data.num_train, cfg.batch_size
    lm = data.task == "lm"
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    perm, pos = None, n
    for _ in range(cfg.total_steps):
        if pos + bs > n:
            perm, pos = torch.randperm(n, generator=g, device=device), 0
        idx = perm[pos : pos + bs]
        pos += bs
        x, y = x_all[idx], y_all[idx]
        if data.augment is not None:
            x = data.augment(x, g)
        out = model(x)
        if lm:
            loss = F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
        else:
            loss = F.cross_entropy(out, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    sync()
    return cfg.total_steps * bs / (time.perf_counter() - t0)


def trainer(config: dict, bundle) -> float:
    out = run_training(config, lambda m, s: None, bundle=bundle)
    return out["samples_per_s"]


def cpu_time_ratio(config: dict, bundle, device: torch.device, steps: int, repeats: int) -> float:
    """Hand-loop CPU seconds per step / trainer CPU seconds per step (higher = trainer cheaper).

    Process CPU time (one torch thread) is far less sensitive than wall time to other jobs on
    a shared machine. Each side runs ``steps`` and ``2 * steps`` steps; the difference is
    the cost of ``steps`` training steps alone (model build, data and the final evaluation
    cancel out). Median over ``repeats``.
    """

    def cost(fn, n: int) -> float:
        c0 = time.process_time()
        fn({**config, "total_steps": n, "eval_every": n})
        return time.process_time() - c0

    def run_trainer(cfg: dict) -> None:
        trainer(cfg, bundle)

    def run_hand(cfg: dict) -> None:
        hand_loop(cfg, bundle, device)

    ratios = []
    for i in range(repeats):
        if i % 2 == 0:
            t = cost(run_trainer, 2 * steps) - cost(run_trainer, steps)
            h = cost(run_hand, 2 * steps) - cost(run_hand, steps)
        else:
            h = cost(run_hand, 2 * steps) - cost(run_hand, steps)
            t = cost(run_trainer, 2 * steps) - cost(run_trainer, steps)
        # With few steps the difference is within the clock's noise and can come out zero or
        # negative; such a repeat measured nothing, so it is dropped rather than turned into
        # a meaningless (negative) ratio.
        if h > 0 and t > 0:
            ratios.append(h / t)
    return statistics.median(ratios) if ratios else float("nan")


def spread_note(rows: list[dict]) -> str:
    """Say plainly whether the runs were steady enough to judge a 5 % goal."""
    spreads = []
    for r in rows:
        for key in ("trainer_runs", "hand_runs"):
            runs = [float(v) for v in r[key].split()]
            spreads.append(max(runs) / min(runs))
    worst = max(spreads)
    ratios = [
        v
        for r in rows
        for k in ("ratio", "cpu_time_ratio")
        if math.isfinite(v := float(r[k])) and v > 0
    ]
    if not ratios:
        return "Reading: no ratio could be measured (runs too short for the clock); re-run longer."
    geo = math.exp(statistics.fmean(math.log(v) for v in ratios))
    lean = (
        "consistent with no systematic trainer overhead"
        if 0.95 <= geo <= 1.05
        else (
            "leaning towards a trainer overhead"
            if geo < 0.95
            else "leaning in the trainer's favour"
        )
    )
    if worst > 1.10:
        return (
            f"Reading: single runs of one side differ by up to {worst:.2f}x (max/min), more "
            "than the 5 % the goal is about, so this run can neither confirm nor refute the "
            f"0.95 goal; the geometric mean of all ratios is {geo:.3f}, {lean}. Re-run "
            "on an idle machine (or a GPU) for a precise number."
        )
    return f"Reading: runs were steady (worst max/min spread {worst:.2f}x)."


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--scale", default="small", choices=sorted(CASES))
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--case", default="", help="only cases whose label contains this")
    ap.add_argument(
        "--cpu-repeats", type=int, default=3, help="repeats of the CPU-time measure (0 = off)"
    )
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--data-dir", default=os.environ.get("PHITUNE_DATASET_DIR", ".phitune/data"))
    ap.add_argument("--out-dir", default=str(REPO / "bench" / "results"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    prov = provenance(
        command="python bench/trainer_overhead.py " + " ".join(argv or sys.argv[1:]),
        seeds="model init and batch order seed 0 in both loops", device=args.device)

    rows = []
    for label, model, mkw, dataset, dkw, bs in CASES[args.scale]:
        if args.case not in label:
            continue
        try:
            bundle = get_dataset(dataset, data_dir=args.data_dir, **dkw)
        except FileNotFoundError as exc:
            print(f"skip {label}: {exc}")
            continue
        config = {
            "model": model,
            "model_kwargs": mkw,
            "dataset": dataset,
            "dataset_kwargs": dkw,
            "optimizer": "adamw" if model == "transformer_lm" else "sgd",
            "lr": 1e-3 if model == "transformer_lm" else 0.05,
            "batch_size": bs,
            "total_steps": args.steps,
            "eval_every": args.steps,
            "checkpoint_every": -1,
            "schedule": "uba",
            "phi": 5.0,
            "phases": 1,
            "seed": 0,
            "device": args.device,
        }
        trainer(config, bundle)  # warm-up (allocator, kernels) for both
        hand_loop(config, bundle, device)
        t_runs, h_runs = [], []
        for i in range(args.repeats):  # ABBA order: neither side always runs first
            if i % 2 == 0:
                t_runs.append(trainer(config, bundle))
                h_runs.append(hand_loop(config, bundle, device))
            else:
                h_runs.append(hand_loop(config, bundle, device))
                t_runs.append(trainer(config, bundle))
        t_med, h_med = statistics.median(t_runs), statistics.median(h_runs)
        paired = statistics.median(t / h for t, h in zip(t_runs, h_runs, strict=True))
        cpu_ratio = float("nan")
        if device.type == "cpu" and args.cpu_repeats > 0:
            cpu_ratio = cpu_time_ratio(config, bundle, device, args.steps, args.cpu_repeats)
        rows.append(
            {
                "case": label,
                "device": args.device,
                "batch_size": bs,
                "steps": args.steps,
                "trainer_samples_per_s": round(t_med, 1),
                "hand_samples_per_s": round(h_med, 1),
                "ratio": round(t_med / h_med, 3),
                "paired_ratio": round(paired, 3),
                "cpu_time_ratio": round(cpu_ratio, 3),
                "trainer_runs": " ".join(f"{v:.0f}" for v in t_runs),
                "hand_runs": " ".join(f"{v:.0f}" for v in h_runs),
            }
        )
        print(
            f"{label:28s} trainer {t_med:10.1f}/s  hand {h_med:10.1f}/s  ratio {t_med / h_med:.3f}"
            f"  cpu-time ratio {cpu_ratio:.3f}"
        )

    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not rows:
        print("no case could run (data missing?)")
        return 1
    with open(out / "trainer_overhead.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    lines = [
        "# Trainer overhead: `run_training` vs a hand-written PyTorch loop",
        "",
        provenance_md(prov),
        f"{args.steps} steps per run, {args.repeats} runs in ABBA order after one "
        "warm-up each. Goal: ratio >= 0.95. `ratio` = median trainer / median hand loop; "
        "`paired` = median of the per-repeat ratios (each pair ran back to back); "
        "`cpu-time` = hand-loop / trainer process CPU seconds per training step (runs of N "
        "and 2N steps differenced, so setup and the final evaluation cancel), the measure "
        "least disturbed by other jobs on a shared CPU. The CPU is shared with other jobs, "
        "so single runs vary; the runs column holds every run (min and median in the README).",
        "",
        "| case | batch | trainer samples/s | hand loop samples/s | ratio | paired | cpu-time "
        "| runs (trainer / hand) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {r['batch_size']} | {r['trainer_samples_per_s']} | "
            f"{r['hand_samples_per_s']} | **{r['ratio']}** | {r['paired_ratio']} | "
            f"{r['cpu_time_ratio']} | "
            f"{r['trainer_runs']} / {r['hand_runs']} |"
        )
    lines += [
        "",
        spread_note(rows),
        "",
    ]
    (out / "trainer_overhead.md").write_text("\n".join(lines))
    import json

    sidecar_path(out / "trainer_overhead.md").write_text(json.dumps(prov, indent=2) + "\n")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6.5, 3.2))
        names = [r["case"] for r in rows]
        ratios = [r["ratio"] for r in rows]
        ax.barh(names, ratios, color=["tab:green" if v >= 0.95 else "tab:orange" for v in ratios])
        ax.axvline(0.95, color="k", ls="--", lw=1, label="goal 0.95")
        ax.axvline(1.0, color="grey", ls=":", lw=1)
        for i, v in enumerate(ratios):
            ax.text(v + 0.01, i, f"{v:.3f}", va="center")
        ax.set_xlim(0, max(1.15, max(ratios) + 0.1))
        ax.set_xlabel("trainer samples/s ÷ hand-written loop samples/s")
        ax.set_title(f"run_training overhead ({args.device}, {args.steps} steps)")
        ax.legend(loc="lower right")
        fig.tight_layout()
        fig.savefig(out / "trainer_overhead.png", dpi=110)
    except ImportError:
        print("matplotlib missing: no PNG")
    print(f"wrote {out}/trainer_overhead.{{csv,md,png}}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
