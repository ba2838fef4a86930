"""Curvature of a *registered* model on its data, and how φ suggestions fared against tuning.

:mod:`tuning.curvature` is a generic estimator (any module, loss and batches). This module
bridges it to the registry: build the model and data exactly as a trial would, take a few
seeded training batches, estimate, and suggest φ. It runs as a Ray task so a curvature job
gets the same CPU/GPU as a trial.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F

from trainables.config import TrainConfig
from tuning.curvature import CurvatureReport, HistoryPoint, estimate_curvature, suggest_phi
from tuning.specs import Resources, StudySpec

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CurvatureSpec:
    """How much work a curvature estimate may do (HVPs ≈ batches × probes × lanczos_steps)."""

    num_batches: int = 4
    batch_size: int = 128
    lanczos_steps: int = 30
    num_probes: int = 4
    ggn: bool = False
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("num_batches", "batch_size", "lanczos_steps", "num_probes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


def _fixed_batches(bundle: Any, curv: CurvatureSpec,
                   device: torch.device) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The same seeded training batches for every measurement, so reports are comparable."""
    n = bundle.num_train
    if n == 0:
        raise ValueError("the dataset has no training examples")
    gen = torch.Generator().manual_seed(curv.seed)
    batches = []
    for _ in range(curv.num_batches):
        idx = torch.randint(0, n, (min(curv.batch_size, n),), generator=gen)
        x, y = bundle.train_x[idx], bundle.train_y[idx]
        if bundle.preprocess is not None:
            x = bundle.preprocess(x)
        batches.append((x.to(device), y.to(device)))
    return batches


def _loss_fn(out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))


def _estimate(model: torch.nn.Module, batches: list, curv: CurvatureSpec) -> CurvatureReport:
    return estimate_curvature(model, _loss_fn, batches, lanczos_steps=curv.lanczos_steps,
                              num_probes=curv.num_probes, ggn=curv.ggn, seed=curv.seed)


def _device(train: TrainConfig) -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() and train.device != "cpu"
                        else "cpu")


def measure_curvature(train: TrainConfig, curv: CurvatureSpec = CurvatureSpec()) -> CurvatureReport:
    """Hessian spectrum of ``train.model`` at initialisation (seeded) on ``train.dataset``."""
    from trainables.registry import build_model, get_dataset

    torch.manual_seed(curv.seed)
    bundle = get_dataset(train.dataset, data_dir=train.data_dir or None,
                         data_roots=train.data_roots, **train.dataset_kwargs)
    model = build_model(train.model, bundle, **train.model_kwargs).to(_device(train))
    return _estimate(model, _fixed_batches(bundle, curv, _device(train)), curv)


class _Done(Exception):
    """Raised from the report callback once the last requested step was measured."""


def measure_curvature_during_training(
    train: TrainConfig, total_steps: int, at_steps: Sequence[int], *, phi: float,
    phases: int = 1, variant: str = "restart", curv: CurvatureSpec = CurvatureSpec(),
) -> list[dict[str, Any]]:
    """Curvature at several points of a real UBA-scheduled run of ``total_steps`` (e.g. the
    start and each phase boundary, for per-phase φ): ``[{"step", "phase", "report"}]``.

    The run is the same as a trial's (same loop, schedule over the whole T); it stops after the
    last requested step. Every measurement uses the same fixed batches.
    """
    from trainables.loop import run_training
    from trainables.registry import build_model, get_dataset
    from tuning.schedules import equal_boundaries

    steps = sorted(set(int(s) for s in at_steps))
    if not steps or steps[0] < 0 or steps[-1] > total_steps:
        raise ValueError(f"at_steps must lie in [0, {total_steps}], got {list(at_steps)}")
    bounds = equal_boundaries(total_steps, phases)
    device = _device(train)
    bundle = get_dataset(train.dataset, data_dir=train.data_dir or None,
                         data_roots=train.data_roots, **train.dataset_kwargs)
    batches = _fixed_batches(bundle, curv, device)

    def phase_of(step: int) -> int:
        return max(k for k in range(phases) if bounds[k] <= step) + 1 if step < total_steps \
            else phases

    def measure(state_dict: dict | None, step: int) -> dict[str, Any]:
        torch.manual_seed(train_seed)
        model = build_model(train.model, bundle, **train.model_kwargs)
        if state_dict is not None:
            model.load_state_dict(state_dict)
        report = _estimate(model.to(device), batches, curv)
        return {"step": step, "phase": phase_of(step), "report": report}

    train_seed = curv.seed
    out = [measure(None, 0)] if steps[0] == 0 else []
    later = [s for s in steps if s > 0]
    if later:
        config = replace(train.for_budget(total_steps, seed=train_seed).with_schedule(
            "uba", phi=phi, phases=phases, variant=variant, eta_min=train.eta_min),
            eval_every=math.gcd(*later), checkpoint_every=0)

        def report(metrics: dict[str, float], state: dict | None) -> None:
            step = int(metrics["step"])
            if step in later and state is not None:
                out.append(measure(state["model"], step))
            if step >= later[-1]:
                raise _Done

        try:
            run_training(config, report, bundle=bundle)
        except _Done:
            pass
    return out


