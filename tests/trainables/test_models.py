"""Model builders: shapes, stems, heads, and the LM's causality."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from trainables import ConfigError, build_model

IMG32 = {"num_classes": 10, "input_shape": (3, 32, 32), "task": "classification"}
DIGITS = {"num_classes": 10, "input_shape": (1, 8, 8), "task": "classification"}
LM = {"num_classes": 20, "input_shape": (16,), "task": "lm"}


def test_mlp_hidden_sizes_and_output():
    m = build_model("mlp", DIGITS, hidden_sizes=[32, 16])
    linears = [x for x in m.modules() if isinstance(x, nn.Linear)]
    assert [(x.in_features, x.out_features) for x in linears] == [(64, 32), (32, 16), (16, 10)]
    assert m(torch.randn(4, 1, 8, 8)).shape == (4, 10)


@pytest.mark.parametrize("shape", [(1, 8, 8), (1, 28, 28), (3, 32, 32)])
def test_cnn_any_image_size(shape):
    m = build_model("cnn", {**DIGITS, "input_shape": shape}, width=4)
    assert m(torch.randn(2, *shape)).shape == (2, 10)


def test_resnet18_cifar_stem_vs_imagenet_stem():
    cifar = build_model("resnet18", IMG32)
    assert cifar.conv1.kernel_size == (3, 3) and cifar.conv1.stride == (1, 1)
    assert isinstance(cifar.maxpool, nn.Identity)
    imnet = build_model("resnet18", IMG32, stem="imagenet")
    assert imnet.conv1.kernel_size == (7, 7) and isinstance(imnet.maxpool, nn.MaxPool2d)
    cifar.eval()
    with torch.no_grad():
        assert cifar(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    # the CIFAR stem keeps 32x32 at the first block: 4x more activations than ImageNet's
    feats = {}
    cifar.layer1.register_forward_hook(lambda m, i, o: feats.update(c=o.shape) or None)
    imnet.layer1.register_forward_hook(lambda m, i, o: feats.update(i=o.shape) or None)
    with torch.no_grad():
        imnet.eval()
        cifar(torch.randn(1, 3, 32, 32))
        imnet(torch.randn(1, 3, 32, 32))
    assert feats["c"][-1] == 32 and feats["i"][-1] == 8


@pytest.mark.parametrize("name", ["resnet34", "resnet50"])
def test_deeper_resnets_grayscale_input(name):
    m = build_model(name, {**IMG32, "input_shape": (1, 32, 32), "num_classes": 7}).eval()
    assert m.conv1.in_channels == 1
    with torch.no_grad():
        assert m(torch.randn(1, 1, 32, 32)).shape == (1, 7)


def test_vgg16_cifar_head_and_size_check():
    m = build_model("vgg16", IMG32).eval()
    assert isinstance(m.classifier, nn.Linear) and m.classifier.in_features == 512
    assert any(isinstance(x, nn.BatchNorm2d) for x in m.features)
    with torch.no_grad():
        assert m(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    with pytest.raises(ConfigError, match="32x32"):
        build_model("vgg16", {**IMG32, "input_shape": (1, 28, 28)})
    plain = build_model("vgg16", IMG32, batch_norm=False)
    assert not any(isinstance(x, nn.BatchNorm2d) for x in plain.features)


def test_image_models_refuse_lm_data_and_bad_stem():
    with pytest.raises(ConfigError, match="image data"):
        build_model("resnet18", LM)
    with pytest.raises(ConfigError, match="stem"):
        build_model("resnet18", IMG32, stem="tiny")


def test_transformer_lm_shapes_tying_and_causality():
    torch.manual_seed(0)
    m = build_model("transformer_lm", LM, n_layer=2, n_head=2, d_model=16).eval()
    assert m.head.weight is m.tok.weight
    x = torch.randint(0, 20, (2, 16))
    with torch.no_grad():
        out = m(x)
        assert out.shape == (2, 16, 20)
        x2 = x.clone()
        x2[:, 10:] = (x2[:, 10:] + 1) % 20  # change the future
        out2 = m(x2)
    assert torch.allclose(out[:, :10], out2[:, :10], atol=1e-6)
    assert not torch.allclose(out[:, 10:], out2[:, 10:])


def test_transformer_lm_config_errors():
    with pytest.raises(ConfigError, match="divisible"):
        build_model("transformer_lm", LM, n_head=3, d_model=16)
    with pytest.raises(ConfigError, match="lm dataset"):
        build_model("transformer_lm", DIGITS)
    with pytest.raises(ConfigError, match="smaller than the dataset"):
        build_model("transformer_lm", LM, block_size=8)
