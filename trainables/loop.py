"""The training loop every phitune trial runs: exactly ``total_steps`` optimizer steps.

Why these choices:

* **Fixed iteration budget.** UBA's curve (paper Eq. 5) is a function of the step t and the
  budget T, so a trial is defined by its number of optimizer steps, not epochs; the scheduler
  is stepped once per optimizer step. :func:`steps_per_epoch` converts epochs to steps.
* **No DataLoader.** Data tensors live on the trial's device (:mod:`trainables.datasets`);
  each epoch is a permutation drawn from one seeded ``torch.Generator`` on that device, so
  several small trials can share a GPU without worker processes.
* **Exact resume.** A checkpoint holds model, optimizer, scheduler, the global and data RNG
  states, the current permutation and position in it, and the step, so a restored trial
  continues with the identical batches and schedule position (tested bit-for-bit on CPU).
* **Few host syncs, little per-step work.** Per-step losses stay on the device and are read
  together every ``_LOSS_CHECK_EVERY`` steps, which is also when NaN/inf divergence is
  detected (the exact diverging step is still known). Un-augmented uint8 data is
  normalised once on the device when the float copy is small (``_PRENORMALIZE_MAX_BYTES``),
  as a hand-written loop would, instead of per batch.
* **Gradient norms recorded.** Every update's gradient norm (ℓ2 for SGD, ℓ1 for Adam-type;
  :mod:`trainables.grad_norms`) is queued on the device and read with the losses; the final
  report carries the whole sequence, which refinement (Defazio et al. 2023) turns into a
  schedule for the same budget.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from trainables.config import SCHEDULE_FREE, TrainConfig
from trainables.datasets import DataBundle, steps_per_epoch
from trainables.errors import ConfigError, DivergedError
from trainables.grad_norms import GRAD_NORMS, GradNormRecorder, norm_type
from trainables.preflight import check_trial_memory, count_parameters
from trainables.registry import BUILTIN_DATASETS, build_model, get_dataset

logger = logging.getLogger(__name__)

#: Host reads of the per-step loss buffer (and NaN checks) happen at most this many steps apart.
_LOSS_CHECK_EVERY = 16
#: Normalise un-augmented data once on the device when its float copy is at most this big.
_PRENORMALIZE_MAX_BYTES = 1 << 30
CHECKPOINT_VERSION = 1

__all__ = ["EpochSampler", "TrainConfig", "build_scheduler", "run_training", "steps_per_epoch"]

Report = Callable[[dict[str, Any], "dict[str, Any] | None"], None]


# --------------------------------------------------------------------------- config


def _resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r} asked for but CUDA is not available on this worker")
    return dev


def _build_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    """SGD (momentum, Nesterov, coupled L2) or AdamW (decoupled decay), as in the paper; or
    their schedule-free versions (the ``schedulefree`` package), which take the warmup of
    ``schedule_params.warmup_steps`` themselves because their iterate averaging weighs each
    step by its LR."""
    params = [p for p in model.parameters() if p.requires_grad]
    if cfg.optimizer in SCHEDULE_FREE:
        try:
            import schedulefree
        except ImportError as exc:
            raise ConfigError(f"optimizer {cfg.optimizer!r} needs the schedulefree package: "
                              "pip install 'phitune[server]'") from exc
        warmup = int(cfg.schedule_params.get("warmup_steps", 0))
        if cfg.optimizer == "sgd_schedulefree":
            return schedulefree.SGDScheduleFree(params, lr=cfg.lr, momentum=cfg.momentum,
                                                weight_decay=cfg.weight_decay,
                                                warmup_steps=warmup)
        return schedulefree.AdamWScheduleFree(params, lr=cfg.lr, weight_decay=cfg.weight_decay,
                                              warmup_steps=warmup)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=cfg.lr,
            momentum=cfg.momentum,
            nesterov=cfg.nesterov,
            weight_decay=cfg.weight_decay,
        )
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def build_scheduler(
    cfg: TrainConfig, optimizer: torch.optim.Optimizer
) -> torch.optim.lr_scheduler.LRScheduler:
    """``tuning.schedules.create_schedule(name, T, eta_max=lr, **params).scheduler(opt)``."""
    from tuning.schedules import create_schedule  # tuning.schedules needs only torch/numpy

    params = cfg.schedule_kwargs()
    if cfg.optimizer in SCHEDULE_FREE:  # the optimizer warms up itself (_build_optimizer)
        params.pop("warmup_steps", None)
    try:
        schedule = create_schedule(cfg.schedule, cfg.total_steps, eta_max=cfg.lr, **params)
    except (TypeError, KeyError) as exc:
        raise ConfigError(f"schedule {cfg.schedule!r} with params {params}: {exc}") from exc
    return schedule.scheduler(optimizer)


# -------------------------------------------------------------------------- sampler


class EpochSampler:
    """Batches of indices without replacement within an epoch, from a seeded generator.

    State = current permutation + position (+ the generator, saved by the loop), which is
    what a checkpoint needs to continue with the identical batches.
    """

    def __init__(self, n: int, batch_size: int, generator: torch.Generator) -> None:
        self.n = n
        self.batch_size = batch_size
        self.generator = generator
        self.perm: torch.Tensor | None = None
        self.pos = 0
        self.epoch = 0

    def next(self) -> torch.Tensor:
        if self.perm is None or self.pos + self.batch_size > self.n:
            self.perm = torch.randperm(
                self.n, generator=self.generator, device=self.generator.device
            )
            self.pos = 0
            self.epoch += 1
        idx = self.perm[self.pos : self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx

    def state_dict(self) -> dict[str, Any]:
        return {
            "perm": None if self.perm is None else self.perm.cpu(),
            "pos": self.pos,
            "epoch": self.epoch,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        perm = state["perm"]
        self.perm = None if perm is None else perm.to(self.generator.device)
        self.pos = int(state["pos"])
        self.epoch = int(state["epoch"])
        self.generator.set_state(state["generator"])


# ------------------------------------------------------------------------ utilities


def _snapshot(obj: Any) -> Any:
    """Deep copy with every tensor detached and moved to CPU (the run keeps mutating its own)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, Mapping):
        return {k: _snapshot(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(_snapshot(v) for v in obj)
    return obj


def _loss_fn(task: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    if task == "lm":
        return lambda out, y: F.cross_entropy(out.reshape(-1, out.shape[-1]), y.reshape(-1))
    return F.cross_entropy


@dataclass
class _Prepared:
    cfg: TrainConfig
    bundle: DataBundle
    device: torch.device
    model: nn.Module  # the module whose state is saved
    forward: Callable[[torch.Tensor], torch.Tensor]  # possibly compiled
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    sampler: EpochSampler
    generator: torch.Generator


def _prepare_input(x: torch.Tensor, bundle: DataBundle, channels_last: bool) -> torch.Tensor:
    if bundle.preprocess is not None:
        x = bundle.preprocess(x)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _autocast(cfg: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    if cfg.amp == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def evaluate(
    forward: Callable[[torch.Tensor], torch.Tensor],
    model: nn.Module,
    bundle: DataBundle,
    cfg: TrainConfig,
    device: torch.device,
) -> dict[str, float]:
    """Mean validation loss (per example; per token for LMs), accuracy, and perplexity (LM)."""
    was_training = model.training
    model.eval()
    bs = cfg.eval_batch_size or max(cfg.batch_size, 512)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    count = 0
    for i in range(0, bundle.num_val, bs):
        x = _prepare_input(bundle.val_x[i : i + bs], bundle, cfg.channels_last)
        y = bundle.val_y[i : i + bs]
        with _autocast(cfg, device):
            out = forward(x)
        out = out.float()
        if bundle.task == "lm":
            out = out.reshape(-1, out.shape[-1])
            y = y.reshape(-1)
        loss_sum += F.cross_entropy(out, y, reduction="sum").double()
        correct += (out.argmax(-1) == y).sum()
        count += y.numel()
    model.train(was_training)
    val_loss = loss_sum.item() / count
    metrics = {"val_loss": val_loss, "val_accuracy": correct.item() / count}
    if bundle.task == "lm":
        metrics["val_perplexity"] = math.exp(min(val_loss, 700.0))
    return metrics


_BN_RECALIBRATION_BATCHES = 50


@contextlib.contextmanager
def _evaluation_weights(p: _Prepared) -> Any:
    """Evaluate at the weights a user would deploy (checkpoints, taken after this context,
    keep the training point and optimizer state, so a resume continues exactly).

    Plain optimizers: the current weights, nothing to do. A schedule-free optimizer trains at
    one point and averages another; ``optimizer.eval()`` swaps the average in and
    ``optimizer.train()`` swaps back (the package's contract). BatchNorm statistics were
    gathered at the training point, so they are recomputed at the averaged weights over the
    first training batches (the package README's recipe), with the RNG state restored so the
    training run continues exactly as it would have without the evaluation.
    """
    if p.cfg.optimizer not in SCHEDULE_FREE:
        yield
        return
    p.optimizer.eval()  # type: ignore[attr-defined]
    try:
        norms = [m for m in p.model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if norms:
            rng = _rng_state(p.device)
            was_training = p.model.training
            momenta = [m.momentum for m in norms]
            for m in norms:
                m.reset_running_stats()
                m.momentum = None  # cumulative average over the recalibration batches
            p.model.train()
            bs = p.cfg.batch_size
            n = min(_BN_RECALIBRATION_BATCHES, p.bundle.num_train // bs)
            with torch.no_grad():
                for i in range(n):
                    x = _prepare_input(p.bundle.train_x[i * bs:(i + 1) * bs], p.bundle,
                                       p.cfg.channels_last)
                    with _autocast(p.cfg, p.device):
                        p.forward(x)
            for m, mom in zip(norms, momenta, strict=True):
                m.momentum = mom
            p.model.train(was_training)
            _set_rng_state(rng, p.device)
        yield
    finally:
        p.optimizer.train()  # type: ignore[attr-defined]


_BUNDLE_CACHE: dict[str, DataBundle] = {}


def _load_bundle(cfg: TrainConfig) -> DataBundle:
    """Load the trial's data, reusing the last built-in set this process loaded.

    Ray reuses trial actors, and a study runs many trials on the same data: re-reading
    Fashion-MNIST or Shakespeare (1-2 s each) per trial is pure overhead. Bundles are never
    modified in place, so sharing one is safe; plugins are not cached (their loader may
    change between calls in one process).
    """
    load = {"data_dir": cfg.data_dir, "data_roots": cfg.data_roots, **cfg.dataset_kwargs}
    if cfg.dataset not in BUILTIN_DATASETS:
        return get_dataset(cfg.dataset, **load)
    key = json.dumps([cfg.dataset, load], sort_keys=True, default=str)
    if key not in _BUNDLE_CACHE:
        _BUNDLE_CACHE.clear()  # keep one dataset per process
        _BUNDLE_CACHE[key] = get_dataset(cfg.dataset, **load)
    return _BUNDLE_CACHE[key]


def _prepare(cfg: TrainConfig, bundle: DataBundle | None) -> _Prepared:
    device = _resolve_device(cfg.device)
    if bundle is None:
        bundle = _load_bundle(cfg)
    steps_per_epoch(bundle, cfg.batch_size)  # validates batch_size against the data
    if cfg.metric == "val_perplexity" and bundle.task != "lm":
        raise ConfigError(f"metric 'val_perplexity' needs an lm dataset, {cfg.dataset!r} is not")
    if cfg.memory_limit_mb:  # refuse before allocating weights that cannot fit
        n_params = count_parameters(cfg.model, bundle.info(), cfg.model_kwargs)
        check_trial_memory(n_params, cfg.optimizer, cfg.memory_limit_mb)
    bundle = _prenormalize(bundle.to(device))
    torch.manual_seed(cfg.seed)  # model init (and dropout) come from the global RNG
    model = build_model(cfg.model, bundle, data_roots=cfg.data_roots,
                        **cfg.model_kwargs).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model.train()
    forward: Callable[[torch.Tensor], torch.Tensor] = model
    if cfg.compile:
        forward = torch.compile(model)  # type: ignore[assignment]
    optimizer = _build_optimizer(cfg, model)
    if cfg.optimizer in SCHEDULE_FREE:
        optimizer.train()  # type: ignore[attr-defined]  # schedule-free: train mode to step
    scheduler = build_scheduler(cfg, optimizer)
    generator = torch.Generator(device=device)
    generator.manual_seed(cfg.seed)
    sampler = EpochSampler(bundle.num_train, cfg.batch_size, generator)
    return _Prepared(cfg, bundle, device, model, forward, optimizer, scheduler, sampler, generator)


def _prenormalize(bundle: DataBundle) -> DataBundle:
    """Apply ``preprocess`` to the whole (device-resident) data once when that is cheap.

    Per-batch normalisation costs a few small kernels every step, which is measurable for
    tiny models (bench/trainer_overhead.py). Augmented data stays raw: crop padding must be
    black in pixel space, so it is normalised after augmentation, per batch.
    """
    if bundle.preprocess is None or bundle.augment is not None:
        return bundle
    n_elem = bundle.train_x.numel() + bundle.val_x.numel()
    if n_elem * 4 > _PRENORMALIZE_MAX_BYTES:
        return bundle
    return replace(
        bundle,
        train_x=bundle.preprocess(bundle.train_x),
        val_x=bundle.preprocess(bundle.val_x),
        preprocess=None,
    )


def _is_report_step(step: int, cfg: TrainConfig) -> bool:
    if step == cfg.total_steps or step % cfg.eval_interval == 0:
        return True
    return cfg.checkpoint_every > 0 and step % cfg.checkpoint_every == 0


def _rng_state(device: torch.device) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: Mapping[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


# ------------------------------------------------------------------------------ run


def run_training(
    config: TrainConfig | Mapping[str, Any],
    report: Report,
    *,
    resume_state: dict[str, Any] | None = None,
    bundle: DataBundle | None = None,
    record_grad_norms: bool = True,
) -> dict[str, Any]:
    """Train for exactly ``config["total_steps"]`` optimizer steps and report as it goes.

    Trial config keys (flat JSON): ``model``, ``model_kwargs``, ``dataset``,
    ``dataset_kwargs``, ``data_dir``, ``optimizer`` ("sgd"|"adamw"), ``lr`` (= η_max),
    ``momentum``, ``nesterov``, ``weight_decay``, ``batch_size``, ``total_steps``,
    ``schedule`` ("uba" or a baseline name), ``schedule_params``, top-level ``phi``/``phases``
    (override ``schedule_params``), ``eval_every``, ``checkpoint_every``, ``seed``,
    ``device`` ("auto"|"cpu"|"cuda"), ``amp`` ("bf16"|None), ``compile``, ``channels_last``,
    ``metric``.

    At every eval point (every ``eval_every`` steps, every ``checkpoint_every`` steps and the
    last step) it calls ``report(metrics, state)``: ``step``, ``epoch``, ``train_loss`` (mean
    since the last report), ``val_loss``, ``val_accuracy``, ``val_perplexity`` and
    ``tokens_per_s`` (LM), ``lr`` (the LR the last step used, η_t of Eq. (5) for
    t = ``step``), ``samples_per_s`` (training only, eval excluded) and ``done`` (True on the
    last report). ``state`` is a CPU snapshot to pass back as ``resume_state`` (None when
    ``checkpoint_every < 0``). Validation runs at every report so each one carries fresh
    metrics (Tune's strict metric check and ASHA need them).

    The last report also carries ``grad_norms``: the gradient norm of every update
    (:meth:`trainables.grad_norms.GradNorms.to_dict`; ℓ2 for SGD, ℓ1 for Adam-type), part of
    the checkpoint state too, so a resumed run reports the uninterrupted sequence.
    ``record_grad_norms=False`` skips them (the overhead bench's reference).

    ``bundle`` lets a caller that already loaded the data (benchmarks) skip loading it again.

    ``config`` is a :class:`trainables.config.TrainConfig` or its :meth:`~TrainConfig.to_dict`
    form (what a Ray trial receives).

    Raises :class:`DivergedError` when the training loss becomes NaN/inf, or when the mean
    training loss between two reports rises above ``divergence_factor`` times the first step's
    loss (a run that ends up worse than its initialisation is not a schedule worth ranking).
    """
    cfg = TrainConfig.from_mapping(config)
    p = _prepare(cfg, bundle)
    loss_fn = _loss_fn(p.bundle.task)
    start_step = 0
    window_loss, window_steps = 0.0, 0
    start_loss: float | None = None  # the first step's training loss (divergence reference)
    if resume_state is not None:
        if resume_state.get("version") != CHECKPOINT_VERSION:
            raise ConfigError(f"checkpoint version {resume_state.get('version')} is not supported")
        if int(resume_state["total_steps"]) != cfg.total_steps:
            raise ConfigError(
                f"checkpoint was made for total_steps={resume_state['total_steps']}, "
                f"config says {cfg.total_steps}: the schedule would not continue identically"
            )
        p.model.load_state_dict(resume_state["model"])
        p.optimizer.load_state_dict(resume_state["optimizer"])
        p.scheduler.load_state_dict(resume_state["scheduler"])
        p.sampler.load_state_dict(resume_state["sampler"])
        _set_rng_state(resume_state["rng"], p.device)
        start_step = int(resume_state["step"])
        start_loss = resume_state.get("start_loss")
        window_loss = float(resume_state.get("window_loss", 0.0))
        window_steps = int(resume_state.get("window_steps", 0))
        logger.info("resuming %s/%s at step %d", cfg.model, cfg.dataset, start_step)
    recorder: GradNormRecorder | None = None
    if record_grad_norms:
        recorder = GradNormRecorder(list(p.model.parameters()), norm_type(cfg.optimizer),
                                    cfg.total_steps, start_step=start_step)
        if resume_state is not None and resume_state.get(GRAD_NORMS) is not None:
            recorder.load_state_dict(resume_state[GRAD_NORMS])
    if resume_state is not None and start_step >= cfg.total_steps:
        # restored from the final checkpoint: nothing to do
        with _evaluation_weights(p):
            final = evaluate(p.forward, p.model, p.bundle, cfg, p.device)
        out: dict[str, Any] = {
            "step": start_step,
            **final,
            "lr": p.optimizer.param_groups[0]["lr"],
            "done": True,
        }
        norms = recorder.result() if recorder is not None else None
        if norms is not None:
            out[GRAD_NORMS] = norms.to_dict()
        return out

    buf: list[torch.Tensor] = []  # detached per-step losses, still on the device
    buf_lrs: list[float] = []
    buf_first_step = start_step + 1
    last_lr = p.optimizer.param_groups[0]["lr"]
    n_samples = 0
    train_time = 0.0
    metrics: dict[str, Any] = {}
    sync = torch.cuda.synchronize if p.device.type == "cuda" else (lambda: None)
    x_all, y_all = p.bundle.train_x, p.bundle.train_y
    augment = p.bundle.augment

    def drain(upto: int) -> None:
        """Read the buffered losses of steps buf_first_step..upto; raise on NaN/inf."""
        nonlocal window_loss, window_steps, buf_first_step, start_loss
        k = upto - buf_first_step + 1
        if k <= 0:
            return
        values = torch.stack(buf).float().tolist()  # one host sync per drain
        for i, v in enumerate(values):
            if not math.isfinite(v):
                raise DivergedError(buf_first_step + i, v, buf_lrs[i])
        if start_loss is None:
            start_loss = values[0]
        window_loss += math.fsum(values)
        window_steps += k
        buf_first_step = upto + 1
        buf.clear()
        buf_lrs.clear()
        if recorder is not None:
            recorder.flush()

    t0 = time.perf_counter()
    for step in range(start_step + 1, cfg.total_steps + 1):
        idx = p.sampler.next()
        x, y = x_all[idx], y_all[idx]
        if augment is not None:
            x = augment(x, p.generator)
        x = _prepare_input(x, p.bundle, cfg.channels_last)
        last_lr = p.optimizer.param_groups[0]["lr"]
        with _autocast(cfg, p.device):
            out = p.forward(x)
            loss = loss_fn(out, y)
        p.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if recorder is not None:
            recorder.record()
        p.optimizer.step()
        p.scheduler.step()
        buf.append(loss.detach())
        buf_lrs.append(last_lr)
        n_samples += cfg.batch_size

        report_now = _is_report_step(step, cfg)
        if report_now or len(buf) == _LOSS_CHECK_EVERY:
            drain(step)
        if not report_now:
            continue
        sync()
        train_time += time.perf_counter() - t0
        with _evaluation_weights(p):
            val_metrics = evaluate(p.forward, p.model, p.bundle, cfg, p.device)
        metrics = {
            "step": step,
            "epoch": step * cfg.batch_size / p.bundle.num_train,
            "train_loss": window_loss / max(window_steps, 1),
            **val_metrics,
            "lr": last_lr,
            "samples_per_s": n_samples / train_time if train_time > 0 else float("nan"),
            "done": step == cfg.total_steps,
        }
        if p.bundle.task == "lm":
            metrics["tokens_per_s"] = metrics["samples_per_s"] * p.bundle.input_shape[0]
        if step == cfg.total_steps and recorder is not None:
            norms = recorder.result()
            if norms is not None:
                metrics[GRAD_NORMS] = norms.to_dict()
        if not math.isfinite(metrics["val_loss"]):
            raise DivergedError(step, metrics["val_loss"], last_lr)
        if (cfg.divergence_factor and start_loss is not None
                and metrics["train_loss"] > cfg.divergence_factor * start_loss):
            raise DivergedError(step, metrics["train_loss"], last_lr,
                                reason=f"above {cfg.divergence_factor:g} x its start "
                                       f"{start_loss:.4g}")
        window_loss, window_steps = 0.0, 0
        state = None
        if cfg.checkpoint_every >= 0:
            state = _snapshot(
                {
                    "version": CHECKPOINT_VERSION,
                    "step": step,
                    "total_steps": cfg.total_steps,
                    "model": p.model.state_dict(),
                    "optimizer": p.optimizer.state_dict(),
                    "scheduler": p.scheduler.state_dict(),
                    "sampler": p.sampler.state_dict(),
                    "rng": _rng_state(p.device),
                    "window_loss": 0.0,
                    "window_steps": 0,
                    "start_loss": start_loss,
                    **({GRAD_NORMS: recorder.state_dict()} if recorder is not None else {}),
                }
            )
        logger.debug("step %d: %s", step, metrics)
        report(metrics, state)
        n_samples, train_time = 0, 0.0
        t0 = time.perf_counter()
    return metrics
