"""Model size and trial memory are known (and bounded) before anything big is allocated."""

from __future__ import annotations

import pickle
import resource
import time

import pytest
import torch

from trainables.loop import run_training
from trainables.preflight import (
    MemoryBudgetError,
    check_trial_memory,
    count_parameters,
    dataset_shape,
    memory_limit,
)
from trainables.registry import build_model, get_dataset


def test_parameter_count_matches_a_real_build():
    info = get_dataset("digits").info()
    shape = dataset_shape("digits", {})
    assert shape is not None and shape.info["input_shape"] == info["input_shape"]
    real = sum(p.numel() for p in build_model("mlp", info, hidden_sizes=[32]).parameters())
    assert count_parameters("mlp", shape.info, {"hidden_sizes": [32]}) == real


def test_a_huge_model_is_counted_without_allocating_it():
    shape = dataset_shape("cifar10", {})
    start = time.perf_counter()
    n = count_parameters("mlp", shape.info, {"hidden_sizes": [100_000] * 3})
    assert n > 2 * 10**10 and time.perf_counter() - start < 5
    assert count_parameters("resnet18", shape.info, {}) == pytest.approx(11.17e6, rel=0.01)


def test_dataset_shape_knows_train_sizes():
    assert dataset_shape("digits", {}).num_train == 1797 - 359
    assert dataset_shape("mnist5k", {"subset": 100}).num_train == 100
    assert dataset_shape("cifar100", {}).info["num_classes"] == 100
    assert dataset_shape("shakespeare_char", {"block_size": 32}).info["input_shape"] == (32,)
    assert dataset_shape("some_plugin", {}) is None


def test_check_trial_memory_names_the_budget():
    check_trial_memory(10**6, "sgd", 100)  # 12 MB fits
    with pytest.raises(MemoryBudgetError, match="over the trial memory budget of 100 MB"):
        check_trial_memory(10**8, "adamw", 100)
    check_trial_memory(10**12, "sgd", None)  # no budget, no check


def test_memory_limit_fails_an_allocation_past_the_budget_and_is_restored():
    before = resource.getrlimit(resource.RLIMIT_DATA)
    with pytest.raises(MemoryBudgetError, match="memory budget of 64 MB"):
        with memory_limit(64, device=torch.device("cpu")):
            torch.ones(256 * 2**20, dtype=torch.uint8)  # 256 MB
    assert resource.getrlimit(resource.RLIMIT_DATA) == before
    torch.ones(256 * 2**20, dtype=torch.uint8)  # fine again outside


def test_a_trial_over_its_budget_fails_before_allocating():
    config = {"model": "mlp", "dataset": "digits", "lr": 0.1, "total_steps": 2,
              "batch_size": 8, "device": "cpu", "memory_limit_mb": 50,
              "model_kwargs": {"hidden_sizes": [4000, 4000]}}
    with pytest.raises(MemoryBudgetError, match="16,"):
        run_training(config, lambda m, s: None)
    config["model_kwargs"] = {"hidden_sizes": [16]}
    assert run_training(config, lambda m, s: None)["step"] == 2


def test_memory_budget_error_survives_pickling():
    err = pickle.loads(pickle.dumps(MemoryBudgetError("over the budget")))
    assert isinstance(err, MemoryBudgetError) and str(err) == "over the budget"
