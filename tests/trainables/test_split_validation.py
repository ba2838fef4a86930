"""split_validation: two disjoint held-out sets (tuning, evaluation) from a validation set."""

from collections import Counter

import pytest
import torch

from trainables.datasets import char_lm_bundle, split_validation
from trainables.errors import ConfigError
from trainables.registry import get_dataset


def test_classification_split_is_disjoint_complete_and_seeded():
    b = get_dataset("digits")
    tune, ev = split_validation(b, 0.5, seed=3)
    assert tune.num_val + ev.num_val == b.num_val
    assert abs(tune.num_val - ev.num_val) <= 1
    def rows(x: torch.Tensor, y: torch.Tensor) -> Counter:
        return Counter(tuple(r) + (int(c),) for r, c in zip(x.flatten(1).tolist(), y, strict=True))

    # a partition: every validation example in exactly one of the two
    assert rows(tune.val_x, tune.val_y) + rows(ev.val_x, ev.val_y) == rows(b.val_x, b.val_y)
    assert torch.equal(tune.train_x, b.train_x) and torch.equal(ev.train_y, b.train_y)
    again, _ = split_validation(b, 0.5, seed=3)
    assert torch.equal(again.val_y, tune.val_y)
    other, _ = split_validation(b, 0.5, seed=4)
    assert not torch.equal(other.val_y, tune.val_y)
    assert tune.meta["val_split"] == "tuning" and ev.meta["val_split"] == "evaluation"


def test_lm_split_is_contiguous_text():
    text = "".join(chr(97 + (i * 7) % 26) for i in range(4000))
    b = char_lm_bundle("t", text, block_size=16, val_fraction=0.25)
    tune, ev = split_validation(b, 0.5)
    assert torch.equal(torch.cat([tune.val_x, ev.val_x]), b.val_x)


@pytest.mark.parametrize("fraction", [0.0, 1.0, -0.1])
def test_bad_fraction_is_refused(fraction):
    with pytest.raises(ConfigError, match="eval_fraction"):
        split_validation(get_dataset("digits"), fraction)
