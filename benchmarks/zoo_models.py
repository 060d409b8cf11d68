"""Architectures of the benchmark teacher zoo (benchmarks/zoo.py), and the zero-argument factories
the zoo's state_dict teachers are loaded with (``--factory zoo_models:NAME`` with this folder on
PYTHONPATH).

Families: nn.Sequential CNNs with MaxPool, residual CNNs (additions), depthwise-separable CNNs with
ReLU6 / hard-swish, MLPs whose first layer is a BatchNorm (unscaled tabular features) or a Linear
followed by BatchNorm, and a CNN without any BatchNorm; 1-D and 2-D versions where they apply.
"""

from __future__ import annotations

from torch import nn


def _conv(dims: int):
    return nn.Conv2d if dims == 2 else nn.Conv1d


def _bn(dims: int):
    return nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d


def _pool(dims: int):
    return nn.MaxPool2d if dims == 2 else nn.MaxPool1d


def _gap(dims: int):
    return nn.AdaptiveAvgPool2d(1) if dims == 2 else nn.AdaptiveAvgPool1d(1)


def seq_cnn(dims: int, cin: int, classes: int, width: int = 32, bn: bool = True) -> nn.Sequential:
    """conv-(BN)-ReLU x2, MaxPool, conv-(BN)-ReLU, MaxPool, FC-(BN)-ReLU, FC: one nn.Sequential."""
    C, B = _conv(dims), _bn(dims)

    def block(i, o):
        return [C(i, o, 3, padding=1, bias=not bn)] + ([B(o)] if bn else []) + [nn.ReLU()]

    return nn.Sequential(*block(cin, width), *block(width, 2 * width), _pool(dims)(2),
                         *block(2 * width, 2 * width), _pool(dims)(2), _gap(dims), nn.Flatten(),
                         nn.Linear(2 * width, 128), *([nn.BatchNorm1d(128)] if bn else []), nn.ReLU(),
                         nn.Linear(128, classes))


class ResBlock(nn.Module):
    def __init__(self, dims: int, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        C, B = _conv(dims), _bn(dims)
        self.conv1, self.bn1 = C(cin, cout, 3, stride, 1, bias=False), B(cout)
        self.conv2, self.bn2 = C(cout, cout, 3, 1, 1, bias=False), B(cout)
        self.short = (nn.Sequential(C(cin, cout, 1, stride, bias=False), B(cout))
                      if stride != 1 or cin != cout else nn.Identity())
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.bn2(self.conv2(self.act(self.bn1(self.conv1(x))))) + self.short(x))


class ResNet(nn.Module):
    """A small ResNet: stem conv-BN-ReLU, three residual stages (stride 1, 2, 2), GAP, FC."""

    def __init__(self, dims: int, cin: int, classes: int, width: int = 16) -> None:
        super().__init__()
        C, B = _conv(dims), _bn(dims)
        self.stem = nn.Sequential(C(cin, width, 3, 1, 1, bias=False), B(width), nn.ReLU())
        self.layers = nn.Sequential(ResBlock(dims, width, width, 1), ResBlock(dims, width, 2 * width, 2),
                                    ResBlock(dims, 2 * width, 4 * width, 2))
        self.pool = nn.Sequential(_gap(dims), nn.Flatten())
        self.fc = nn.Linear(4 * width, classes)

    def forward(self, x):
        return self.fc(self.pool(self.layers(self.stem(x))))


class DWBlock(nn.Module):
    """Depthwise 3x3 - BN - act - pointwise 1x1 - BN - act (MobileNet v1 style)."""

    def __init__(self, dims: int, cin: int, cout: int, stride: int, act) -> None:
        super().__init__()
        C, B = _conv(dims), _bn(dims)
        self.body = nn.Sequential(C(cin, cin, 3, stride, 1, groups=cin, bias=False), B(cin), act(),
                                  C(cin, cout, 1, bias=False), B(cout), act())

    def forward(self, x):
        return self.body(x)


