"""The student zoo: a conv 2-D, a conv 1-D and an MLP family, each with a width knob, and for images two
families that run well on Jetson-class GPUs and edge CPUs: ResNet-style basic blocks (``resnet``) and
MobileNetV2-style inverted residuals (``mbv2``).

``--student auto`` picks the family by input rank and the widest member whose parameter
count stays within ``budget`` (default 1/4) of the teacher's; the width never drops below
``MIN_WIDTH`` (so a very small teacher can get a student above the budget). With ``--max-latency-ms``
the image families and widths compete on the device instead (dfkd_edge.student_choice). The families are
deliberately plain (conv-BN-ReLU(6), global pooling, one linear head) so that ONNX export folds BN into
the convolutions and every layer quantizes. A user's own student: ``--student-factory module:function``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dfkd_edge.errors import UserError
from dfkd_edge.models.registry import checked_module, create_model, import_factory, register_model

MIN_WIDTH = 8
_WIDTHS = (8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256)


def _n_down(size: int) -> int:
    """Stride-2 stages so that the last feature map is about 4 wide."""
    return max(1, int(math.log2(max(size, 2) / 4)) + 1) if size >= 8 else 0


class ConvNet(nn.Module):
    """conv-BN-ReLU stem, ``n_down`` stride-2 stages (width doubling, capped at 4x), a
    conv at the last resolution, global average pooling and a linear classifier."""

    def __init__(self, dims: int, in_channels: int, num_classes: int, width: int, spatial: int):
        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv1d
        bn = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
        pool = nn.AdaptiveAvgPool2d(1) if dims == 2 else nn.AdaptiveAvgPool1d(1)

        def block(cin, cout, stride):
            return [conv(cin, cout, 3, stride=stride, padding=1, bias=False), bn(cout), nn.ReLU(inplace=True)]

        layers = block(in_channels, width, 1)
        c = width
        for i in range(_n_down(spatial)):
            nxt = min(width * 2 ** (i + 1), width * 4)
            layers += block(c, nxt, 2)
            c = nxt
        layers += block(c, c, 1)
        self.features = nn.Sequential(*layers, pool, nn.Flatten())
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x))


def _stage_widths(width: int, spatial: int) -> list[int]:
    """ConvNet's stride-2 stages: the width doubles per stage, capped at 4x."""
    return [min(width * 2 ** (i + 1), width * 4) for i in range(_n_down(spatial))]


