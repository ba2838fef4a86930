"""Specs cannot make a trial read outside its data roots, nor run code from a data file."""

from __future__ import annotations

import os
import pickle
import pickletools
from pathlib import Path

import numpy as np
import pytest

from trainables.data_access import DataAccessError, check_data_paths, resolve_in_roots
from trainables.errors import ConfigError
from trainables.loop import run_training
from trainables.registry import get_dataset
from trainables.safe_pickle import UnsafePickleError, load_cifar_batch

CIFAR10_FILES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


class _RunsCode:
    """Pickles to ``os.system(touch marker)``: what a crafted CIFAR batch would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _batch(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
            b"labels": (np.arange(n) % 10).tolist(), b"batch_label": b"x",
            b"filenames": [b"f%d" % i for i in range(n)]}


def write_cifar10(root: Path, payload: object | None = None) -> Path:
    """A CIFAR-10 python root; ``payload`` replaces ``data_batch_3`` when given."""
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for i, name in enumerate(CIFAR10_FILES):
        obj = payload if (payload is not None and name == "data_batch_3") else _batch(4, i)
        (d / name).write_bytes(pickle.dumps(obj, protocol=2))
    return d


def test_crafted_cifar_pickle_runs_no_code(tmp_path):
    marker = tmp_path / "pwned"
    write_cifar10(tmp_path / "data", {b"data": _RunsCode(marker)})
    with pytest.raises(UnsafePickleError, match=r"data_batch_3.*posix\.system|system"):
        get_dataset("cifar10", root=str(tmp_path / "data"), data_roots=[str(tmp_path)])
    assert not marker.exists()


def test_crafted_pickle_fails_a_trial_with_a_clear_error(tmp_path):
    marker = tmp_path / "pwned"
    write_cifar10(tmp_path / "data", {b"data": _RunsCode(marker)})
    config = {"model": "mlp", "dataset": "cifar10", "lr": 0.1, "total_steps": 2,
              "batch_size": 2, "device": "cpu", "data_roots": [str(tmp_path)],
              "dataset_kwargs": {"root": str(tmp_path / "data")}}
    with pytest.raises(UnsafePickleError, match="refusing to load"):
        run_training(config, lambda m, s: None)
    assert not marker.exists()


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_real_batches_load_with_every_protocol(tmp_path, protocol):
    batch = _batch(3, 1)
    path = tmp_path / "b"
    path.write_bytes(pickle.dumps(batch, protocol=protocol))
    x, y = load_cifar_batch(path, b"labels")
    assert x.shape == (3, 3, 32, 32) and x.dtype == np.uint8
    assert np.array_equal(x.reshape(3, -1), batch[b"data"]) and y.tolist() == [0, 1, 2]


def test_object_arrays_and_odd_dtypes_are_refused(tmp_path):
    path = tmp_path / "b"
    path.write_bytes(pickle.dumps({b"data": np.array([1, None], dtype=object), b"labels": []}))
    with pytest.raises(UnsafePickleError, match="not allowed"):
        load_cifar_batch(path, b"labels")
    path.write_bytes(b"not a pickle")
    with pytest.raises(ConfigError, match="not a CIFAR python batch"):
        load_cifar_batch(path, b"labels")


def test_globals_are_refused_before_import(tmp_path):
    """An unknown module is never imported: find_class refuses on the name alone."""
    raw = pickle.dumps({b"data": _batch(1, 0)[b"data"]}, protocol=2).replace(
        b"numpy\nndarray", b"phitune_evil_module\nndarray")
    pickletools.dis(raw, out=open(os.devnull, "w"))  # still a well-formed pickle
    path = tmp_path / "b"
    path.write_bytes(raw)
    with pytest.raises(UnsafePickleError, match="phitune_evil_module"):
        load_cifar_batch(path, b"labels")


def test_text_path_outside_the_roots_is_refused(tmp_path):
    with pytest.raises(DataAccessError, match=r"dataset_kwargs\.path.*outside the allowed"):
        get_dataset("text", path="/etc/passwd", data_roots=[str(tmp_path)])
    with pytest.raises(DataAccessError, match=r"dataset_kwargs\.path"):
        get_dataset("text", path="../../etc/passwd", data_roots=[str(tmp_path)])


def test_symlink_inside_a_root_pointing_outside_is_refused(tmp_path):
    root = tmp_path / "root"
    (root / "texts").mkdir(parents=True)
    outside = tmp_path / "secret.txt"
    outside.write_text("secret " * 100)
    (root / "link.txt").symlink_to(outside)
    with pytest.raises(DataAccessError, match="outside the allowed"):
        get_dataset("text", path=str(root / "link.txt"), data_roots=[str(root)])
    # a link planted inside an allowed folder is refused by the loader itself
    (root / "texts" / "a.txt").write_text("hello world " * 100)
    (root / "texts" / "b.txt").symlink_to(outside)
    with pytest.raises(DataAccessError, match="b.txt resolves outside"):
        get_dataset("text", path=str(root / "texts"), data_roots=[str(root)], block_size=8)


def test_paths_inside_the_roots_load(tmp_path):
    (tmp_path / "t.txt").write_text("the quick brown fox jumps over the lazy dog " * 40)
    b = get_dataset("text", path="t.txt", data_roots=[str(tmp_path)], block_size=8)
    assert b.task == "lm" and b.num_train > 0


def test_path_like_values_under_any_key_are_checked(tmp_path):
    roots = [str(tmp_path)]
    with pytest.raises(DataAccessError, match=r"dataset_kwargs\.extra\.0"):
        check_data_paths({"extra": ["/etc/shadow"]}, roots, "dataset_kwargs")
    with pytest.raises(DataAccessError, match=r"dataset_kwargs\.cache_dir"):
        check_data_paths({"cache_dir": "somewhere/../../.."}, roots, "dataset_kwargs")
    with pytest.raises(DataAccessError, match="set by the server"):
        check_data_paths({"data_dir": str(tmp_path)}, roots, "dataset_kwargs")
    with pytest.raises(DataAccessError, match="must be a path string"):
        check_data_paths({"root": {"a": 1}}, roots, "dataset_kwargs")
    assert check_data_paths({"subset": 5, "stem": "cifar"}, roots, "model_kwargs") == {
        "subset": 5, "stem": "cifar"}
    assert check_data_paths({"path": "/etc/passwd"}, None, "dataset_kwargs") == {
        "path": "/etc/passwd"}  # library use: no roots, no restriction


def test_resolve_refuses_nul_and_empty(tmp_path):
    for bad in ("", "a\x00b", 3):
        with pytest.raises(DataAccessError):
            resolve_in_roots(bad, [str(tmp_path)], "dataset_kwargs.root")


def test_data_access_error_survives_pickling():
    err = pickle.loads(pickle.dumps(DataAccessError("dataset_kwargs.root", "is outside")))
    assert err.field == "dataset_kwargs.root" and str(err) == "dataset_kwargs.root: is outside"


def test_model_kwargs_paths_are_checked_too(tmp_path):
    from trainables.registry import build_model

    info = {"num_classes": 10, "input_shape": (1, 8, 8), "task": "classification"}
    with pytest.raises(DataAccessError, match=r"model_kwargs\.weights_file"):
        build_model("mlp", info, data_roots=[str(tmp_path)], weights_file="/etc/passwd")
