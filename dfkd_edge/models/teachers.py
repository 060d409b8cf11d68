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