class WarmupDivergedError(ValueError):
    """The short warm-up at eta_max diverged: no trajectory curvature exists (a 4xx upstream)."""


@dataclass(frozen=True)
class FeatureSpec:
    """How :func:`schedule_features` measures: warm-up length and the estimator's work.

    The warm-up is ``warmup_fraction`` of the budget at constant eta_max (UBA with phi = 0),
    at least ``min_warmup_steps``: early enough to be cheap, late enough that the curvature
    is the trajectory's rather than the initialisation's (design.md: tuned phi tracks the
    curvature along the trajectory).
    """

    warmup_fraction: float = 0.05
    min_warmup_steps: int = 10
    at_init: bool = True
    curv: CurvatureSpec = CurvatureSpec(num_batches=2, lanczos_steps=20, num_probes=4)

    def __post_init__(self) -> None:
        if not 0 < self.warmup_fraction <= 0.5:
            raise ValueError(f"warmup_fraction must be in (0, 0.5], got {self.warmup_fraction}")
        if self.min_warmup_steps < 1:
            raise ValueError(f"min_warmup_steps must be >= 1, got {self.min_warmup_steps}")

    def warmup_steps(self, total_steps: int) -> int:
        return min(total_steps, max(self.min_warmup_steps,
                                    round(self.warmup_fraction * total_steps)))


def _batch_loss(model: torch.nn.Module, batches: list) -> float:
    was = model.training
    model.eval()
    with torch.no_grad():
        losses = [float(_loss_fn(model(x), y)) for x, y in batches]
    model.train(was)
    return sum(losses) / len(losses)


