"""Submit-time checks of what a spec would make the cluster do, beyond its schema.

Why here and not in the schema: these depend on the server's configuration (data roots,
model-size and memory caps) and on the registry (a dataset's shape), which the client-side
schema cannot know. Each failure is a 422 naming the field. Nothing is loaded or allocated:
paths are resolved, CIFAR batches are scanned (never unpickled), and the model is built on
PyTorch's ``meta`` device. The trainables repeat the path and memory checks in the trial
(defence in depth), so a spec that reaches a driver another way is held to the same rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from service.config import Settings
from service.errors import InvalidSpecError
from service.schemas import StudyCreate


def check_spec_inputs(
    settings: Settings,
    *,
    model: str,
    model_kwargs: Mapping[str, Any],
    dataset: str,
    dataset_kwargs: Mapping[str, Any],
    optimizer: str,
    batch_size: int | None = None,
    batch_field: str = "batch_size",
    metric: str | None = None,
) -> None:
    """Paths inside ``PHITUNE_DATA_ROOTS``, data files that run no code, a model within
    ``PHITUNE_MAX_MODEL_PARAMS`` and the trial memory budget, ``batch_size`` within the
    training set when the registry knows its size."""
    from trainables.data_access import DataAccessError, check_data_paths
    from trainables.errors import TrainablesError
    from trainables.preflight import (
        MemoryBudgetError,
        check_dataset_files,
        check_trial_memory,
        count_parameters,
        dataset_shape,
    )

    roots = settings.data_root_paths
    try:
        dataset_kwargs = check_data_paths(dataset_kwargs, roots, "dataset_kwargs")
        model_kwargs = check_data_paths(model_kwargs, roots, "model_kwargs")
    except DataAccessError as exc:
        raise InvalidSpecError(str(exc), field=exc.field) from None
    try:
        check_dataset_files(dataset, dataset_kwargs, str(settings.datasets_path))
    except (TrainablesError, OSError) as exc:
        raise InvalidSpecError(f"dataset_kwargs: {exc}", field="dataset_kwargs") from None

    shape = dataset_shape(dataset, dataset_kwargs)
    if shape is None:  # a plugin: only its loader knows; the trial checks again
        return
    if metric == "val_perplexity" and shape.info.get("task") != "lm":
        raise InvalidSpecError(
            f"metric 'val_perplexity' needs a language-model dataset (shakespeare_char, "
            f"text); {dataset!r} is a {shape.info.get('task')} dataset", field="metric")
    if batch_size is not None and shape.num_train is not None and batch_size > shape.num_train:
        raise InvalidSpecError(
            f"{batch_field}={batch_size} exceeds the {shape.num_train} training examples of "
            f"{dataset!r} with these dataset_kwargs", field=batch_field)
    try:
        n_params = count_parameters(model, shape.info, model_kwargs)
    except (TrainablesError, TypeError, ValueError, RuntimeError) as exc:
        raise InvalidSpecError(f"model {model!r}: {exc}", field="model_kwargs") from None
    if n_params > settings.max_model_params:
        raise InvalidSpecError(
            f"model {model!r} with these model_kwargs has {n_params:,} parameters; the limit "
            f"is {settings.max_model_params:,} (PHITUNE_MAX_MODEL_PARAMS)", field="model_kwargs")
    try:
        check_trial_memory(n_params, optimizer, settings.trial_memory_mb or None)
    except MemoryBudgetError as exc:
        raise InvalidSpecError(str(exc), field="model_kwargs") from None


def check_epoch_budget(spec: StudyCreate) -> None:
    """A budget in ``epochs`` held to the ladder and AutoLRS bounds a budget in steps meets in
    the schema (a 422 naming ``ladder.*`` or ``autolrs.*``), when the training-set size is known without loading the data:
    a built-in dataset's size and its ``subset``/``val_fraction`` caps
    (:func:`trainables.preflight.dataset_shape`). Only a plugin's dataset is left to the
    driver, which converts with the loaded data (the same :func:`steps_for_epochs`)."""
    from service.launch.study_driver import steps_for_epochs
    from trainables.preflight import dataset_shape

    epochs = spec.budget.epochs
    if epochs is None:
        return
    shape = dataset_shape(spec.dataset, spec.dataset_kwargs)
    if shape is None or shape.num_train is None or spec.batch_size > shape.num_train:
        return  # unknown size; a batch over the training set is refused by its own check
    # as trainables.datasets.steps_per_epoch: the incomplete last batch is dropped
    steps = steps_for_epochs(epochs, shape.num_train // spec.batch_size)
    problem = spec.ladder_problem(steps) or spec.autolrs_problem(steps)
    if problem is not None:
        field, message = problem
        raise InvalidSpecError(
            f"{message} (budget.epochs={epochs:g} is {steps} steps: {shape.num_train} "
            f"training examples of {spec.dataset!r} at batch_size={spec.batch_size})",
            field=field)
