"""Render README.md's "Measured results" section from the files under ``bench/results/``.

Why generated: a number typed into the README drifts from the file it came from, and a
sentence that interprets a result ("best at every budget") drifts further. Here every table
cell and every interpreting sentence is computed from a committed result file (paired wins
per seed, ranks, min/median times), and ``tests/bench/test_render_readme.py`` fails when
README.md differs from what this script renders. Run ``make readme-results`` after a bench.

    python -m bench.render_readme            # rewrite the section between the markers
    python -m bench.render_readme --check    # exit 1 if README.md is out of date

The section lives between ``<!-- results:begin -->`` and ``<!-- results:end -->``; the rest
of README.md is never touched. A result file that is missing renders as a line saying so, so
a partial results directory still renders (and the test still pins it).
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.common import REPO_ROOT, RESULTS_DIR, mean_std, read_csv

BEGIN = "<!-- results:begin -->"
END = "<!-- results:end -->"
README = REPO_ROOT / "README.md"

def _f(x: float, nd: int = 2) -> str:
    return f"{x:.{nd}f}"


def _missing(name: str) -> str:
    return f"_`{name}` is not in `bench/results/` yet: no numbers shown._\n"


def provenance_note(results: Path, names: Sequence[str]) -> str:
    """"Provenance: …" for the markdown files a paragraph quotes, read from their headers;
    a file written before the full header (issue 14) is labelled as such."""
    parts = []
    for name in names:
        md = results / f"{name}.md"
        if not md.exists():
            continue
        text = md.read_text()
        m = re.search(r"date: ([^,]+), git commit ([0-9a-f]+|unknown)( \((?:dirty|clean)[^)]*\))?",
                      text)
        if m is None:
            parts.append(f"`{name}.md` has no provenance header (older run)")
        elif "load average (1/5/15 min) before" not in text:
            parts.append(f"`{name}.md` {m.group(1)}, commit {m.group(2)} (older header: no "
                         "load average before/after, no dirty flag)")
        else:
            dirty = " dirty" if m.group(3) and "dirty" in m.group(3) else ""
            load = re.search(r"before: ([0-9.]+) / .*?after: ([0-9.]+) /", text)
            cpus = re.search(r"\((\d+) CPUs visible", text)
            load_txt = (f", 1-min load average {load.group(1)} → {load.group(2)}"
                        + (f" on {cpus.group(1)} CPUs" if cpus else "") if load else "")
            parts.append(f"`{name}.md` {m.group(1)}, commit {m.group(2)}{dirty}{load_txt}")
    return ("Provenance: " + "; ".join(parts) + ".\n") if parts else ""


# ----------------------------------------------------------------------------- quality


def render_quality(results: Path) -> str:
    """Schedule quality at equal tuning compute (bench/schedule_quality.py): per task and
    budget, searched UBA against the best of its peers, and the goal verdict, all computed."""
    from bench import schedule_quality as sq

    cells = sq.load_cells(results)
    if not cells:
        return _missing("schedule_quality_<task>.csv")
    p = sq.PRESETS["cpu"]
    lines = [
        f"### Schedule quality at equal tuning compute ({len({c.task for c in cells})} "
        f"task(s): {', '.join(dict.fromkeys(c.task for c in cells))})\n",
        "Each arm — searched UBA (the default design: η_max sweep at a REX-like φ, then the "
        "family's shapes at the best η_max), cosine, linear, step, REX, WSD (η_max "
        "tuned) and schedule-free SGD/AdamW (lr tuned) — is tuned by phitune's own search "
        "code, the same horizon ladder "
        f"({p.candidates} candidates, η = {p.eta}, {p.finalists} finalists × "
        f"{p.finalist_seeds} extra seeds: the same compute for every arm) on the tuning half of "
        "the validation set, then trained with evaluation seeds "
        f"0..{p.eval_seeds - 1} and scored on the other half. Budgets 25 / 50 / 100 %, each "
        "from scratch. Test accuracy in % (or test loss for the LM), mean ± std; paired = UBA "
        "minus the best peer per seed, positive = UBA better, with wins/ties/losses and an "
        "exact sign-flip p (`bench/results/schedule_quality.md` has every arm). The "
        "data-driven schedulers join as arms where a task has their rows: AutoLRS (Jin et al., "
        "ICLR 2021) picks the lr of each stage on the fly by BO over short trial windows and "
        "an exponential loss forecast, so it is not ladder-tuned and its compute is the search "
        "it trains beyond T; refinement (Defazio et al., 2023) turns the gradient norms of one "
        "full-budget run (of linear decay or of UBA's pick) into a schedule whose η_max the "
        "ladder then tunes.\n",
        "| task | steps | searched UBA | rank (of arms) | best peer | UBA − best peer (paired) |",
        "|---|---|---|---|---|---|",
    ]
    for c in cells:
        s, unit = sq._scale(c.metric)
        nd = 2 if s != 1 else 3
        m, sd = mean_std(c.finite("uba"))
        peer = c.best_peer()
        pm, psd = mean_std(c.finite(peer))
        sign = 1 if c.mode == "max" else -1
        rank = 1 + sum(sign * c.mean(a) > sign * c.mean("uba") for a in c.arms if a != "uba")
        lines.append(
            f"| {c.task} ({sq.metric_label(c.metric)}) | {c.steps} | {_f(s * m, nd)} ± "
            f"{_f(s * sd, nd)} | {rank} of {len(c.arms)} | {sq.LABELS[peer]} {_f(s * pm, nd)} ± {_f(s * psd, nd)} "
            f"| {c.uba_vs(peer).fmt(scale=s, unit=unit)} |")
    lines += ["", sq.verdict_text(cells), "",
              sq.same_test_text(cells).replace("## The same test", "#### The same test"),
              sq.data_driven_text(cells).replace(
        "## Data-driven", "#### Data-driven"), sq.fidelity_text(results, "cpu").replace(
        "## η_max", "#### η_max"),
              provenance_note(results, [sq.NAME])]
    return "\n".join(lines)


def render_restart(results: Path) -> str:
    """How many phases, and the peak after a restart (bench/restart_peaks.py): the table and
    its counted sentences, the measurement behind the search's one-phase first iteration."""
    from bench import restart_peaks as rp

    path = results / f"{rp.NAME}.csv"
    if not path.exists():
        return _missing(f"{rp.NAME}.csv")
    body = rp.report_body(read_csv(path), results / "phi_corpus.csv")
    return ("#### Phases and the peak after a restart\n\n"
            + body.replace("## One vs two phases", "##### One vs two phases")
            + "\n" + provenance_note(results, [rp.NAME]))


