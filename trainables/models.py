"""Model builders: ``builder(info, **kwargs) -> nn.Module``.

``info`` is :meth:`trainables.datasets.DataBundle.info` (``num_classes``, ``input_shape``,
``task``): the data decides the head and the input channels, the kwargs decide the size.

The paper's image experiments use torchvision's ResNet-18/34/50 and VGG-16 on CIFAR, which
need the "CIFAR stem" (a 3x3 stride-1 first convolution and no max-pool) so 32x32 inputs are
not shrunk 4x before the first block; ``stem="imagenet"`` keeps torchvision's 7x7/2 + pool.
Weights are always random (``weights=None``): phitune never downloads anything.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from trainables.errors import ConfigError

Stem = Literal["cifar", "imagenet"]


def _image_channels(info: Mapping[str, Any], model: str) -> tuple[int, int, int]:
    shape = tuple(info["input_shape"])
    if info.get("task", "classification") != "classification" or len(shape) != 3:
        raise ConfigError(
            f"model {model!r} needs image data (input_shape (C, H, W)), got {shape} "
            f"for task {info.get('task')!r}"
        )
    return shape  # type: ignore[return-value]


def mlp(
    info: Mapping[str, Any],
    *,
    hidden_sizes: Sequence[int] = (256, 128),
    dropout: float = 0.0,
    activation: Literal["relu", "gelu", "tanh"] = "relu",
) -> nn.Module:
    """Flatten -> [Linear -> act (-> dropout)] x len(hidden_sizes) -> Linear(num_classes)."""
    if info.get("task", "classification") != "classification":
        raise ConfigError("model 'mlp' needs a classification dataset")
    acts = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}
    if activation not in acts:
        raise ConfigError(f"activation must be one of {sorted(acts)}, got {activation!r}")
    sizes = [int(math.prod(info["input_shape"])), *(int(h) for h in hidden_sizes)]
    if any(h < 1 for h in sizes):
        raise ConfigError(f"hidden_sizes must be positive integers, got {list(hidden_sizes)}")
    layers: list[nn.Module] = [nn.Flatten()]
    for a, b in zip(sizes[:-1], sizes[1:], strict=True):
        layers += [nn.Linear(a, b), acts[activation]()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(sizes[-1], int(info["num_classes"])))
    return nn.Sequential(*layers)


def cnn(info: Mapping[str, Any], *, width: int = 32, batch_norm: bool = True) -> nn.Module:
    """A small two-block CNN: [conv3x3 -> (BN) -> ReLU -> pool] x 2 -> MLP head.

    Works for any input size >= 4x4 (digits 8x8, MNIST 28x28, CIFAR 32x32).
    """
    c, h, w = _image_channels(info, "cnn")
    if min(h, w) < 4:
        raise ConfigError(f"model 'cnn' needs inputs of at least 4x4, got {h}x{w}")

    def block(cin: int, cout: int) -> list[nn.Module]:
        return [
            nn.Conv2d(cin, cout, 3, padding=1, bias=not batch_norm),
            *([nn.BatchNorm2d(cout)] if batch_norm else []),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        ]

    return nn.Sequential(
        *block(c, width),
        *block(width, 2 * width),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(2 * width * 4, 4 * width),
        nn.ReLU(inplace=True),
        nn.Linear(4 * width, int(info["num_classes"])),
    )


def _check_stem(stem: str) -> None:
    if stem not in ("cifar", "imagenet"):
        raise ConfigError(f"stem must be 'cifar' or 'imagenet', got {stem!r}")


def _resnet(arch: str, info: Mapping[str, Any], stem: Stem, zero_init_residual: bool) -> nn.Module:
    import torchvision.models as tvm

    _check_stem(stem)
    c, h, w = _image_channels(info, arch)
    model = getattr(tvm, arch)(
        weights=None, num_classes=int(info["num_classes"]), zero_init_residual=zero_init_residual
    )
    if stem == "cifar":
        model.conv1 = nn.Conv2d(c, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif c != 3:
        model.conv1 = nn.Conv2d(c, 64, kernel_size=7, stride=2, padding=3, bias=False)
    if stem == "cifar" or c != 3:
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    return model


def resnet18(
    info: Mapping[str, Any], *, stem: Stem = "cifar", zero_init_residual: bool = False
) -> nn.Module:
    """torchvision ResNet-18, random init, CIFAR stem by default (paper §4)."""
    return _resnet("resnet18", info, stem, zero_init_residual)


def resnet34(
    info: Mapping[str, Any], *, stem: Stem = "cifar", zero_init_residual: bool = False
) -> nn.Module:
    """torchvision ResNet-34, random init, CIFAR stem by default (paper §4)."""
    return _resnet("resnet34", info, stem, zero_init_residual)


def resnet50(
    info: Mapping[str, Any], *, stem: Stem = "cifar", zero_init_residual: bool = False
) -> nn.Module:
    """torchvision ResNet-50, random init, CIFAR stem by default (paper §4)."""
    return _resnet("resnet50", info, stem, zero_init_residual)


def vgg16(info: Mapping[str, Any], *, stem: Stem = "cifar", batch_norm: bool = True) -> nn.Module:
    """torchvision VGG-16 (with BN by default), random init.

    VGG's first conv is already 3x3/1, so for VGG the CIFAR variant is about the head: after
    five max-pools a 32x32 input is 1x1x512, and the common CIFAR VGG-16 classifies that
    vector with one linear layer instead of upsampling it to 7x7 for the 4096-wide ImageNet
    head (120M parameters for nothing).
    """
    import torchvision.models as tvm

    _check_stem(stem)
    c, h, w = _image_channels(info, "vgg16")
    if min(h, w) < 32:
        raise ConfigError(f"vgg16 has five 2x2 max-pools and needs inputs >= 32x32, got {h}x{w}")
    model = (tvm.vgg16_bn if batch_norm else tvm.vgg16)(
        weights=None, num_classes=int(info["num_classes"])
    )
    if c != 3:
        model.features[0] = nn.Conv2d(c, 64, kernel_size=3, padding=1)
    if stem == "cifar":
        model.avgpool = nn.AdaptiveAvgPool2d(1)
        model.classifier = nn.Linear(512, int(info["num_classes"]))
    return model


# ----------------------------------------------------------------- decoder-only LM


class _Block(nn.Module):
    """Pre-LN transformer block: x + attn(LN(x)), x + MLP(LN(x)) (GPT-2 / OLMo layout)."""

    def __init__(self, d_model: int, n_head: int, dropout: float, bias: bool) -> None:
        super().__init__()
        self.n_head = n_head
        self.ln1 = nn.LayerNorm(d_model, bias=bias)
        self.qkv = nn.Linear(d_model, 3 * d_model, bias=bias)
        self.proj = nn.Linear(d_model, d_model, bias=bias)
        self.ln2 = nn.LayerNorm(d_model, bias=bias)
        self.mlp = nn.Sequential(
            nn.Linear(d_model, 4 * d_model, bias=bias),
            nn.GELU(),
            nn.Linear(4 * d_model, d_model, bias=bias),
        )
        self.dropout = dropout
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=2)
        q, k, v = (z.view(b, t, self.n_head, d // self.n_head).transpose(1, 2) for z in (q, k, v))
        a = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        x = x + self.drop(self.proj(a.transpose(1, 2).reshape(b, t, d)))
        return x + self.drop(self.mlp(self.ln2(x)))


class TransformerLM(nn.Module):
    """A small GPT-style decoder-only LM: token + learned position embeddings, pre-LN blocks,
    final LN, and an output head tied to the token embedding. Returns ``(B, T, vocab)`` logits.
    """

    def __init__(
        self,
        vocab_size: int,
        block_size: int,
        *,
        n_layer: int = 2,
        n_head: int = 2,
        d_model: int = 64,
        dropout: float = 0.0,
        bias: bool = False,
    ) -> None:
        super().__init__()
        if d_model % n_head:
            raise ConfigError(f"d_model ({d_model}) must be divisible by n_head ({n_head})")
        if min(n_layer, n_head, d_model, block_size, vocab_size) < 1:
            raise ConfigError("n_layer, n_head, d_model, block_size must be positive")
        self.block_size = block_size
        self.tok = nn.Embedding(vocab_size, d_model)
        self.pos = nn.Embedding(block_size, d_model)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(_Block(d_model, n_head, dropout, bias) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(d_model, bias=bias)
        self.head = nn.Linear(d_model, vocab_size, bias=False)
        self.head.weight = self.tok.weight  # weight tying (GPT-2)
        self.apply(self._init)
        # GPT-2: scale residual projections by 1/sqrt(2 * n_layer)
        for name, p in self.named_parameters():
            if name.endswith("proj.weight") or name.endswith("mlp.2.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * n_layer))

    @staticmethod
    def _init(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        if t > self.block_size:
            raise ValueError(f"sequence length {t} exceeds block_size {self.block_size}")
        pos = torch.arange(t, device=idx.device)
        x = self.drop(self.tok(idx) + self.pos(pos))
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln_f(x))


def transformer_lm(
    info: Mapping[str, Any],
    *,
    n_layer: int = 2,
    n_head: int = 2,
    d_model: int = 64,
    block_size: int | None = None,
    dropout: float = 0.0,
    bias: bool = False,
) -> nn.Module:
    """Small decoder-only LM sized by kwargs; vocabulary and context length from the data."""
    if info.get("task") != "lm":
        raise ConfigError(
            f"model 'transformer_lm' needs an lm dataset, got task {info.get('task')!r}"
        )
    data_block = int(info.get("block_size", info["input_shape"][0]))
    block_size = data_block if block_size is None else int(block_size)
    if block_size < data_block:
        raise ConfigError(
            f"model block_size {block_size} is smaller than the dataset's windows ({data_block})"
        )
    return TransformerLM(
        int(info["num_classes"]),
        block_size,
        n_layer=n_layer,
        n_head=n_head,
        d_model=d_model,
        dropout=dropout,
        bias=bias,
    )
