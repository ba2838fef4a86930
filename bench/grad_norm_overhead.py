"""Gradient-norm recording overhead: what recording every update's gradient norm costs a step.

Every trial records its per-update gradient norms (``trainables.grad_norms``, the input of the
``refined`` schedule). Goal: at most 2 % of a step. Two measures per case:

* **direct**: the cost of ``GradNormRecorder.record()`` on the model's real gradients (+ the
  flush every 16 steps, as ``run_training`` does), timed alone, over the loop's own step
  (forward, loss, backward, optimizer and scheduler step) without recording; both the fastest
  of several repeats, the estimator least affected by other tenants of a shared CPU. The
  in-loop difference (alternating blocks with and without recording, median of the paired
  differences) is reported beside it as a check.
* **end to end**: ``run_training`` samples/s with ``record_grad_norms=True`` vs ``False``
  (alternating runs, medians); wall-clock, so on a shared machine it carries the noise of the
  other tenants and is reported beside the direct number, not instead of it.

    python bench/grad_norm_overhead.py                  # CPU (a GPU row needs --device cuda)

Writes bench/results/grad_norm_overhead.{csv,md} (+ .provenance.json).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.common import provenance, write_csv, write_markdown  # noqa: E402
from trainables import get_dataset, run_training  # noqa: E402
from trainables.grad_norms import GradNormRecorder, norm_type  # noqa: E402
from trainables.loop import TrainConfig, _loss_fn, _prepare  # noqa: E402

CASES = [
    ("mlp/digits sgd", "mlp", {"hidden_sizes": [128, 64]}, "digits", "sgd", 0.05, 64),
    ("cnn/mnist5k adamw", "cnn", {"width": 16}, "mnist5k", "adamw", 1e-3, 64),
]
_FLUSH_EVERY = 16


def _config(model: str, mkw: dict, dataset: str, optimizer: str, lr: float, bs: int,
            steps: int, device: str) -> dict:
    return {"model": model, "model_kwargs": mkw, "dataset": dataset, "optimizer": optimizer,
            "lr": lr, "batch_size": bs, "total_steps": steps, "eval_every": steps,
            "checkpoint_every": -1, "schedule": "cosine", "seed": 0, "device": device}


def direct(config: dict, bundle, blocks: int, block_steps: int) -> dict:
    """Median process time of a step with and without recording (alternating blocks)."""
    cfg = TrainConfig.from_mapping({**config, "total_steps": blocks * block_steps * 2 + 10})
    p = _prepare(cfg, bundle)
    loss_fn = _loss_fn(p.bundle.task)
    sync = torch.cuda.synchronize if p.device.type == "cuda" else (lambda: None)
    clock = time.perf_counter if p.device.type == "cuda" else time.process_time
    recorder = GradNormRecorder(list(p.model.parameters()), norm_type(cfg.optimizer),
                                blocks * block_steps * 8 + 10)  # room for the isolated calls

    def block(record: bool) -> float:
        sync()
        t0 = clock()
        for i in range(block_steps):
            idx = p.sampler.next()
            x, y = p.bundle.train_x[idx], p.bundle.train_y[idx]
            loss = loss_fn(p.forward(x), y)
            p.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if record:
                recorder.record()
                if i % _FLUSH_EVERY == _FLUSH_EVERY - 1:
                    recorder.flush()
            p.optimizer.step()
            p.scheduler.step()
        if record:
            recorder.flush()
        sync()
        return (clock() - t0) / block_steps

    block(True)
    block(False)  # warm-up
    on, off = [], []
    for b in range(blocks):  # ABBA: neither side always first
        first = b % 2 == 0
        for rec in (first, not first):
            (on if rec else off).append(block(rec))
    step = min(off)
    diff = statistics.median(a - b for a, b in zip(on, off, strict=True))
    isolated = []
    for _ in range(blocks):  # the last step's gradients are still there
        sync()
        t0 = clock()
        for i in range(block_steps * 4):
            recorder.record()
            if i % _FLUSH_EVERY == _FLUSH_EVERY - 1:
                recorder.flush()
        sync()
        isolated.append((clock() - t0) / (block_steps * 4))
        recorder._pending.clear()
    record = min(isolated)
    return {"step_us": step * 1e6, "record_us": record * 1e6, "direct_pct": 100 * record / step,
            "in_loop_diff_us": diff * 1e6, "in_loop_pct": 100 * diff / statistics.median(off),
            "grad_tensors": len([q for q in p.model.parameters() if q.requires_grad]),
            "direct_blocks": blocks, "block_steps": block_steps}


def end_to_end(config: dict, bundle, repeats: int) -> dict:
    def sps(record: bool) -> float:
        final = run_training(config, lambda m, s: None, bundle=bundle, record_grad_norms=record)
        return float(final["samples_per_s"])

    sps(True)
    sps(False)
    on, off = [], []
    for r in range(repeats):
        first = r % 2 == 0
        for rec in (first, not first):
            (on if rec else off).append(sps(rec))
    on_m, off_m = statistics.median(on), statistics.median(off)
    spread = 100 * (max(off) - min(off)) / off_m
    return {"sps_on": on_m, "sps_off": off_m, "e2e_pct": 100 * (off_m / on_m - 1),
            "e2e_off_spread_pct": spread, "e2e_repeats": repeats}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--steps", type=int, default=200, help="steps of each end-to-end run")
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--blocks", type=int, default=12, help="direct: blocks per side")
    ap.add_argument("--block-steps", type=int, default=48)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--data-dir", default=os.environ.get("PHITUNE_DATASET_DIR", ".phitune/data"))
    ap.add_argument("--out-dir", default=str(REPO / "bench" / "results"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    prov = provenance(
        command="python bench/grad_norm_overhead.py " + " ".join(argv or sys.argv[1:]),
        seeds="model init and batch order seed 0 on both sides", device=args.device)
    rows = []
    for label, model, mkw, dataset, optimizer, lr, bs in CASES:
        bundle = get_dataset(dataset, data_dir=args.data_dir)
        config = _config(model, mkw, dataset, optimizer, lr, bs, args.steps, args.device)
        row = {"case": label, "device": args.device, "norm": norm_type(optimizer),
               "batch_size": bs, **direct(config, bundle, args.blocks, args.block_steps),
               **end_to_end(config, bundle, args.repeats)}
        rows.append(row)
        print(f"{label}: step {row['step_us']:.0f} us, recording {row['record_us']:.1f} us "
              f"= {row['direct_pct']:.2f} % (direct); end to end {row['e2e_pct']:+.2f} % "
              f"(run-to-run spread {row['e2e_off_spread_pct']:.1f} %)")
    out = Path(args.out_dir)
    write_csv(out / "grad_norm_overhead.csv", rows)
    lines = ["| case | norm | step (µs) | recording (µs/step) | direct | in-loop check | "
             "end to end (spread) |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r['norm']} | {r['step_us']:.0f} | {r['record_us']:.1f} "
                     f"| {r['direct_pct']:.2f} % | {r['in_loop_pct']:+.2f} % | "
                     f"{r['e2e_pct']:+.2f} % (±{r['e2e_off_spread_pct']:.1f} %) |")
    worst = max(r["direct_pct"] for r in rows)
    verdict = ("meets" if worst <= 2.0 else "misses") + f" the ≤ 2 % goal (worst {worst:.2f} %)"
    body = "\n".join(lines) + f"""

Direct: `GradNormRecorder.record()` (+ its flush every 16 steps) on the model's gradients,
timed alone, fastest of {args.blocks} repeats of {4 * args.block_steps} calls, over the fastest
of {args.blocks} blocks of {args.block_steps} plain steps (CPU process time). In-loop check:
{args.blocks} alternating blocks with and without recording, median paired difference over the
median step (noisy on a shared CPU).
End to end: `run_training` samples/s, recording on vs off, {args.repeats} alternating runs of
{args.steps} steps, medians; wall clock on a shared machine, so its spread (max − min of the
"off" runs over their median) is shown beside it.

On {args.device}: recording {verdict} of a step. GPU: {'measured above' if args.device == 'cuda'
else 'not measured (no GPU on this machine)'}.
"""
    write_markdown(out / "grad_norm_overhead.md", "# Gradient-norm recording overhead\n", prov,
                   body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
