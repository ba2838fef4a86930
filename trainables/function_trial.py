"""The trial object a user's own training function receives in library mode.

Library mode (:func:`tuning.library.tune_schedule`) runs a phitune study with the user's
function as the Ray Tune trainable: phitune plans the horizon ladder, the user's code trains.
Inside each Ray Tune trial the function gets a :class:`Trial` instead of a config dict: the
run's horizon T (``total_steps``), seed, peak lr η_max, the schedule (``scheduler(optimizer)``,
``lr_curve``), ``report`` and the checkpoint a restarted trial resumes from.

The study decides a run finished when its last report has ``step >= total_steps`` and
carries the study's metric (:func:`tuning.executor.run_candidates`). :meth:`Trial.report`
enforces that at the source: every report has an integer step, the final one must carry the
metric (finite), and :meth:`Trial.finish` (called by the adapter after the function returns)
fails the trial with the reason when the function returned without that final report. A
silent gap would otherwise be recorded as a run stopped early.

Like :mod:`trainables.tune_trainable` (whose checkpoint format it shares) this module talks to
Ray Tune, imported inside the methods so the object itself stays importable without a session.
"""

from __future__ import annotations

import math
import numbers
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from trainables.config import TrainConfig
from trainables.errors import TrainablesError
from trainables.tune_trainable import STATE_FILE, TRIAL_KEY, load_state, save_state

__all__ = ["USER_FUNCTION", "Trial", "TrialReportError", "run_user_function"]

#: ``TrainConfig.model`` and ``.dataset`` of a library-mode study: the user's function brings
#: its own model and data. No registry holds this name, so a built-in trainable (or a server
#: study) given it fails at the registry lookup with the list of valid names.
USER_FUNCTION = "user"
_UNREAD = object()


class TrialReportError(TrainablesError, ValueError):
    """A user function reported something the study cannot use (no step, no final metric, a
    non-finite metric) or returned before its final report; the message says what to change.
    A ``ValueError`` so it survives Ray's pickling like the other trainables errors."""

    def __str__(self) -> str:
        return str(self.args[0])


