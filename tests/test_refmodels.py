"""The reference models of benchmarks/refmodels.py are the published networks: the same parameter count as
torchvision / timm publish, the layer types that set their cost (depthwise convolutions, squeeze-excite,
hard-swish, SiLU, LayerNorm without BatchNorm), and settled BatchNorm statistics."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import refmodels  # noqa: E402


@pytest.mark.parametrize("name", sorted(refmodels.PUBLISHED))
def test_parameter_count_equals_the_published_one(name):
    assert refmodels.parameters(refmodels.FACTORIES[name]()) == refmodels.PUBLISHED[name]


@pytest.mark.parametrize("name, layer", [("mobilenet_v3_large", nn.Hardswish), ("mobilenet_v3_large", nn.Hardsigmoid),
                                         ("efficientnet_b0", nn.SiLU), ("deit_tiny", nn.LayerNorm)])
def test_the_layers_that_set_the_cost_are_there(name, layer):
    assert any(isinstance(m, layer) for m in refmodels.FACTORIES[name]().modules())


def test_the_transformer_has_no_batchnorm_and_the_others_do():
    for name, make in refmodels.FACTORIES.items():
        has_bn = any(isinstance(m, nn.BatchNorm2d) for m in make().modules())
        assert has_bn == (name != "deit_tiny"), name


def test_classes_change_only_the_classifier():
    small = refmodels.parameters(refmodels.resnet18(10))
    assert refmodels.PUBLISHED["resnet18"] - small == 990 * 512 + 990


def test_settled_batchnorm_holds_input_statistics_not_zero_and_one():
    torch.manual_seed(0)
    m = refmodels.settle_batchnorm(refmodels.init_weights(refmodels.resnet18(10)), images=8, size=64, batch=4)
    var = m.bn1.running_var
    assert not torch.allclose(var, torch.ones_like(var)) and not m.training
    assert m(torch.zeros(2, 3, 64, 64)).shape == (2, 10)


def test_a_format_onnxruntime_cannot_make_for_a_network_is_left_out_and_the_others_calibrate(tmp_path):
    """DeiT-Tiny (zero biases, as timm initialises it) traced as a TorchScript teacher file: onnxruntime's QOperator
    format quantizes a bias the exported graph shares between a convolution and an Add into an int32 QLinearAdd
    input it then refuses to load; calibration records that and goes on with the other formats."""
    from dfkd_edge.export.onnx_export import export_onnx
    from dfkd_edge.export.quantize import CalibConfig, calibrate

    torch.manual_seed(0)
    x = torch.randn(8, 3, 224, 224)
    torch.jit.save(torch.jit.trace(refmodels.build("deit_tiny", classes=5), x[:1]), str(tmp_path / "d.pt"))
    net = torch.jit.load(str(tmp_path / "d.pt")).eval()
    fp32 = export_onnx(net, (3, 224, 224), tmp_path / "d.onnx")
    with torch.no_grad():
        logits = net(x[4:]).numpy()
    cfg = CalibConfig(formats=("qoperator-u8s8", "qdq-u8s8"), threads=2)
    rec = calibrate(fp32, tmp_path / "d8.onnx", x[:4].numpy(), x[4:].numpy(), logits, cfg)
    assert [f["format"] for f in rec["failed_formats"]] == ["qoperator-u8s8"] and rec["failed_formats"][0]["error"]
    assert [c["format"] for c in rec["candidates"]] == ["qdq-u8s8"] and rec["chosen_format"] == "qdq-u8s8"
    assert (tmp_path / "d8.onnx").is_file()
