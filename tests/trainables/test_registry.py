"""Registry: names, clear errors, and real entry-point plugins from an installed dist-info."""

from __future__ import annotations

import textwrap

import pytest

from trainables import (
    ConfigError,
    UnknownNameError,
    build_model,
    get_dataset,
    list_datasets,
    list_models,
    register_model,
)
from trainables import registry as reg


def test_builtin_names_with_descriptions():
    models, datasets = list_models(), list_datasets()
    assert {"mlp", "cnn", "resnet18", "resnet34", "resnet50", "vgg16", "transformer_lm"} <= set(
        models
    )
    assert {
        "digits",
        "mnist5k",
        "fashion_mnist",
        "shakespeare_char",
        "cifar10",
        "cifar100",
        "imagefolder",
        "text",
    } <= set(datasets)
    assert all(isinstance(d, str) and d for d in [*models.values(), *datasets.values()])


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(UnknownNameError) as e:
        build_model("resnet9000", {"num_classes": 2, "input_shape": (3, 32, 32)})
    assert isinstance(e.value, KeyError) and isinstance(e.value, ValueError)
    assert "resnet18" in str(e.value) and "'resnet9000'" in str(e.value)
    with pytest.raises(KeyError, match="digits"):
        get_dataset("os.system")


def test_unknown_kwargs_are_config_errors_listing_accepted():
    with pytest.raises(ConfigError, match=r"unknown argument\(s\) \['widht'\].*width"):
        build_model("cnn", {"num_classes": 2, "input_shape": (1, 8, 8)}, widht=3)
    with pytest.raises(ConfigError, match="subset"):
        get_dataset("digits", sub_set=3)


def test_runtime_registration_cannot_shadow_builtins():
    with pytest.raises(ValueError, match="built-in"):
        register_model("mlp", lambda info: None)


PLUGIN = textwrap.dedent(
    '''
    import torch.nn as nn
    from trainables.datasets import char_lm_bundle


    def tiny_linear(info, *, bias=True):
        """A single linear layer (test plugin)."""
        import math
        return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(info["input_shape"]),
                             info["num_classes"], bias=bias))


    def fake_mlp(info):
        raise AssertionError("a plugin must never replace a built-in")


    def abc_text(*, block_size=4):
        """Repeated alphabet as an LM set (test plugin; takes no data_dir)."""
        return char_lm_bundle("abc_text", "abcdefgh" * 50, block_size=block_size)
    '''
)


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    """A real distribution on sys.path declaring phitune.models / phitune.datasets."""
    (tmp_path / "phitune_test_plugin.py").write_text(PLUGIN)
    dist = tmp_path / "phitune_test_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: phitune-test-plugin\nVersion: 0.1\n"
    )
    (dist / "entry_points.txt").write_text(
        "[phitune.models]\n"
        "tiny_linear = phitune_test_plugin:tiny_linear\n"
        "mlp = phitune_test_plugin:fake_mlp\n"
        "broken = phitune_test_plugin:does_not_exist\n"
        "[phitune.datasets]\n"
        "abc_text = phitune_test_plugin:abc_text\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield


def test_entry_point_plugins_extend_without_editing_phitune(installed_plugin):
    models = list_models()
    assert models["tiny_linear"] == "A single linear layer (test plugin)."
    assert "broken" not in models  # logged and skipped, the registry still works
    bundle = get_dataset("abc_text", block_size=4)
    assert bundle.task == "lm" and "abc_text" in list_datasets()
    m = build_model("tiny_linear", {"num_classes": 3, "input_shape": (1, 8, 8)}, bias=False)
    assert m[1].bias is None and m[1].out_features == 3
    # built-in wins over a plugin of the same name
    assert build_model("mlp", {"num_classes": 3, "input_shape": (1, 8, 8)}) is not None
    assert reg._models()["mlp"].source == "builtin"
