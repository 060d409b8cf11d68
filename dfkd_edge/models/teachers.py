"""The built-in demo teacher's architecture (also usable with --factory)."""

from __future__ import annotations

from torch import nn

from dfkd_edge.models.registry import register_model


class DigitsCNN(nn.Module):
    """A small CNN for 1x8x8 digits: three conv-BN-ReLU blocks, a hidden FC layer, a classifier.

    The hidden FC layer (``fc``) gives the intermediate feature space the soft-target
    synthesis models (Wang, AAAI 2021 uses a hidden fully connected layer too).
    """

    def __init__(self, num_classes: int = 10, width: int = 32, hidden: int = 128):
        super().__init__()

        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        self.features = nn.Sequential(
            *block(1, width), *block(width, 2 * width), nn.MaxPool2d(2),
            *block(2 * width, 2 * width), nn.MaxPool2d(2), nn.Flatten())
        self.fc = nn.Sequential(nn.Linear(2 * width * 4, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, x):
        return self.classifier(self.fc(self.features(x)))


@register_model
def digits_cnn(num_classes: int = 10, width: int = 32, hidden: int = 128, **_):
    return DigitsCNN(num_classes, width, hidden)


def digits_cnn_small_for_tests():
    """A tiny DigitsCNN (width 8, hidden 16), used by the test-suite's --factory cases."""
    return DigitsCNN(10, 8, 16)


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                      if stride != 1 or cin != cout else nn.Identity())
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.short(x))


class CifarResNet(nn.Module):
    """ResNet with basic blocks and the CIFAR stem (3x3 conv, no max-pool), as the DFKD papers'
    CIFAR teachers are (He et al. 2016; the DataFree codebases' resnet34 for 32x32 inputs)."""

    def __init__(self, blocks=(3, 4, 6, 3), num_classes: int = 10, width: int = 64, in_ch: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_ch, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(inplace=True))
        layers, cin = [], width
        for i, n in enumerate(blocks):
            cout = width * 2 ** i
            for j in range(n):
                layers.append(_BasicBlock(cin, cout, 2 if (j == 0 and i > 0) else 1))
                cin = cout
        self.layers = nn.Sequential(*layers)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.classifier(self.pool(self.layers(self.stem(x))))


@register_model
def resnet34_cifar(num_classes: int = 10, width: int = 64, **_):
    """ResNet-34 for 3x32x32 inputs (21.3M parameters at width 64): the synthesis-throughput teacher."""
    return CifarResNet((3, 4, 6, 3), num_classes, width)
