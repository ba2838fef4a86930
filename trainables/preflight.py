"""What a spec will cost, known before any data is loaded or any weight is allocated.

Why: the API must refuse a model of 10^10 parameters with a 422 instead of letting a trial
allocate 40 GB (issue: "no model-size or memory cap"), and it must not load CIFAR or build the
model for real to find out. Models are built on PyTorch's ``meta`` device (shapes only, no
storage), and the built-in datasets' shapes and sizes are known from their format.

The same numbers bound a running trial: :func:`check_trial_memory` refuses a trial whose
weights, gradients and optimizer state alone exceed its memory budget before they are
allocated, and :func:`memory_limit` makes the process's own allocations fail (on CPU) once the
trial goes past the budget, so one greedy trial fails alone with a clear error.
"""

from __future__ import annotations

import contextlib
import logging
import resource
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainables.errors import TrainablesError

logger = logging.getLogger(__name__)

__all__ = [
    "DatasetShape",
    "MemoryBudgetError",
    "check_dataset_files",
    "check_trial_memory",
    "count_parameters",
    "dataset_shape",
    "memory_limit",
]

#: Fallback vocabulary of a user text file (its real one is only known after reading it);
#: a small guess keeps the submit-time check from refusing a model that would fit.
TEXT_VOCAB_GUESS = 256


class MemoryBudgetError(TrainablesError, MemoryError):
    """A trial needs (or took) more memory than its budget (``PHITUNE_TRIAL_MEMORY_MB``)."""

    def __reduce__(self) -> tuple:
        return (type(self), self.args)


@dataclass(frozen=True)
class DatasetShape:
    """``info`` as :meth:`DataBundle.info` would give it, and the training-set size if known."""

    info: dict[str, Any]
    num_train: int | None


def _split_train(n: int, kwargs: Mapping[str, Any]) -> int:
    vf = kwargs.get("val_fraction", 0.2)
    if not isinstance(vf, int | float) or not 0 < vf < 1:
        return n  # the loader refuses it with its own message
    return n - max(1, int(round(n * vf)))


def _capped(n: int, kwargs: Mapping[str, Any]) -> int:
    subset = kwargs.get("subset")
    if isinstance(subset, int) and not isinstance(subset, bool) and subset >= 1:
        return min(n, subset)
    return n


def _image(num_classes: int, shape: tuple[int, ...], n: int | None) -> DatasetShape:
    return DatasetShape({"num_classes": num_classes, "input_shape": shape,
                         "task": "classification"}, n)


def dataset_shape(name: str, kwargs: Mapping[str, Any]) -> DatasetShape | None:
    """Shape facts of a built-in dataset from its name and keywords (no file is read except
    an ImageFolder root's class folders); ``None`` for plugins, which only their loader
    knows."""
    if name == "digits":
        return _image(10, (1, 8, 8), _capped(_split_train(1797, kwargs), kwargs))
    if name == "mnist5k":
        return _image(10, (1, 28, 28), _capped(_split_train(5000, kwargs), kwargs))
    if name == "fashion_mnist":
        return _image(10, (1, 28, 28), _capped(60_000, kwargs))
    if name in ("cifar10", "cifar100"):
        classes = 10 if name == "cifar10" else 100
        return _image(classes, (3, 32, 32), _capped(50_000, kwargs))
    if name == "imagefolder":
        size = kwargs.get("image_size", 32)
        root = kwargs.get("root")
        classes = 1000
        if isinstance(root, str):
            base = Path(root) / "train" if (Path(root) / "train").is_dir() else Path(root)
            with contextlib.suppress(OSError):
                classes = max(1, sum(1 for p in base.iterdir() if p.is_dir()))
        if not isinstance(size, int) or isinstance(size, bool):
            return None
        return _image(classes, (3, size, size), None)
    if name in ("shakespeare_char", "text"):
        block = kwargs.get("block_size", 128)
        if not isinstance(block, int) or isinstance(block, bool):
            return None
        vocab = 84 if name == "shakespeare_char" else TEXT_VOCAB_GUESS
        return DatasetShape({"num_classes": vocab, "input_shape": (block,), "task": "lm",
                             "block_size": block}, None)
    return None


