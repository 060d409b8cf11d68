"""Reference classifiers at the size users ship them, written in plain PyTorch layer for layer as
torchvision (ResNet-18/50, MobileNetV2, MobileNetV3-Large, EfficientNet-B0) and timm (DeiT-Tiny)
define them: parameter counts equal the published ones (``PUBLISHED``; tests/test_refmodels.py).

Each name in ``FACTORIES`` is also a factory for ``--factory refmodels:NAME`` (this folder on
PYTHONPATH); ``classes`` changes the classifier's width (a private task with a handful of classes).

``python benchmarks/refmodels.py --out DIR`` writes every model at 224x224 in the three teacher
formats (TorchScript ``.pt``, ``torch.export`` ``.pt2``, state_dict ``.sd.pt`` for ``--factory``) and
as ONNX, with BatchNorm statistics re-estimated on structured random images (:func:`settle_batchnorm`):
fresh BatchNorms hold mean 0 / variance 1, which no trained model does.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from functools import partial
from pathlib import Path

import torch
from torch import nn

#: parameter counts with 1000 classes, as torchvision / timm publish them
PUBLISHED = {"resnet18": 11_689_512, "resnet50": 25_557_032, "mobilenet_v2": 3_504_872,
             "mobilenet_v3_large": 5_483_032, "efficientnet_b0": 5_288_548, "deit_tiny": 5_717_416}
#: the same for the networks only published latencies are given for (torchvision's mobilenet_v3_small)
PUBLISHED_DEVICE = {"mobilenet_v3_small": 2_542_856}


def _divisible(v: float, divisor: int = 8) -> int:
    """torchvision's _make_divisible: round to a multiple of ``divisor``, never below 90% of ``v``."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act=nn.ReLU, eps: float = 1e-5,
             momentum: float = 0.1) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
              nn.BatchNorm2d(cout, eps=eps, momentum=momentum)]
    if act is not None:
        layers.append(act(inplace=True) if act in (nn.ReLU, nn.ReLU6, nn.Hardswish, nn.SiLU) else act())
    return nn.Sequential(*layers)


# ---- ResNet (torchvision resnet18 / resnet50: v1.5, stride on the 3x3 conv) ----

class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int = 1, down: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = down

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + idt)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1, down: nn.Module | None = None) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, width * 4, 1, bias=False), nn.BatchNorm2d(width * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = down

    def forward(self, x):
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + idt)


class ResNet(nn.Module):
    def __init__(self, block, layers: list[int], classes: int = 1000) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1, self.bn1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64)
        self.relu, self.maxpool = nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._layer(block, 64, layers[0], 1)
        self.layer2 = self._layer(block, 128, layers[1], 2)
        self.layer3 = self._layer(block, 256, layers[2], 2)
        self.layer4 = self._layer(block, 512, layers[3], 2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512 * block.expansion, classes)

    def _layer(self, block, width: int, n: int, stride: int) -> nn.Sequential:
        down = None
        if stride != 1 or self.inplanes != width * block.expansion:
            down = nn.Sequential(nn.Conv2d(self.inplanes, width * block.expansion, 1, stride, bias=False),
                                 nn.BatchNorm2d(width * block.expansion))
        blocks = [block(self.inplanes, width, stride, down)]
        self.inplanes = width * block.expansion
        blocks += [block(self.inplanes, width) for _ in range(1, n)]
        return nn.Sequential(*blocks)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18(classes: int = 1000) -> ResNet:
    return ResNet(BasicBlock, [2, 2, 2, 2], classes)


def resnet50(classes: int = 1000) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], classes)


# ---- MobileNetV2 (torchvision mobilenet_v2, width 1.0) ----