# ----------------------------------------------------------------------------- search


def render_search(results: Path) -> str:
    from bench import search_bench as sb

    fid_path = results / f"{sb.NAME}_fidelity.csv"
    sum_path = results / f"{sb.NAME}_summary.csv"
    if not (fid_path.exists() and sum_path.exists()):
        return ("### Schedule-aware search (issue 11)\n\n"
                + _missing(f"{sb.NAME}_summary.csv") + "\n")
    fid, summary = sb.read_results(results, sb.NAME)
    cases = list(dict.fromkeys(r["case"] for r in summary))
    lines = [
        "### Schedule-aware search: rank fidelity and compute to target\n",
        f"A tabular (lookup) simulation on the real runs of the dense φ grid corpus "
        f"(`{sb.NAME}.md`: what it does not capture is listed there). Spearman correlation "
        "with the final full-horizon metric, over configurations (seed means):\n",
        "| task / optimizer | metric | ASHA rung T/4 | ASHA rung T/2 | ladder rung T/4 | "
        "ladder rung T/2 | seed std | best − worst config |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        f = {(r["fidelity"], r["fraction"]): r for r in fid if r["case"] == case}
        any_row = next(iter(f.values()))

        def cell(kind: str, frac: float, f: dict = f) -> str:
            r = f.get((kind, frac))
            return "–" if r is None or not math.isfinite(r["spearman_configs"]) else \
                f"{r['spearman_configs']:+.2f}"

        lines.append(f"| {case} | {any_row['metric']} | {cell('asha_rung', 0.25)} | "
                     f"{cell('asha_rung', 0.5)} | {cell('ladder_rung', 0.25)} | "
                     f"{cell('ladder_rung', 0.5)} | {any_row['seed_std']:.4f} | "
                     f"{any_row['best_worst_spread']:.4f} |")
    all_cases = list(dict.fromkeys(r["case"] for r in fid))

    def share(kind: str) -> int:
        """Cases where both rungs (T/4, T/2) of ``kind`` have Spearman >= the goal."""
        ok = 0
        for case in all_cases:
            rho = [r["spearman_configs"] for r in fid if r["case"] == case
                   and r["fidelity"] == kind]
            ok += bool(rho) and all(math.isfinite(x) and x >= sb.GOAL_SPEARMAN for x in rho)
        return ok

    def negative(kind: str) -> int:
        return sum(any(r["fidelity"] == kind and r["case"] == case
                       and math.isfinite(r["spearman_configs"]) and r["spearman_configs"] < 0
                       for r in fid) for case in all_cases)

    lines += ["", f"Over all {len(all_cases)} cases of the corpus (tasks × optimizers, with "
              f"η_max, batch-size and dataset variants; `{sb.NAME}.md`): both ladder rungs reach Spearman ≥ {sb.GOAL_SPEARMAN} in "
              f"{share('ladder_rung')}, both ASHA rungs in {share('asha_rung')}; an ASHA rung "
              f"ranks configurations backwards (Spearman < 0) in {negative('asha_rung')}, a "
              f"ladder rung in {negative('ladder_rung')}."]
    methods = [m for m in sb.METHODS if any(r["method"] == m for r in summary)]
    n = summary[0]["n"]
    cap = summary[0]["max_units"]
    lines += ["", f"Compute (full-run units) until the returned incumbent is within one seed "
              f"std of the grid's best, median over {n} search seeds (reached k/n within "
              f"{cap:g} units):\n",
              "| task / optimizer | " + " | ".join(methods) + " |",
              "|---|" + "---|" * len(methods)]
    for case in cases:
        s = {r["method"]: r for r in summary if r["case"] == case}
        lines.append(f"| {case} | " + " | ".join(
            (f"{sb.fmt_units(s[m]['median_units'], cap)} ({s[m]['reached']}/{s[m]['n']})"
             if m in s else "–") for m in methods) + " |")
    lines += ["", f"Median regret (seed-mean gap of the returned configuration to the grid's best, "
              f"metric units) after {sb.REGRET_AT_UNITS:g} units, the paper grid's compute:\n",
              "| task / optimizer | " + " | ".join(methods) + " |",
              "|---|" + "---|" * len(methods)]
    for case in cases:
        s = {r["method"]: r for r in summary if r["case"] == case}
        lines.append(f"| {case} | " + " | ".join(
            f"{s[m]['median_regret_12']:.4f}" if m in s else "–" for m in methods) + " |")
    by = {(r["case"], r["method"]): r for r in summary}
    lad = [m for m in ("ladder_tpe", "ladder_gp") if any(r["method"] == m for r in summary)]
    if lad and any(r["method"] == "tpe" for r in summary):
        faster = sum(min(by[(c, m)]["median_units"] for m in lad if (c, m) in by)
                     < by[(c, "tpe")]["median_units"] for c in cases if (c, "tpe") in by)
        not_slower = sum(min(by[(c, m)]["median_units"] for m in lad if (c, m) in by)
                         <= by[(c, "tpe")]["median_units"] for c in cases if (c, "tpe") in by)
        quick = sum(by[(c, "random")]["median_units"] <= 2 for c in cases
                    if (c, "random") in by)
        lines += ["", f"The ladder (best of {', '.join(lad)}) needs less compute than "
                  f"full-budget TPE on {faster} of {len(cases)} cases and no more on "
                  f"{not_slower}. One ladder costs "
                  f"{min(by[(c, m)]['min_units'] for c in cases for m in lad if (c, m) in by):g}"
                  f" units before it returns anything, while plain random search reaches this "
                  f"target (one seed std) with a median of ≤ 2 units on {quick} of "
                  f"{len(cases)} cases: on these tasks many φ are within seed noise of the "
                  "best (`configs within target` in the markdown)."]
    grid_units = sorted({float(r["units_spent"]) for r in read_csv(
        results / f"{sb.NAME}_compute.csv") if r["method"] == "grid12"})
    if grid_units and grid_units[0] < 12:
        lines.append(f"Where the corpus has one phase count the paper's 12-point grid is "
                     f"{grid_units[0]:g} distinct points ({grid_units[0]:g} units); its φ "
                     "values start at 0.25, so it cannot reach a best φ below that.")
    verdict = sb.goal_verdict(cases, fid, summary)
    both = [c for c, g in verdict.items() if g["compute_ok"] and g["spearman_ok"]]
    comp = [c for c, g in verdict.items() if g["compute_ok"]]
    rho = [c for c, g in verdict.items() if g["spearman_ok"]]
    lines += ["", f"Goal (issue 11: the ladder reaches the target with ≤ {sb.GOAL_UNITS:g} "
              f"full-run units, 1/3 of the paper grid, and its rungs have Spearman ≥ "
              f"{sb.GOAL_SPEARMAN}): compute goal met on {len(comp)} of {len(cases)}, "
              f"fidelity goal on {len(rho)} of {len(cases)}, both on {len(both)} of "
              f"{len(cases)} task/optimizer cases"
              + (f" ({', '.join(both)})" if both else "") + ".", "",
              provenance_note(results, [sb.NAME])]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- φ, curvature


def render_phi(results: Path) -> str:
    path = results / "phi_suggestions.csv"
    if not path.exists():
        return "### φ suggestions\n\n" + _missing("phi_suggestions.csv") + "\n"
    rows = read_csv(path)
    if not rows or not {"case", "source", "gap_points"} <= set(rows[0]):
        return ("### φ suggestions\n\nSee `phi_suggestions.md` (its CSV has no `gap_points` "
                "column to summarise).\n")
    # one gap per case and source: the mean over its paired seeds (a diverged seed counts
    # as the file records it), then median / p90 / worst over cases, per unit
    per_seed: dict[tuple[str, str, str], list[float]] = {}
    for r in rows:
        if r["source"] == "tuned" or r.get("gap", r["gap_points"]) == "":
            continue
        unit = r.get("unit", "points")
        per_seed.setdefault((unit, r["source"], r["case"]),
                            []).append(float(r.get("gap") or r["gap_points"]))
    gap = {k: statistics.fmean(v) for k, v in per_seed.items()}
    units = sorted({u for u, _, _ in gap})
    cases = sorted({c for _, _, c in gap})
    label = {"points": "accuracy points", "relative_%": "% relative validation loss"}
    lines = ["### φ suggestions (zero trials)\n",
             f"Gap of each suggestion's φ to the tuned φ, leave-one-case-out, over {len(cases)} "
             "cases (the test-split metric at the suggested φ minus at the φ tuned on the "
             "validation split; positive = worse; per case the mean over paired seeds; "
             "`phi_suggestions.md`):\n"]
    for unit in units:
        lines += [f"| source ({label.get(unit, unit)}) | median | p90 | worst | cases |",
                  "|---|---|---|---|---|"]
        by_source: dict[str, list[float]] = {}
        for (u, src, _), g in gap.items():
            if u == unit:
                by_source.setdefault(src, []).append(g)
        for src, gs in sorted(by_source.items(), key=lambda kv: statistics.median(kv[1])):
            gs = sorted(gs)
            p90 = gs[min(len(gs) - 1, math.ceil(0.9 * len(gs)) - 1)]
            lines.append(f"| {src} | {statistics.median(gs):+.2f} | {p90:+.2f} | "
                         f"{gs[-1]:+.2f} | {len(gs)} |")
        lines.append("")

    def compare(a: str, b: str) -> tuple[int, int, int]:
        better = tie = worse = 0
        for (u, src, case), g in gap.items():
            if src != a or (u, b, case) not in gap:
                continue
            other = gap[(u, b, case)]
            if abs(g - other) < 1e-9:
                tie += 1
            elif g < other:
                better += 1
            else:
                worse += 1
        return better, tie, worse

    if any(src == "model" for _, src, _ in gap):
        pd, bc = compare("model", "paper_default"), compare("model", "best_constant")
        n_pd = sum(pd)
        lines.append(
            f"Reading (computed from the file): the fitted model is better than the paper default "
            f"(φ = 5 SGD / 0.5 AdamW) on {pd[0]} of {n_pd} cases ({100 * pd[0] / max(n_pd, 1):.0f} %, "
            f"goal ≥ 80 %), and against the best constant φ per optimizer (chosen on the other "
            f"cases) better on {bc[0]}, tied on {bc[1]}, worse on {bc[2]}. Goal for the median "
            "gap: ≤ 0.3 accuracy points and ≤ 1 % relative loss. These cases share networks "
            "across horizons and η_max, so leave-one-case-out is optimistic; "
            "`phi_suggestions.md` has the stricter leave-one-model/dataset-out row.")
    lines += ["", provenance_note(results, ["phi_suggestions"])]
    return "\n".join(lines)


def render_curvature(results: Path) -> str:
    path = results / "curvature_bench.csv"
    if not path.exists():
        return "### Curvature\n\n" + _missing("curvature_bench.csv") + "\n"
    rows = read_csv(path)
    lines = ["### Curvature cost and accuracy vs PyHessian\n",
             "Same model and batch; times in seconds (min / median over repeats); λmax error = "
             "worst relative error over repeats against the reference (`curvature_bench.md`):\n",
             "| model | tool | time min / median | λmax error | reference |",
             "|---|---|---|---|---|"]
    for r in rows:
        ref = r["truth_source"]
        own = ref.startswith("phitune")
        lines.append(f"| {r['model']} | {r['tool']} | {float(r['seconds_min']):.2f} / "
                     f"{float(r['seconds_median']):.2f} | "
                     f"{float(r['lambda_max_max_rel_err']):.1e} | {ref}"
                     + (" (not independent)" if own else "") + " |")
    models = list(dict.fromkeys(r["model"] for r in rows))
    ratios = []
    for m in models:
        t = {r["tool"]: r for r in rows if r["model"] == m}
        if "pyhessian" in t and "phitune-fast" in t:
            ratios.append((m, float(t["pyhessian"]["seconds_median"])
                           / float(t["phitune-fast"]["seconds_median"]),
                           float(t["pyhessian"]["seconds_min"])
                           / float(t["phitune-fast"]["seconds_min"])))
    if ratios:
        lines += ["", "PyHessian time / phitune-fast time: " + "; ".join(
            f"{m} {a:.1f}× (median), {b:.1f}× (min)" for m, a, b in ratios) + "."]
    own = sorted({r["model"] for r in rows if r["truth_source"].startswith("phitune")})
    if own:
        lines.append(f"On {', '.join(own)} the reference is phitune's own long run, so those "
                     "errors say how PyHessian agrees with phitune, not which one is right.")
    lines += ["", provenance_note(results, ["curvature_bench"])]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- overheads


def _runs(cell: str) -> list[float]:
    return [float(x) for x in cell.split()]


def render_overheads(results: Path) -> str:
    lines = ["### Overheads (timings on a shared CPU: min and median)\n"]
    so = results / "schedule_overhead.json"
    if so.exists():
        d = json.loads(so.read_text())
        ratio = d["step_ratio_vs_cosine_annealing"]
        med = d.get("step_ratio_vs_cosine_annealing_median")
        parts = []
        for groups, r in ratio.items():
            txt = f"{r['UBALR']:.2f}× (min)"
            if med:
                txt += f", {med[groups]['UBALR']:.2f}× (median)"
            parts.append(f"{groups}: {txt}")
        lines.append(f"- `UBALR.step()` vs `CosineAnnealingLR.step()`, {d['repeats']} repeats "
                     f"of {d['steps']} calls: " + "; ".join(parts) + " (`schedule_overhead.md`).")
    to = results / "trainer_overhead.csv"
    if to.exists():
        rows = read_csv(to)
        parts = []
        for r in rows:
            tr, hd = _runs(r["trainer_runs"]), _runs(r["hand_runs"])
            parts.append(
                f"{r['case']} {statistics.median(tr) / statistics.median(hd):.2f} (median), "
                f"{max(tr) / max(hd):.2f} (best runs), CPU time {float(r['cpu_time_ratio']):.2f}")
        low = [r["case"] for r in rows if float(r["cpu_time_ratio"]) < 0.95]
        lines.append(
            "- Trainer vs a hand-written loop, samples/s ratio (> 1: trainer faster) and "
            "CPU-time ratio (hand-loop CPU s per step / trainer's; < 1: trainer costs more "
            "CPU): " + "; ".join(parts) + ". The ≥ 0.95 goal holds in CPU time for "
            f"{len(rows) - len(low)} of {len(rows)} cases"
            + (f" (not for {', '.join(low)})" if low else "") + " (`trainer_overhead.md`).")
    tc = results / "trainer_overhead_cuda.csv"
    if tc.exists():
        rows = read_csv(tc)
        gpu = _gpu_name(results / "trainer_overhead_cuda.provenance.json")
        parts = [f"{r['case']} {float(r['ratio']):.3f} (median), {float(r['paired_ratio']):.3f} "
                 "(paired)" for r in rows]
        low = [r["case"] for r in rows if float(r["ratio"]) < 0.95]
        lines.append(
            f"- The same on a GPU ({gpu}, {rows[0]['steps']} steps, batch "
            f"{rows[0]['batch_size']}): " + "; ".join(parts) + ". The ≥ 0.95 goal holds for "
            f"{len(rows) - len(low)} of {len(rows)} cases"
            + (f" (not for {', '.join(low)})" if low else "") + " (`trainer_overhead_cuda.md`).")
    sv = results / "service_overhead.csv"
    if sv.exists():
        rows = read_csv(sv)
        cols = [k for k in rows[0] if k.endswith("_s")]
        lines.append(f"- Service + driver, {len(rows)} studies: " + "; ".join(
            f"{k[:-2]} {min(float(r[k]) for r in rows):.2f} / "
            f"{statistics.median(float(r[k]) for r in rows):.2f} s"
            for k in cols) + " (min / median, `service_overhead.md`).")
    lw = results / "load_api_wrk.csv"
    if lw.exists():  # bench.load_api --wrk
        rows = read_csv(lw)
        parts = []
        for name, goal in (("GET study", 0.5), ("GET list(20)", 0.25)):
            ratio = statistics.median(float(r["ratio_to_healthz"]) for r in rows
                                      if r["scenario"] == name)
            parts.append(f"{name} {ratio:.2f}× ({'meets' if ratio >= goal else 'misses'} "
                         f"≥ {goal}×)")
        lines.append(f"- API throughput relative to `/healthz` (wrk, {rows[0]['clients']} "
                     "connections, one uvicorn process, median over rounds on a busy shared "
                     "machine): " + "; ".join(parts) + " (`load_api_wrk.md`).")
        calls = list(dict.fromkeys(r["scenario"] for r in rows if r.get("goal_p99_ms")))
        if calls:  # the lease calls (bench.load_api --wrk, since issue 22)
            goal = float(next(r["goal_p99_ms"] for r in rows if r.get("goal_p99_ms")))
            paces = sorted({float(r.get("think_ms") or 0) for r in rows}, key=lambda t: -t)
            parts = []
            for think in paces:  # the slowest pace (closest to real agents) first
                group = [r for r in rows if float(r.get("think_ms") or 0) == think]
                p99 = {c: statistics.median(float(r["p99_ms"]) for r in group
                                            if r["scenario"] == c) for c in calls}
                met = sum(v <= goal for v in p99.values())
                worst = max(p99, key=lambda c: p99[c])
                pace = (f"{think:g} ms think time per agent (at most "
                        f"{float(rows[0]['clients']) * 1000 / think:.0f} req/s)" if think
                        else "closed loop, no think time (saturation)")
                parts.append(f"{pace}: goal {'met' if met == len(calls) else 'not met'}, "
                             f"{met} of {len(calls)} calls, slowest {worst} p99 "
                             f"{p99[worst]:.0f} ms")
            lines.append(f"- Agent-mode lease calls, {rows[0]['clients']} agents (wrk "
                         f"connections, same run), p99 ≤ {goal:g} ms, median over rounds: "
                         + "; ".join(parts) + " (`load_api_wrk.md`).")
    la = results / "load_api.csv"
    if la.exists():
        rows = read_csv(la)
        parts = [f"{r['shape']} {r['scenario']} p99 {float(r['p99_ms']):.0f} ms" for r in rows
                 if r["shape"] == "polling"]
        gets = [r for r in rows if r["shape"] == "polling" and r["scenario"].startswith("GET")]
        met = sum(float(r["p99_ms"]) <= 50 for r in gets)
        lines.append(f"- API under {rows[0]['clients']} concurrent polling clients: "
                     + "; ".join(parts) + f". The 50 ms p99 read goal is met for {met} of "
                     f"{len(gets)} GET scenarios (`load_api.md`).")
    if len(lines) == 1:
        return ""
    lines += ["", provenance_note(results, ["schedule_overhead", "trainer_overhead",
                                            "trainer_overhead_cuda", "service_overhead",
                                            "load_api_wrk", "load_api"])]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- section


def _gpu_name(provenance_json: Path) -> str:
    """The GPU a result file's provenance names ("unknown GPU" if it names none)."""
    try:
        return str(json.loads(provenance_json.read_text()).get("gpu") or "unknown GPU")
    except (OSError, ValueError):
        return "unknown GPU"


def gpu_note(results: Path) -> str:
    """Which results ran on a GPU, from the files; the rest say "not measured"."""
    tc = results / "trainer_overhead_cuda.provenance.json"
    if not tc.exists():
        return "GPU: not measured (no device lent)."
    return (f"GPU: only the trainer-vs-hand-loop bench ran on a GPU ({_gpu_name(tc)}, lent for "
            "one session; the φ corpus's training runs also ran there, see its provenance); "
            "fractional GPU packing, bf16 and GPU studies: not measured.")


def render(results: Path = RESULTS_DIR) -> str:
    """The whole section body (without the markers)."""
    parts: list[Callable[[Path], str]] = [render_search, render_quality, render_restart,
                                          render_phi, render_curvature, render_overheads]
    head = (
        "Generated by `make readme-results` (`bench/render_readme.py`) from the files in "
        "`bench/results/`; every number and every sentence that interprets one is computed "
        "from them, and a test fails when this section differs. Result files written by the "
        "current benches start with their provenance (command, git commit and dirty flag, "
        "date, machine, load average before and after, versions, seeds); each paragraph's "
        "Provenance line names its files and labels older ones. " + gpu_note(results) + "\n")
    return "\n".join([head, *(p(results) for p in parts)]).rstrip("\n") + "\n"


def splice(readme: str, body: str) -> str:
    """Replace what lies between the markers with ``body``."""
    if readme.count(BEGIN) != 1 or readme.count(END) != 1:
        raise ValueError(f"README must contain {BEGIN} and {END} exactly once")
    head, rest = readme.split(BEGIN)
    _, tail = rest.split(END)
    return f"{head}{BEGIN}\n{body}{END}{tail}"


def current(readme: str) -> str:
    """The section body currently in the README."""
    return readme.split(BEGIN)[1].split(END)[0].removeprefix("\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--readme", type=Path, default=README)
    ap.add_argument("--results", type=Path, default=RESULTS_DIR)
    ap.add_argument("--check", action="store_true", help="exit 1 if README is out of date")
    args = ap.parse_args(argv)
    text = args.readme.read_text()
    body = render(args.results)
    if args.check:
        if current(text) != body:
            print(f"{args.readme}: results section is out of date; run make readme-results",
                  file=sys.stderr)
            return 1
        return 0
    args.readme.write_text(splice(text, body))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