def schedule_features(train: TrainConfig, total_steps: int, spec: FeatureSpec = FeatureSpec(),
                      *, bundle: Any = None, warmup: bool = True) -> dict[str, Any]:
    """Features relating curvature to the schedule of a ``total_steps`` run (issue 13 §1).

    Measured on the same fixed batches: the Hessian at initialisation (``init_*``, optional),
    after ``spec.warmup_steps(T)`` steps at constant eta_max with the real training loop
    (``warm_*``), and the matrix the optimizer steps on after the warm-up (``step_*``: the
    Hessian for SGD, Adam's ``P^-1/2 H P^-1/2`` for AdamW), each with eta_max * lambda_max
    and its fraction of the stability limit; plus the budget, batch size, eta_max and
    optimizer. Returns ``{"features", "cost_s" (seconds per feature group), "warmup_steps",
    "reports"}``. ``warmup=False`` measures the initialisation only (one estimate: what a
    model needing no trajectory feature asks for). Raises :class:`WarmupDivergedError` when
    the warm-up diverges.
    """
    import time

    from trainables.errors import DivergedError
    from trainables.loop import run_training
    from trainables.registry import build_model, get_dataset
    from tuning.curvature.features import adam_preconditioner, spectrum_features, stability_limit

    curv = spec.curv
    device = _device(train)
    cost: dict[str, float] = {}
    t0 = time.perf_counter()
    if bundle is None:
        bundle = get_dataset(train.dataset, data_dir=train.data_dir or None,
                             data_roots=train.data_roots, **train.dataset_kwargs)
    batches = _fixed_batches(bundle, curv, device)
    cost["data"] = time.perf_counter() - t0
    limit = stability_limit(train.optimizer, momentum=train.momentum)
    features: dict[str, float] = {
        "adam": float(train.optimizer == "adamw"), "log_T": math.log(total_steps),
        "log_batch": math.log(train.batch_size), "log_eta": math.log(train.lr),
        "stability_limit": limit,
    }
    reports: dict[str, Any] = {}

    def new_model(state: dict | None = None) -> torch.nn.Module:
        torch.manual_seed(curv.seed)  # the init a trial with seed curv.seed starts from
        model = build_model(train.model, bundle, **train.model_kwargs)
        if state is not None:
            model.load_state_dict(state)
        return model.to(device)

    if spec.at_init:
        t0 = time.perf_counter()
        model = new_model()
        features["loss_init"] = _batch_loss(model, batches)
        rep = _estimate(model, batches, curv)
        reports["init"] = rep
        features.update(spectrum_features(rep, eta_max=train.lr, limit=limit, prefix="init_"))
        cost["init"] = time.perf_counter() - t0

    if not warmup:
        return {"features": features, "cost_s": cost, "warmup_steps": 0,
                "reports": {k: r.to_dict() for k, r in reports.items()}}
    steps = spec.warmup_steps(total_steps)
    t0 = time.perf_counter()
    config = replace(train.for_budget(steps, seed=curv.seed).with_schedule(
        "uba", phi=0.0, phases=1, variant="restart", eta_min=0.0),
        eval_every=steps, checkpoint_every=0)
    final: dict[str, Any] = {}
    try:
        run_training(config, lambda m, s: final.update(state=s), bundle=bundle)
    except DivergedError as exc:
        raise WarmupDivergedError(
            f"the {steps}-step warm-up at eta_max={train.lr} diverged ({exc}); lower lr"
        ) from exc
    cost["warmup_train"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = new_model(final["state"]["model"])
    features["loss_warm"] = _batch_loss(model, batches)
    if not math.isfinite(features["loss_warm"]):
        raise WarmupDivergedError(f"loss after the {steps}-step warm-up is not finite")
    rep = _estimate(model, batches, curv)
    reports["warm"] = rep
    features.update(spectrum_features(rep, eta_max=train.lr, limit=limit, prefix="warm_"))
    cost["warm"] = time.perf_counter() - t0
    if train.optimizer == "adamw":
        t0 = time.perf_counter()
        params = [p for p in model.parameters() if p.requires_grad]
        pre = adam_preconditioner(final["state"]["optimizer"], params)
        rep = estimate_curvature(model, _loss_fn, batches, lanczos_steps=curv.lanczos_steps,
                                 num_probes=curv.num_probes, seed=curv.seed,
                                 preconditioner=pre)
        reports["step"] = rep
        features.update(spectrum_features(rep, eta_max=train.lr, limit=limit, prefix="step_"))
        cost["step"] = time.perf_counter() - t0
    else:  # SGD steps on the Hessian itself
        features.update({"step_" + k[len("warm_"):]: v for k, v in features.items()
                         if k.startswith("warm_")})
        cost["step"] = 0.0
    if "loss_init" in features:
        features["warm_loss_ratio"] = features["loss_warm"] / features["loss_init"]
    return {"features": features, "cost_s": cost, "warmup_steps": steps,
            "reports": {k: r.to_dict() for k, r in reports.items()}}


def budget_features(train: TrainConfig, total_steps: int) -> dict[str, float]:
    """The features known without measuring anything (budget, batch, η_max, optimizer)."""
    from tuning.curvature.features import stability_limit

    return {"adam": float(train.optimizer == "adamw"), "log_T": math.log(total_steps),
            "log_batch": math.log(train.batch_size), "log_eta": math.log(train.lr),
            "stability_limit": stability_limit(train.optimizer, momentum=train.momentum)}


def _finite_or_none(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite_or_none(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite_or_none(v) for v in x]
    return x


def recommend_for(train: TrainConfig, total_steps: int, *,
                  history: Sequence[HistoryPoint] = (), history_cases: Sequence[Any] = (),
                  model: Any = None, measure: bool = True,
                  spec: FeatureSpec = FeatureSpec()) -> dict[str, Any]:
    """The recommended φ and phases for a run (:func:`recommend_with_report` without the
    report), the answer of ``POST /v1/recommendations``."""
    return recommend_with_report(train, total_steps, history=history,
                                 history_cases=history_cases, model=model, measure=measure,
                                 spec=spec)[0]


def recommend_with_report(train: TrainConfig, total_steps: int, *,
                          history: Sequence[HistoryPoint] = (),
                          history_cases: Sequence[Any] = (), model: Any = None,
                          measure: bool = True, spec: FeatureSpec = FeatureSpec(),
                          ) -> tuple[dict[str, Any], CurvatureReport | None]:
    """The recommended φ and phases for a run, with every labelled suggestion as evidence, and
    the Hessian report at initialisation it measured (None when it measured none): a study
    reads its curvature suggestions from that report instead of measuring a second time.

    Measures exactly the features the fitted :class:`tuning.curvature.recommend.PhiModel`
    needs (the packaged one: the Hessian at initialisation only, one estimate), predicts from
    the nearest tuned cases (the corpus plus ``history_cases``, finished studies), and lists
    theory (2κ), calibrated, history and paper default next to it. Never raises for a run
    that cannot be measured (``measure=False``, a diverging warm-up, a non-finite loss): it
    answers a labelled fallback (the model on the budget features alone, else the paper
    default) and says why in ``warnings``. Every float in the answer is finite or None.
    """
    import time

    from tuning.curvature.recommend import load_phi_model
    from tuning.specs import PAPER_DEFAULT_PHI

    t0 = time.perf_counter()
    phi_model = model if model is not None else load_phi_model()
    warnings: list[str] = []
    features = budget_features(train, total_steps)
    cost: dict[str, float] = {}
    report = None
    needed = phi_model.needed_features if phi_model is not None else []
    needs_warm = any(n.startswith(("warm_", "step_", "loss_warm")) for n in needed)
    if measure:
        try:
            res = schedule_features(train, total_steps, spec, warmup=needs_warm)
            features.update(res["features"])
            cost = res["cost_s"]
            if "init" in res["reports"]:
                report = CurvatureReport.from_dict(res["reports"]["init"])
        except Exception as exc:  # noqa: BLE001 - diverged, non-finite, OOM: a labelled fallback
            if not isinstance(exc, WarmupDivergedError | ValueError):
                logger.warning("curvature for the recommendation failed", exc_info=True)
            warnings.append(f"curvature not measured ({type(exc).__name__}: {exc}); the "
                            "recommendation uses the budget features only")
    source = "model"
    neighbours: list[dict[str, Any]] = []
    expected: dict[str, Any] = {}
    phases = 1
    if phi_model is not None:
        if history_cases:
            phi_model = phi_model.with_cases(list(history_cases))
        try:
            pred = phi_model.predict(features, train.optimizer)
            phi, phases = pred.phi, pred.phases
            neighbours = [dict(n.__dict__) for n in pred.neighbours]
            expected = pred.expected_gap
            warnings += pred.notes
            if len(pred.features_used) < len(needed):
                source = "model_partial_features"
        except ValueError as exc:
            warnings.append(str(exc))
            phi_model = None
    if phi_model is None:
        phi, source = PAPER_DEFAULT_PHI[train.optimizer], "paper_default"
        warnings.append("no fitted phi model for this optimizer: answering the paper default")
    suggestions = [{"source": "model" if source.startswith("model") else source, "phi": phi,
                    "kappa_definition": None,
                    "rationale": (f"weighted best φ of the {len(neighbours)} nearest tuned "
                                  f"cases in feature space ({', '.join(needed)})"
                                  if neighbours else "fallback"),
                    "valid_for": "runs like the corpus cases (bench/results/phi_corpus.csv); "
                                 "validated leave-one-case-out",
                    "evidence": {"neighbours": neighbours, "expected_gap": expected}}]
    suggestions += [sg.to_dict() for sg in suggest_phi(
        report, train.optimizer, history=history, model=train.model, dataset=train.dataset,
        budget_steps=total_steps)]
    answer = _finite_or_none({
        "phi": float(phi), "phases": int(phases), "source": source,
        "budget_steps": int(total_steps), "optimizer": train.optimizer,
        "expected_gap": expected, "features": features, "feature_cost_s": cost,
        "neighbours": neighbours, "suggestions": suggestions,
        "model_provenance": dict(phi_model.provenance) if phi_model is not None else {},
        "history_cases": len(history_cases), "warnings": warnings,
        "seconds": time.perf_counter() - t0,
    })
    return answer, report


def study_recommendation(spec: StudySpec
                         ) -> tuple[dict[str, Any] | None, CurvatureReport | None]:
    """The φ model's recommendation for a study (:func:`recommend_with_report`) and the
    curvature report it measured: measured once, on a Ray task with a trial's resources, when
    the study asks for curvature (the same report then gives the study's curvature
    suggestions); else from the budget features alone (no measurement, no report). (None,
    None), logged, when it fails: a recommendation never stops a study.
    """
    try:
        if not spec.curvature:
            return recommend_with_report(spec.train, spec.total_steps, history=spec.history,
                                         measure=False)
        import ray

        task = ray.remote(recommend_with_report).options(num_cpus=spec.resources.cpu,
                                                         num_gpus=spec.resources.gpu)
        return ray.get(task.remote(spec.train, spec.total_steps, history=spec.history))
    except Exception as exc:  # noqa: BLE001 - the study must run without it
        logger.warning("study %s: no phi recommendation (%s)", spec.study_id, exc)
        return None, None


def with_recommendation(spec: StudySpec, recommendation: dict[str, Any] | None,
                        suggestions: Sequence[dict[str, Any]]
                        ) -> tuple[StudySpec, list[dict[str, Any]]]:
    """The recommended (φ, phases) as the search's first point, and its suggestion (with the
    features it was computed from, so the finished study can feed the model as history)
    first among the suggestions whose gap the study measures."""
    import dataclasses

    if recommendation is None:
        return spec, list(suggestions)
    first = {"phi": recommendation["phi"], "phases": recommendation["phases"]}
    model = dict(recommendation["suggestions"][0])
    model["evidence"] = {**model.get("evidence", {}), "source": recommendation["source"],
                         "features": recommendation["features"],
                         "model_provenance": recommendation["model_provenance"]}
    spec = dataclasses.replace(spec, extra_points=(first, *spec.extra_points))
    return spec, [model, *suggestions]


def measure_curvature_on_ray(train: TrainConfig, resources: Resources,
                             curv: CurvatureSpec = CurvatureSpec()) -> CurvatureReport:
    """:func:`measure_curvature` as a Ray task with a trial's resources."""
    import ray

    task = ray.remote(measure_curvature).options(num_cpus=resources.cpu,
                                                 num_gpus=resources.gpu)
    return ray.get(task.remote(train, curv))


def suggestions_for(spec: StudySpec, report: CurvatureReport | None,
                    history: Sequence[HistoryPoint] = ()) -> list[dict[str, Any]]:
    """φ suggestions for a study, as dicts (source, φ, κ definition, rationale, evidence)."""
    return [s.to_dict() for s in suggest_phi(
        report, spec.train.optimizer, history=history, model=spec.train.model,
        dataset=spec.train.dataset, budget_steps=spec.total_steps)]


def suggestion_gaps(suggestions: Sequence[dict[str, Any]], budget_steps: int,
                    trials: Sequence[dict[str, Any]], best_value: float, mode: str,
                    phi_range: tuple[float, float]) -> list[dict[str, Any]]:
    """How far each suggestion was from the tuned best at one budget.

    Each suggestion was evaluated as an Optuna starting point (φ clipped to the search range);
    ``trials`` are ``{"phi", "step", "value"}`` of the budget's search trials. A suggestion's
    trial that ASHA stopped early has no comparable final metric: that is said, not hidden.
    """
    out = []
    for s in suggestions:
        phi = min(max(float(s["phi"]), phi_range[0]), phi_range[1])
        match = next((t for t in trials if math.isclose(t["phi"], phi, rel_tol=1e-6)), None)
        row: dict[str, Any] = {"budget_steps": budget_steps, "source": s["source"],
                               "phi": s["phi"], "phi_evaluated": phi, "value": None,
                               "gap": None, "status": "not evaluated"}
        if match is not None:
            if match["step"] >= budget_steps and match["value"] is not None:
                sign = 1 if mode == "max" else -1
                row.update(value=match["value"], status="evaluated",
                           gap=sign * (best_value - match["value"]))
            else:
                row["status"] = f"stopped early by ASHA at step {match['step']}"
        out.append(row)
    return out