def check_dataset_files(name: str, kwargs: Mapping[str, Any], data_dir: str | None) -> None:
    """Static checks of user-placed files that need no loading: a CIFAR root's batches must
    name no callable outside :mod:`trainables.safe_pickle`'s allow-list (scanned, never
    unpickled). Missing files are left to the loader's own message."""
    from trainables.datasets import cifar_files, cifar_folder
    from trainables.safe_pickle import check_pickle_file

    if name not in ("cifar10", "cifar100"):
        return
    root = kwargs.get("root")
    base = cifar_folder(10 if name == "cifar10" else 100,
                        root if isinstance(root, str) else None, data_dir)
    if base is not None:
        for path in cifar_files(10 if name == "cifar10" else 100, base):
            check_pickle_file(path)


def count_parameters(model: str, info: Mapping[str, Any], model_kwargs: Mapping[str, Any]) -> int:
    """Parameters of registered model ``model`` for data ``info``, built on the ``meta``
    device: shapes only, so a 10^10-parameter request costs nothing to measure."""
    from trainables.registry import build_model

    with torch.device("meta"):
        net = build_model(model, info, **dict(model_kwargs))
    return sum(p.numel() for p in net.parameters())


def training_bytes(num_params: int, optimizer: str) -> int:
    """Bytes of fp32 weights + gradients + optimizer state (SGD momentum 1, AdamW 2 slots;
    schedule-free SGD keeps z, schedule-free AdamW z and v); activations and data come on top,
    so this is a lower bound."""
    slots = 2 if optimizer in ("adamw", "adamw_schedulefree") else 1
    return 4 * num_params * (2 + slots)


def check_trial_memory(num_params: int, optimizer: str, limit_mb: float | None) -> None:
    """Refuse a trial whose parameters alone do not fit its budget, before allocating them."""
    if not limit_mb:
        return
    need = training_bytes(num_params, optimizer)
    if need > limit_mb * 2**20:
        raise MemoryBudgetError(
            f"the model has {num_params:,} parameters: weights, gradients and {optimizer} state "
            f"need {need / 2**20:.0f} MB, over the trial memory budget of {limit_mb:.0f} MB "
            "(PHITUNE_TRIAL_MEMORY_MB); use a smaller model"
        )


def _vm_data_bytes() -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


@contextlib.contextmanager
def memory_limit(limit_mb: float | None, *, device: torch.device) -> Iterator[None]:
    """Cap this process's further data allocations at ``limit_mb`` while a trial runs.

    Ray's ``memory`` resource only reserves memory for scheduling; nothing stops a trial from
    taking more. On CPU, ``RLIMIT_DATA`` (soft, restored afterwards: Ray reuses the worker)
    set to what the process holds now plus the budget makes an allocation past it fail, and
    that failure becomes a :class:`MemoryBudgetError` naming the budget. On CUDA the limit is
    not applied (the driver maps large host regions); the up-front parameter check and the
    Ray reservation remain.
    """
    current = _vm_data_bytes()
    if not limit_mb or device.type != "cpu" or current is None:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    cap = current + int(limit_mb * 2**20)
    if hard != resource.RLIM_INFINITY:
        cap = min(cap, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (cap, hard))
    try:
        yield
    except (MemoryError, RuntimeError) as exc:
        if isinstance(exc, TrainablesError) or not (
            isinstance(exc, MemoryError) or "alloc" in str(exc).lower()
        ):
            raise
        raise MemoryBudgetError(
            f"the trial ran out of its memory budget of {limit_mb:.0f} MB "
            f"(PHITUNE_TRIAL_MEMORY_MB): {str(exc).splitlines()[0][:200]}"
        ) from None
    finally:
        resource.setrlimit(resource.RLIMIT_DATA, (soft, hard))
