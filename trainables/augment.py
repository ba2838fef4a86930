"""Batch-level image augmentation on tensors (on the data's device, no PIL, no workers).

The standard CIFAR recipe the paper's ResNet/VGG runs use is a random 32x32 crop of the image
zero-padded by 4 pixels plus a horizontal flip with probability 1/2. Doing it on the whole
batch at once with index arithmetic keeps it on the GPU and makes it reproducible from the
trial's single data generator (whose state a checkpoint saves).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class RandomCropFlip:
    """Random crop after zero padding by ``padding`` pixels, then a random horizontal flip."""

    def __init__(self, padding: int = 4, flip: bool = True) -> None:
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding}")
        self.padding = padding
        self.flip = flip

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Augment a batch ``(N, C, H, W)``; returns a new tensor of the same shape and dtype."""
        n, _, h, w = x.shape
        dev = x.device
        p = self.padding
        if p > 0:
            xp = F.pad(x, (p, p, p, p))
            oy = torch.randint(0, 2 * p + 1, (n,), generator=generator, device=dev)
            ox = torch.randint(0, 2 * p + 1, (n,), generator=generator, device=dev)
            rows = (oy[:, None] + torch.arange(h, device=dev))[:, :, None]  # (N, H, 1)
            cols = (ox[:, None] + torch.arange(w, device=dev))[:, None, :]  # (N, 1, W)
            batch = torch.arange(n, device=dev)[:, None, None]
            # advanced indexing on dims 0, 2, 3 -> (N, H, W, C); move channels back
            x = xp.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)
        if self.flip:
            mask = torch.rand((n,), generator=generator, device=dev) < 0.5
            x = torch.where(mask[:, None, None, None], x.flip(-1), x)
        return x.contiguous()