class Trial:
    """One training run of a library-mode study, as the user's function sees it.

    ``lr`` is η_max (the schedule's peak), ``total_steps`` the horizon T this run must train
    for (the ladder trains shorter horizons too, each a complete schedule from scratch),
    ``seed`` the run's seed (seed your model init and data order with it: the study's
    finalists and comparisons are seed-paired), ``metric`` the key the final report must carry.

    >>> # inside train_fn(trial):
    >>> # opt = torch.optim.SGD(model.parameters(), lr=trial.lr)
    >>> # sched = trial.scheduler(opt)            # call sched.step() after every opt.step()
    >>> # trial.report({"step": t, "val_loss": v}, checkpoint={"model": model.state_dict()})
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        raw = dict(config.get(TRIAL_KEY, config))
        self.train_config = TrainConfig.from_mapping(raw)
        #: Bookkeeping of the study (candidate index, stage, compare arm), for the user's logs.
        self.tags = {k: raw[k] for k in ("candidate", "run_seed", "stage", "arm") if k in raw}
        self._last_step = 0
        self._final_reported = False
        self._schedule: Any = None
        self._state: Any = _UNREAD

    # ------------------------------------------------------------------ the run

    @property
    def total_steps(self) -> int:
        """Optimizer updates of this run (its horizon T; the schedule ends here)."""
        return self.train_config.total_steps

    @property
    def seed(self) -> int:
        return self.train_config.seed

    @property
    def lr(self) -> float:
        """η_max: the peak learning rate the schedule scales to (searched by the study)."""
        return float(self.train_config.lr)

    @property
    def metric(self) -> str:
        """The metric the final report must carry (the study optimises it)."""
        return self.train_config.metric

    @property
    def optimizer(self) -> str:
        """The optimizer the study was told the function uses (``sgd`` or ``adamw``)."""
        return self.train_config.optimizer

    @property
    def config(self) -> dict[str, Any]:
        """The schedule: ``{"schedule": name, **its parameters}`` (UBA: φ, phases, variant,
        η_min, warmup_steps), with ``lr`` and ``total_steps``: what :meth:`scheduler` follows."""
        cfg = self.train_config
        return {"schedule": cfg.schedule, **cfg.schedule_kwargs(), "lr": self.lr,
                "total_steps": self.total_steps}

    @property
    def schedule(self) -> Any:
        """The :class:`tuning.schedules.Schedule` of this run (absolute LRs, closed form)."""
        if self._schedule is None:
            from tuning.schedules import create_schedule  # torch/numpy only

            cfg = self.train_config
            self._schedule = create_schedule(cfg.schedule, cfg.total_steps, eta_max=cfg.lr,
                                             **cfg.schedule_kwargs())
        return self._schedule

    @property
    def lr_curve(self) -> list[float]:
        """The absolute lr of every update, ``[lr(update 1), ..., lr(update T)]``."""
        return [float(v) for v in self.schedule.values()]

    def scheduler(self, optimizer: Any, *, relative: bool = False) -> Any:
        """A torch ``LRScheduler`` driving ``optimizer`` along this run's schedule: call its
        ``step()`` once after every ``optimizer.step()``; it holds the last value past T.

        ``relative=False`` sets every param group to the schedule's absolute lr;
        ``relative=True`` scales each group's own lr by ``schedule / lr`` (layer-wise lrs keep
        their ratios; a group created with ``lr=trial.lr`` follows the schedule exactly). Its
        ``state_dict()`` can go into a checkpoint and loads with ``weights_only=True``.
        """
        return self.schedule.scheduler(optimizer, relative=relative)

    @property
    def trial_id(self) -> str | None:
        """Ray Tune's id of this trial (None outside a Tune session)."""
        from ray import tune

        try:
            return tune.get_context().get_trial_id()
        except Exception:  # noqa: BLE001 - no session
            return None

    # ----------------------------------------------------------------- reports

    def report(self, metrics: Mapping[str, Any], *, step: int | None = None,
               checkpoint: Any = None) -> None:
        """Report ``metrics`` at ``step`` (given here or as ``metrics["step"]``) to Ray Tune.

        ``step`` is the number of updates done (1..``total_steps``). The report at
        ``step == total_steps`` is the run's result and must carry :attr:`metric`; a
        non-finite metric fails the trial as diverged. ``checkpoint``: a dict of tensors and
        primitives (saved as ``state.pt``, read back by :attr:`checkpoint`), a directory path,
        or a ``ray.tune.Checkpoint``: a trial Ray restarts resumes from the latest one.
        """
        from ray import tune

        out = dict(metrics)
        step = out.pop("step", None) if step is None else step
        if isinstance(step, bool) or not isinstance(step, numbers.Integral):
            raise TrialReportError(
                f"report() needs the step (updates done, an int in 1..{self.total_steps}) as "
                f"step= or metrics['step'], got {step!r}")
        step = int(step)
        if not 1 <= step <= self.total_steps:
            raise TrialReportError(f"report(step={step}) is outside 1..total_steps="
                                   f"{self.total_steps}")
        if step < self._last_step:
            raise TrialReportError(f"report(step={step}) after step {self._last_step}: "
                                   "steps must not decrease")
        value = out.get(self.metric)
        if value is not None and not (isinstance(value, numbers.Real)
                                      and math.isfinite(float(value))):
            raise TrialReportError(f"metric {self.metric}={value!r} at step {step} is not a "
                                   "finite number: the run diverged (lower lr or check the data)")
        if step == self.total_steps and value is None:
            raise TrialReportError(
                f"the final report (step={step} == total_steps) must carry the study's metric "
                f"{self.metric!r}; got keys {sorted(out)}")
        self._last_step = step
        self._final_reported = step == self.total_steps
        out["step"] = step
        if checkpoint is None:
            tune.report(out)
        elif isinstance(checkpoint, Mapping):
            with tempfile.TemporaryDirectory(prefix="phitune-ckpt-") as tmp:
                save_state(dict(checkpoint), tmp)
                # Tune copies the directory into the trial's storage before report() returns
                tune.report(out, checkpoint=tune.Checkpoint.from_directory(tmp))
        elif isinstance(checkpoint, str | Path):
            tune.report(out, checkpoint=tune.Checkpoint.from_directory(str(checkpoint)))
        else:
            tune.report(out, checkpoint=checkpoint)

    # -------------------------------------------------------------- checkpoints

    def get_checkpoint(self) -> Any:
        """The ``ray.tune.Checkpoint`` this trial was restored from (None: a fresh start)."""
        from ray import tune

        return tune.get_checkpoint()

    @property
    def checkpoint(self) -> dict[str, Any] | None:
        """The dict last passed as ``report(..., checkpoint={...})`` when Ray restored this
        trial from it (None: a fresh start, or a checkpoint that was a directory of its own).

        Loaded once, with ``weights_only=True``: a checkpoint is data, never code.
        """
        if self._state is _UNREAD:
            self._state = None
            ckpt = self.get_checkpoint()
            if ckpt is not None:
                with ckpt.as_directory() as directory:
                    if (Path(directory) / STATE_FILE).is_file():
                        self._state = load_state(directory)
            if self._state is not None and isinstance(self._state.get("step"), numbers.Integral):
                self._last_step = int(self._state["step"])  # reports go on from here
        return self._state

    def finish(self) -> None:
        """Fail the trial, saying why, when the function returned before its final report."""
        if not self._final_reported:
            raise TrialReportError(
                f"the training function returned after reporting up to step {self._last_step} "
                f"of total_steps={self.total_steps} without the final report: call "
                f"trial.report({{'step': {self.total_steps}, {self.metric!r}: value}}) after "
                "the last update")


def run_user_function(train_fn: Callable[..., Any], config: Mapping[str, Any],
                      **kwargs: Any) -> None:
    """Run ``train_fn(Trial(config), **kwargs)`` and check it made its final report."""
    trial = Trial(config)
    train_fn(trial, **kwargs)
    trial.finish()
