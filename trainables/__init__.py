"""Models, datasets and the training loop of a phitune trial.

Public API::

    list_models() / list_datasets()                       # name -> description
    get_dataset(name, *, data_dir=None, **kwargs) -> DataBundle
    build_model(name, bundle_info, **kwargs) -> nn.Module
    run_training(config, report, *, resume_state=None) -> dict[str, float]
    steps_per_epoch(bundle, batch_size) -> int
    trainables.tune_trainable.uba_trainable(config)       # Ray Tune function trainable

Importing this package does not import Ray; ``trainables.tune_trainable`` does, lazily.
"""

from trainables.datasets import DataBundle
from trainables.errors import (
    ConfigError,
    DatasetNotFoundError,
    DivergedError,
    TrainablesError,
    UnknownNameError,
)
from trainables.loop import TrainConfig, run_training, steps_per_epoch
from trainables.registry import (
    build_model,
    get_dataset,
    list_datasets,
    list_models,
    register_dataset,
    register_model,
)

__all__ = [
    "ConfigError",
    "DataBundle",
    "DatasetNotFoundError",
    "DivergedError",
    "TrainConfig",
    "TrainablesError",
    "UnknownNameError",
    "build_model",
    "get_dataset",
    "list_datasets",
    "list_models",
    "register_dataset",
    "register_model",
    "run_training",
    "steps_per_epoch",
]