class MobileNet(nn.Module):
    """Stem conv, four depthwise-separable blocks (ReLU6 or hard-swish), GAP, FC."""

    def __init__(self, dims: int, cin: int, classes: int, width: int = 16, act=nn.ReLU6) -> None:
        super().__init__()
        C, B = _conv(dims), _bn(dims)
        self.stem = nn.Sequential(C(cin, width, 3, 1, 1, bias=False), B(width), act())
        self.blocks = nn.Sequential(DWBlock(dims, width, 2 * width, 1, act), DWBlock(dims, 2 * width, 2 * width, 2, act),
                                    DWBlock(dims, 2 * width, 4 * width, 1, act),
                                    DWBlock(dims, 4 * width, 4 * width, 2, act))
        self.head = nn.Sequential(_gap(dims), nn.Flatten(), nn.Linear(4 * width, classes))

    def forward(self, x):
        return self.head(self.blocks(self.stem(x)))


def resnet18_style(cin: int, classes: int, width: int = 32) -> nn.Module:
    """ResNet-18's layout for small images (3x3 stem, no max-pool): four stages of two residual blocks,
    widths w, 2w, 4w, 8w, strides 1, 2, 2, 2; GAP, FC."""
    stages, c = [], width
    for i, w in enumerate((width, 2 * width, 4 * width, 8 * width)):
        stages += [ResBlock(2, c, w, 1 if i == 0 else 2), ResBlock(2, w, w, 1)]
        c = w
    return nn.Sequential(nn.Conv2d(cin, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(), *stages,
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, classes))


class InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expand - BN - act, 3x3 depthwise - BN - act, 1x1 project - BN; the input
    added back when the shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int, act) -> None:
        super().__init__()
        mid = cin * expand
        self.body = nn.Sequential(nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), act(),
                                  nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False), nn.BatchNorm2d(mid), act(),
                                  nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.add = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.body(x) if self.add else self.body(x)


def mobilenetv2_style(cin: int, classes: int, width: int = 16, act=nn.ReLU6) -> nn.Module:
    """MobileNetV2's inverted residuals (expansion 4) for small images: stem, five stages, 1x1 head conv."""
    layers, c = [nn.Conv2d(cin, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), act()], width
    for w, n, stride in ((width, 1, 1), (2 * width, 2, 2), (3 * width, 2, 2), (4 * width, 2, 2), (6 * width, 1, 1)):
        for i in range(n):
            layers.append(InvertedResidual(c, w, stride if i == 0 else 1, 4, act))
            c = w
    layers += [nn.Conv2d(c, 8 * width, 1, bias=False), nn.BatchNorm2d(8 * width), act(), nn.AdaptiveAvgPool2d(1),
               nn.Flatten(), nn.Linear(8 * width, classes)]
    return nn.Sequential(*layers)


def bn_first_mlp(features: int, classes: int, hidden: int = 64) -> nn.Sequential:
    """BatchNorm on the raw features first (the usual way to feed unscaled tabular data), then an MLP."""
    return nn.Sequential(nn.BatchNorm1d(features), nn.Linear(features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                         nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, classes))


def linear_bn_mlp(features: int, classes: int, hidden: int = 128) -> nn.Sequential:
    """Linear first, BatchNorm behind it."""
    return nn.Sequential(nn.Linear(features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                         nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, classes))


# --- factories of the zoo's state_dict teachers (zero arguments, as --factory wants) ---------------

def digitsz_dw():
    return MobileNet(2, 1, 10, width=16, act=nn.ReLU6)


def signal10_volts_res():
    return ResNet(1, 1, 10, width=16)


def tab5_mixed_bnfirst():
    return bn_first_mlp(20, 5)


def photo_seq():
    return seq_cnn(2, 3, 10)


def digits01_dw():
    return MobileNet(2, 1, 10, width=12, act=nn.Hardswish)