class _BasicBlock(nn.Module):
    """ResNet's basic block: two 3x3 conv-BN, the input added back (through a 1x1 conv-BN when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
                                  nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(cout))
        self.skip = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.body(x) + self.skip(x))


class _InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expansion (x4), 3x3 depthwise, 1x1 projection; the input added back when it can."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int = 4) -> None:
        super().__init__()
        hid = cin * expand
        self.body = nn.Sequential(
            nn.Conv2d(cin, hid, 1, bias=False), nn.BatchNorm2d(hid), nn.ReLU6(inplace=True),
            nn.Conv2d(hid, hid, 3, stride, 1, groups=hid, bias=False), nn.BatchNorm2d(hid), nn.ReLU6(inplace=True),
            nn.Conv2d(hid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.body(x) if self.residual else self.body(x)


class BlockNet(nn.Module):
    """A conv-BN-ReLU stem, one ``block`` per stride-2 stage (ConvNet's widths) and one at the last resolution,
    global average pooling and a linear classifier."""

    def __init__(self, block, in_channels: int, num_classes: int, width: int, spatial: int) -> None:
        super().__init__()
        layers = [nn.Conv2d(in_channels, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        c = width
        for nxt in _stage_widths(width, spatial):
            layers.append(block(c, nxt, 2))
            c = nxt
        layers.append(block(c, c, 1))
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x))


class InputNorm(nn.Module):
    """(x - mean) / std per feature, fixed (buffers): the teacher's input domain, so that features of
    very different scales reach the first layer alike. Exported as Sub and Div, which ONNX Runtime's
    int8 quantizers leave in float: the raw input is never quantized per tensor."""

    def __init__(self, mean, std) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def forward(self, x):
        return (x - self.mean) / self.std


class MLP(nn.Module):
    def __init__(self, in_features: int, num_classes: int, width: int, input_norm: dict | None = None):
        super().__init__()
        self.input_norm = InputNorm(input_norm["mean"], input_norm["std"]) if input_norm else nn.Identity()
        self.features = nn.Sequential(
            nn.Linear(in_features, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True),
            nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x):
        return self.classifier(self.features(self.input_norm(x)))


@register_model
def conv2d(input_shape, num_classes, width=16):
    c, h, w = input_shape
    return ConvNet(2, c, num_classes, width, min(h, w))


@register_model
def resnet(input_shape, num_classes, width=16):
    c, h, w = input_shape
    return BlockNet(_BasicBlock, c, num_classes, width, min(h, w))


@register_model
def mbv2(input_shape, num_classes, width=16):
    c, h, w = input_shape
    return BlockNet(_InvertedResidual, c, num_classes, width, min(h, w))


@register_model
def conv1d(input_shape, num_classes, width=16):
    c, length = input_shape
    return ConvNet(1, c, num_classes, width, length)


@register_model
def mlp(input_shape, num_classes, width=64, input_norm=None):
    (f,) = input_shape
    return MLP(f, num_classes, width, input_norm)


@register_model
def factory(input_shape, num_classes, width=0, factory=None):
    """A user's student: ``factory`` (package.module:function) called with the input shape and the classes."""
    fn = import_factory(factory, "--student-factory")
    return checked_module(fn(tuple(input_shape), num_classes), factory, "--student-factory")


#: family by input rank (without batch)
STUDENT_FAMILIES = {3: "conv2d", 2: "conv1d", 1: "mlp"}
#: every family that takes inputs of a rank (the first is the rank's default)
RANK_FAMILIES = {3: ("conv2d", "resnet", "mbv2"), 2: ("conv1d",), 1: ("mlp",)}
WIDTHS = _WIDTHS


def count_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def auto_student(input_shape, num_classes, teacher_params: int, budget: float = 0.25) -> tuple[str, int]:
    """(family, width): the widest width whose parameters fit ``budget`` x the teacher's."""
    family = STUDENT_FAMILIES[len(input_shape)]
    return family, _widest_within(family, input_shape, num_classes, teacher_params, budget)


def _widest_within(family: str, input_shape, num_classes, teacher_params: int, budget: float = 0.25) -> int:
    best = MIN_WIDTH
    for w in _WIDTHS:
        if count_params(create_model(family, input_shape=input_shape, num_classes=num_classes, width=w)) \
                <= budget * teacher_params:
            best = w
    return best


def create_student(name: str, input_shape, num_classes: int, teacher_params: int,
                   width: int | None = None, domain=None, factory: str | None = None) -> tuple[nn.Module, dict]:
    """Build a student by name ('auto', 'conv2d', 'conv1d', 'mlp'); returns it and its recipe.

    An MLP (feature vectors, whose features may differ in scale by orders of magnitude) starts
    with the teacher's input ``domain`` as a fixed per-feature normalisation when one was given or
    read (not when N(0, 1) was assumed)."""
    rank = len(input_shape)
    known = sorted({f for fams in RANK_FAMILIES.values() for f in fams})
    if factory:  # the user's own: recorded by name, built (and checked) now
        recipe = {"name": "factory", "factory": factory, "input_shape": list(input_shape), "num_classes": num_classes,
                  "width": 0}
        torch.manual_seed(0)
        return build_from_recipe(recipe), recipe
    if name == "auto":
        family, auto_w = auto_student(input_shape, num_classes, teacher_params)
        width = width or auto_w
    else:
        family = name
        if family not in known:
            raise UserError(f"unknown --student {name!r}; known: auto, {', '.join(known)}")
        if family not in RANK_FAMILIES[rank]:
            raise UserError(f"--student {family} does not take inputs of shape {tuple(input_shape)}; "
                            f"use {' or '.join(RANK_FAMILIES[rank])} or auto")
        width = width or _widest_within(family, input_shape, num_classes, teacher_params)
    recipe = {"name": family, "input_shape": list(input_shape), "num_classes": num_classes, "width": int(width)}
    norm = _input_norm(domain, input_shape) if family == "mlp" else None
    if norm:
        recipe["input_norm"] = norm
    torch.manual_seed(0)  # the caller re-seeds; this keeps construction itself deterministic
    return build_from_recipe(recipe), recipe


def _input_norm(domain, input_shape) -> dict | None:
    if domain is None or domain.source == "assumed" or domain.mean is None:
        return None
    (f,) = input_shape
    mean, std = list(domain.mean), list(domain.std)
    if len(mean) == 1:
        mean, std = mean * f, std * f
    if len(mean) != f:
        return None
    return {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}


def build_from_recipe(recipe: dict) -> nn.Module:
    """The student a recipe describes (multi-header students add headers, aggregation, family)."""
    extra = {k: recipe[k] for k in ("headers", "aggregation", "family", "input_norm", "factory") if k in recipe}
    return create_model(recipe["name"], input_shape=tuple(recipe["input_shape"]),
                        num_classes=recipe["num_classes"], width=recipe["width"], **extra)