class InvertedResidualV2(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = int(round(cin * expand))
        self.use_res = stride == 1 and cin == cout
        layers = [] if expand == 1 else [_conv_bn(cin, hidden, 1, act=nn.ReLU6)]
        layers += [_conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


class MobileNetV2(nn.Module):
    SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1)]

    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        cin, layers = 32, [_conv_bn(3, 32, 3, 2, act=nn.ReLU6)]
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(InvertedResidualV2(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(_conv_bn(cin, 1280, 1, act=nn.ReLU6))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, classes))

    def forward(self, x):
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


def mobilenet_v2(classes: int = 1000) -> MobileNetV2:
    return MobileNetV2(classes)


# ---- squeeze-excite (torchvision.ops.SqueezeExcitation) ----

class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, squeeze: int, act=nn.ReLU, gate=nn.Sigmoid) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.fc2 = nn.Conv2d(channels, squeeze, 1), nn.Conv2d(squeeze, channels, 1)
        self.activation, self.scale_activation = act(), gate()

    def forward(self, x):
        return x * self.scale_activation(self.fc2(self.activation(self.fc1(self.avgpool(x)))))


# ---- MobileNetV3-Large (torchvision mobilenet_v3_large) ----

#: (input, kernel, expanded, output, squeeze-excite, hard-swish, stride)
V3_LARGE = [(16, 3, 16, 16, False, False, 1), (16, 3, 64, 24, False, False, 2), (24, 3, 72, 24, False, False, 1),
            (24, 5, 72, 40, True, False, 2), (40, 5, 120, 40, True, False, 1), (40, 5, 120, 40, True, False, 1),
            (40, 3, 240, 80, False, True, 2), (80, 3, 200, 80, False, True, 1), (80, 3, 184, 80, False, True, 1),
            (80, 3, 184, 80, False, True, 1), (80, 3, 480, 112, True, True, 1), (112, 3, 672, 112, True, True, 1),
            (112, 5, 672, 160, True, True, 2), (160, 5, 960, 160, True, True, 1), (160, 5, 960, 160, True, True, 1)]


