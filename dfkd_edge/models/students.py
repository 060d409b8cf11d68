"""The student zoo: a conv 2-D, a conv 1-D and an MLP family, each with a width knob.

``--student auto`` picks the family by input rank and the widest member whose parameter
count stays within ``budget`` (default 1/4) of the teacher's; the width never drops below
``MIN_WIDTH`` (so a very small teacher can get a student above the budget). The families are deliberately plain (conv-BN-ReLU, global pooling, one
linear head) so that ONNX export folds BN into the convolutions and every layer quantizes.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dfkd_edge.errors import UserError
from dfkd_edge.models.registry import create_model, register_model

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
def conv1d(input_shape, num_classes, width=16):
    c, length = input_shape
    return ConvNet(1, c, num_classes, width, length)


@register_model
def mlp(input_shape, num_classes, width=64, input_norm=None):
    (f,) = input_shape
    return MLP(f, num_classes, width, input_norm)


#: family by input rank (without batch)
STUDENT_FAMILIES = {3: "conv2d", 2: "conv1d", 1: "mlp"}


def count_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def auto_student(input_shape, num_classes, teacher_params: int, budget: float = 0.25) -> tuple[str, int]:
    """(family, width): the widest width whose parameters fit ``budget`` x the teacher's."""
    family = STUDENT_FAMILIES[len(input_shape)]
    best = MIN_WIDTH
    for w in _WIDTHS:
        if count_params(create_model(family, input_shape=input_shape, num_classes=num_classes, width=w)) \
                <= budget * teacher_params:
            best = w
    return family, best


def create_student(name: str, input_shape, num_classes: int, teacher_params: int,
                   width: int | None = None, domain=None) -> tuple[nn.Module, dict]:
    """Build a student by name ('auto', 'conv2d', 'conv1d', 'mlp'); returns it and its recipe.

    An MLP (feature vectors, whose features may differ in scale by orders of magnitude) starts
    with the teacher's input ``domain`` as a fixed per-feature normalisation when one was given or
    read (not when N(0, 1) was assumed)."""
    rank = len(input_shape)
    if name == "auto":
        family, auto_w = auto_student(input_shape, num_classes, teacher_params)
        width = width or auto_w
    else:
        family = name
        if family not in STUDENT_FAMILIES.values():
            raise UserError(f"unknown --student {name!r}; known: auto, {', '.join(sorted(STUDENT_FAMILIES.values()))}")
        if STUDENT_FAMILIES[rank] != family:
            raise UserError(f"--student {family} does not take inputs of shape {tuple(input_shape)}; "
                            f"use {STUDENT_FAMILIES[rank]} or auto")
        width = width or auto_student(input_shape, num_classes, teacher_params)[1]
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
    extra = {k: recipe[k] for k in ("headers", "aggregation", "family", "input_norm") if k in recipe}
    return create_model(recipe["name"], input_shape=tuple(recipe["input_shape"]),
                        num_classes=recipe["num_classes"], width=recipe["width"], **extra)
