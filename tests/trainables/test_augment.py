"""CIFAR crop + flip on tensors: every output is a window of the zero-padded input."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trainables.augment import RandomCropFlip


def test_identity_without_padding_and_flip():
    x = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    out = RandomCropFlip(padding=0, flip=False)(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, x)


def test_outputs_are_padded_windows_possibly_flipped_and_reproducible():
    x = torch.arange(6 * 2 * 6 * 6, dtype=torch.float32).reshape(6, 2, 6, 6) + 1
    aug = RandomCropFlip(padding=2)
    out = aug(x, torch.Generator().manual_seed(3))
    again = aug(x, torch.Generator().manual_seed(3))
    assert torch.equal(out, again)
    padded = F.pad(x, (2, 2, 2, 2))
    moved = 0
    for i in range(6):
        windows = [padded[i, :, oy : oy + 6, ox : ox + 6] for oy in range(5) for ox in range(5)]
        candidates = windows + [w.flip(-1) for w in windows]
        assert any(torch.equal(out[i], w) for w in candidates), i
        moved += not torch.equal(out[i], x[i])
    assert moved >= 3  # 6 samples, P(unchanged) = 1/25 * 1/2 each


def test_flip_happens_about_half_the_time():
    x = torch.arange(4, dtype=torch.float32).expand(2000, 1, 1, 4).contiguous()
    out = RandomCropFlip(padding=0)(x, torch.Generator().manual_seed(0))
    flipped = (out[:, 0, 0, 0] == 3).float().mean().item()
    assert 0.45 < flipped < 0.55