class InvertedResidualV3(nn.Module):
    def __init__(self, cin: int, k: int, exp: int, cout: int, se: bool, hs: bool, stride: int) -> None:
        super().__init__()
        act = nn.Hardswish if hs else nn.ReLU
        bn = partial(_conv_bn, eps=0.001, momentum=0.01)
        self.use_res = stride == 1 and cin == cout
        layers = [] if exp == cin else [bn(cin, exp, 1, act=act)]
        layers.append(bn(exp, exp, k, stride, groups=exp, act=act))
        if se:
            layers.append(SqueezeExcitation(exp, _divisible(exp // 4), nn.ReLU, nn.Hardsigmoid))
        layers.append(bn(exp, cout, 1, act=None))
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.block(x) if self.use_res else self.block(x)


#: MobileNetV3-Small's blocks, in V3_LARGE's order
V3_SMALL = [(16, 3, 16, 16, True, False, 2), (16, 3, 72, 24, False, False, 2), (24, 3, 88, 24, False, False, 1),
            (24, 5, 96, 40, True, True, 2), (40, 5, 240, 40, True, True, 1), (40, 5, 240, 40, True, True, 1),
            (40, 5, 120, 48, True, True, 1), (48, 5, 144, 48, True, True, 1), (48, 5, 288, 96, True, True, 2),
            (96, 5, 576, 96, True, True, 1), (96, 5, 576, 96, True, True, 1)]


class MobileNetV3(nn.Module):
    """torchvision's MobileNetV3: a hard-swish stem, the inverted residual blocks of ``config``, a 1x1 conv to
    6x the last width, pooling and a two-layer classifier of ``hidden`` units."""

    def __init__(self, config: list[tuple], hidden: int, classes: int = 1000) -> None:
        super().__init__()
        last = config[-1][3]
        layers = [_conv_bn(3, 16, 3, 2, act=nn.Hardswish, eps=0.001, momentum=0.01)]
        layers += [InvertedResidualV3(*c) for c in config]
        layers.append(_conv_bn(last, 6 * last, 1, act=nn.Hardswish, eps=0.001, momentum=0.01))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(6 * last, hidden), nn.Hardswish(inplace=True), nn.Dropout(0.2),
                                        nn.Linear(hidden, classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def mobilenet_v3_large(classes: int = 1000) -> MobileNetV3:
    return MobileNetV3(V3_LARGE, 1280, classes)


def mobilenet_v3_small(classes: int = 1000) -> MobileNetV3:
    return MobileNetV3(V3_SMALL, 1024, classes)


# ---- SSD-MobileNet-v1 (MLPerf Inference's ssd-mobilenet: TF ssd_mobilenet_v1_coco at 300x300) ----

class SSDMobileNetV1(nn.Module):
    """MobileNetV1 (ReLU6, depthwise-separable pairs) with the SSD feature extractor of the TF object detection
    API: boxes from Conv2d_11 (19x19, 3 anchors) and Conv2d_13 (10x10) and four extra maps (1x1 conv to half
    depth, 3x3 stride-2 conv: 512, 256, 256, 128 channels), 6 anchors each, 1x1 box predictors of 4 box and
    ``classes`` + 1 class outputs per anchor: 1917 anchors. Ends at the raw predictions: the box decoding
    and non-maximum suppression that follow are not part of the graph (runtimes run them as a plugin)."""

    PAIRS = [(32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1), (256, 512, 2)] + \
        [(512, 512, 1)] * 5 + [(512, 1024, 2), (1024, 1024, 1)]
    EXTRA = [(1024, 256, 512), (512, 128, 256), (256, 128, 256), (256, 64, 128)]

    def __init__(self, classes: int = 90) -> None:
        super().__init__()
        bn = partial(_conv_bn, act=nn.ReLU6, eps=0.001)
        layers = [bn(3, 32, 3, 2)]
        for cin, cout, s in self.PAIRS:
            layers.append(nn.Sequential(bn(cin, cin, 3, s, groups=cin), bn(cin, cout, 1)))
        self.backbone = nn.ModuleList(layers)
        self.extra = nn.ModuleList(nn.Sequential(bn(cin, mid, 1), bn(mid, cout, 3, 2))
                                   for cin, mid, cout in self.EXTRA)
        maps = [(512, 3), (1024, 6)] + [(cout, 6) for _, _, cout in self.EXTRA]
        self.boxes = nn.ModuleList(nn.Conv2d(c, a * 4, 1) for c, a in maps)
        self.scores = nn.ModuleList(nn.Conv2d(c, a * (classes + 1), 1) for c, a in maps)
        self.classes = classes + 1

    def forward(self, x):
        feats = []
        for i, layer in enumerate(self.backbone):
            x = layer(x)
            if i in (11, 13):  # Conv2d_11_pointwise, Conv2d_13_pointwise (after the stem, layer i is Conv2d_i)
                feats.append(x)
        for layer in self.extra:
            x = layer(x)
            feats.append(x)
        n = x.shape[0]
        boxes = torch.cat([b(f).permute(0, 2, 3, 1).reshape(n, -1, 4) for b, f in zip(self.boxes, feats)], 1)
        scores = torch.cat([c(f).permute(0, 2, 3, 1).reshape(n, -1, self.classes)
                            for c, f in zip(self.scores, feats)], 1)
        return torch.cat([boxes, scores], 2)


def ssd_mobilenet_v1(classes: int = 90) -> SSDMobileNetV1:
    return SSDMobileNetV1(classes)


# ---- EfficientNet-B0 (torchvision efficientnet_b0) ----

#: (expand ratio, kernel, stride, input, output, layers)
B0 = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3), (6, 5, 1, 80, 112, 3),
      (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1)]


class MBConv(nn.Module):
    def __init__(self, expand: int, k: int, stride: int, cin: int, cout: int) -> None:
        super().__init__()
        bn = partial(_conv_bn, eps=1e-3, act=nn.SiLU)
        exp = _divisible(cin * expand)
        self.use_res = stride == 1 and cin == cout
        layers = [] if exp == cin else [bn(cin, exp, 1)]
        layers += [bn(exp, exp, k, stride, groups=exp), SqueezeExcitation(exp, max(1, cin // 4), nn.SiLU),
                   bn(exp, cout, 1, act=None)]
        self.block = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.block(x) if self.use_res else self.block(x)  # stochastic depth: identity at inference


class EfficientNetB0(nn.Module):
    def __init__(self, classes: int = 1000) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn(3, 32, 3, 2, act=nn.SiLU, eps=1e-3)]
        for e, k, s, cin, cout, n in B0:
            layers.append(nn.Sequential(*[MBConv(e, k, s if i == 0 else 1, cin if i == 0 else cout, cout)
                                          for i in range(n)]))
        layers.append(_conv_bn(320, 1280, 1, act=nn.SiLU, eps=1e-3))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, classes))

    def forward(self, x):
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def efficientnet_b0(classes: int = 1000) -> EfficientNetB0:
    return EfficientNetB0(classes)


# ---- DeiT-Tiny (timm deit_tiny_patch16_224: patch 16, width 192, 12 blocks, 3 heads, no BatchNorm) ----

class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv, self.proj = nn.Linear(dim, dim * 3), nn.Linear(dim, dim)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        x = nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim, eps=1e-6), Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp), nn.GELU(), nn.Linear(mlp, dim))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class DeiTTiny(nn.Module):
    def __init__(self, classes: int = 1000, size: int = 224, patch: int = 16, dim: int = 192, depth: int = 12,
                 heads: int = 3) -> None:
        super().__init__()
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.randn(1, (size // patch) ** 2 + 1, dim) * 0.02)
        self.blocks = nn.Sequential(*[Block(dim, heads, 4 * dim) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Linear(dim, classes)

    def forward(self, x):
        x = self.patch_embed(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        return self.head(self.norm(self.blocks(x))[:, 0])


def deit_tiny(classes: int = 1000) -> DeiTTiny:
    return DeiTTiny(classes)


FACTORIES = {"resnet18": resnet18, "resnet50": resnet50, "mobilenet_v2": mobilenet_v2,
             "mobilenet_v3_large": mobilenet_v3_large, "efficientnet_b0": efficientnet_b0, "deit_tiny": deit_tiny}
#: networks that published device latencies are given for (benchmarks/jetson_published.toml), not teachers here:
#: the smallest MobileNetV3 and MLPerf's SSD-MobileNet detector (no classifier: its output is the raw predictions)
DEVICE_NETWORKS = {**FACTORIES, "mobilenet_v3_small": mobilenet_v3_small, "ssd_mobilenet_v1": ssd_mobilenet_v1}


def init_weights(model: nn.Module, seed: int = 0) -> nn.Module:
    """torchvision's initialisation (Kaiming fan-out convolutions, small linear layers, BN at 1/0)."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1] // m.groups
            with torch.no_grad():
                m.weight.normal_(0, math.sqrt(2.0 / fan_out), generator=g)
                if m.bias is not None:
                    m.bias.zero_()
        elif isinstance(m, nn.Linear):
            with torch.no_grad():
                m.weight.normal_(0, 0.01 * math.sqrt(1000 / max(m.out_features, 1)), generator=g)
                m.bias.zero_()
    return model


def structured_images(n: int, size: int = 224, seed: int = 0) -> torch.Tensor:
    """Random images with the structure photographs have: smooth colour fields, edges and texture at
    several scales, per-image brightness and contrast; ImageNet-normalised (mean 0, std about 1)."""
    g = torch.Generator().manual_seed(seed)
    out = torch.zeros(n, 3, size, size)
    for scale in (4, 8, 16, 32, 64):
        coarse = torch.randn(n, 3, scale, scale, generator=g) * (scale ** -0.5) * 2.0
        out += nn.functional.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)
    gray = out.mean(1, keepdim=True)
    out = 0.6 * gray + 0.4 * out  # colour channels correlate in photographs
    out = (out - out.mean((1, 2, 3), keepdim=True)) / out.std((1, 2, 3), keepdim=True).clamp_min(1e-6)
    contrast = 0.5 + torch.rand(n, 1, 1, 1, generator=g)
    shift = 0.5 * torch.randn(n, 1, 1, 1, generator=g)
    return out * contrast + shift


@torch.no_grad()
def settle_batchnorm(model: nn.Module, images: int = 64, size: int = 224, batch: int = 16, seed: int = 0) -> nn.Module:
    """Re-estimate every BatchNorm's running mean and variance on structured random images (a
    cumulative average over ``images``), so that the statistics are those of inputs, not 0 / 1."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return model.eval()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    x = structured_images(images, size, seed)
    for i in range(0, images, batch):
        model(x[i:i + batch])
    return model.eval()


def build(name: str, classes: int = 1000, size: int = 224, seed: int = 0, settle: bool = True) -> nn.Module:
    """A reference model with torchvision's initialisation and, by default, settled BatchNorm statistics."""
    if name not in FACTORIES:
        raise SystemExit(f"unknown model {name!r}; choose from {', '.join(FACTORIES)}")
    torch.manual_seed(seed)
    model = init_weights(FACTORIES[name](classes), seed)
    return settle_batchnorm(model, size=size, seed=seed) if settle else model.eval()


def parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def write(name: str, out: Path, classes: int = 1000, size: int = 224, formats=("pt", "pt2", "sd", "onnx")) -> dict:
    """The model in the teacher formats and as ONNX under ``out``; returns {format: path}."""
    out.mkdir(parents=True, exist_ok=True)
    model = build(name, classes, size)
    x = torch.zeros(1, 3, size, size)
    stem = f"{name}-{classes}"
    paths = {}
    if "pt" in formats:
        paths["pt"] = out / f"{stem}.pt"
        torch.jit.save(torch.jit.trace(model, x), str(paths["pt"]))
    if "pt2" in formats:
        paths["pt2"] = out / f"{stem}.pt2"
        batch = {0: torch.export.Dim("batch", min=1, max=4096)}  # a dynamic batch, as quantize asks for
        torch.export.save(torch.export.export(model, (torch.zeros(2, 3, size, size),), dynamic_shapes=(batch,)),
                          str(paths["pt2"]))
    if "sd" in formats:
        paths["sd"] = out / f"{stem}.sd.pt"
        torch.save(model.state_dict(), str(paths["sd"]))
    if "onnx" in formats:
        paths["onnx"] = out / f"{stem}.onnx"
        torch.onnx.export(model, (x,), str(paths["onnx"]), input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17,
                          dynamo=False)
    return {k: str(v) for k, v in paths.items()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=str(Path(__file__).parent / ".refmodels"))
    ap.add_argument("--models", nargs="+", default=list(FACTORIES), choices=list(FACTORIES))
    ap.add_argument("--classes", type=int, default=1000)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--formats", nargs="+", default=["pt", "pt2", "sd", "onnx"], choices=["pt", "pt2", "sd", "onnx"])
    ap.add_argument("--count", action="store_true", help="print parameter counts against the published ones, write nothing")
    a = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    for name in a.models:
        if a.count:
            n = parameters(FACTORIES[name](1000))
            print(f"{name:20s} {n:>12,d}  published {PUBLISHED[name]:>12,d}  {'ok' if n == PUBLISHED[name] else 'DIFFERS'}")
            continue
        paths = write(name, Path(a.out), a.classes, a.size, tuple(a.formats))
        print(json.dumps({"model": name, "classes": a.classes, "size": a.size, **paths}), flush=True)


if __name__ == "__main__":
    sys.exit(main())
