"""KD's moved copies (--shift): what _shift does to a sample, and that the teacher is asked about them."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dfkd_edge.distill import KDConfig, distill
from dfkd_edge.moves import shift_samples as _shift
from dfkd_edge.models import create_model


def _offsets(sample: torch.Tensor, moved: torch.Tensor, pad: int, axis: int) -> set[int]:
    """The offsets along ``axis`` at which ``moved`` is a window of ``sample`` padded by replication."""
    padded = F.pad(sample[None], [pad, pad] if sample.dim() == 2 else
                   ([0, 0, pad, pad] if axis == 1 else [pad, pad, 0, 0]), mode="replicate")[0]
    size = sample.shape[axis]
    return {o for o in range(2 * pad + 1) if torch.equal(padded.narrow(axis, o, size), moved)}


def test_a_signal_is_moved_by_at_most_an_eighth_with_edges_replicated():
    x = torch.arange(64.0).repeat(200, 2, 1) + 1000 * torch.arange(200.0)[:, None, None]
    moved = _shift(x, torch.Generator().manual_seed(0))
    assert moved.shape == x.shape
    seen = set()
    for s, m in zip(x, moved):
        found = _offsets(s, m, 8, 1)
        assert len(found) == 1, "each sample is one window of itself, both channels moved alike"
        seen |= found
    assert seen == set(range(17)), "every offset from -8 to +8 occurs"


def test_an_image_moves_along_both_axes_independently():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(300, 3, 12, 10, generator=g)
    moved = _shift(x, torch.Generator().manual_seed(2))
    rows, cols = set(), set()
    for s, m in zip(x, moved):
        padded = F.pad(s[None], [1, 1, 2, 2], mode="replicate")[0]  # round(10/8) = 1, round(12/8) = 2
        hits = [(oy, ox) for oy in range(5) for ox in range(3)
                if torch.equal(padded[:, oy:oy + 12, ox:ox + 10], m)]
        assert len(hits) == 1
        rows.add(hits[0][0])
        cols.add(hits[0][1])
    assert rows == set(range(5)) and cols == set(range(3))


def test_shift_is_reproducible_from_its_generator():
    x = torch.randn(16, 1, 40)
    a = _shift(x, torch.Generator().manual_seed(5))
    assert torch.equal(a, _shift(x, torch.Generator().manual_seed(5)))
    assert not torch.equal(a, _shift(x, torch.Generator().manual_seed(6)))


class _Spy:
    """A teacher that records what it is asked about."""

    def __init__(self):
        self.seen = []

    def __call__(self, xb):
        self.seen.append(xb.clone())
        return torch.zeros(len(xb), 3)


@pytest.mark.parametrize("shape", [(1, 32), (1, 8, 8)])
@pytest.mark.parametrize("shift", [True, False])
def test_the_teacher_labels_moved_copies_only_with_shift(shape, shift):
    ramp = torch.arange(float(np.prod(shape))).view(shape)
    x = ramp.repeat(64, *[1] * len(shape)).numpy()  # identical samples: mixing them changes nothing
    student = create_model("conv1d" if len(shape) == 2 else "conv2d", input_shape=shape, num_classes=3, width=4)
    spy = _Spy()
    distill(student, x, np.zeros((64, 3), np.float32), KDConfig(epochs=1, batch_size=32, shift=shift),
            teacher=spy)
    assert len(spy.seen) == 2
    asked = torch.cat(spy.seen)
    unmoved = torch.isclose(asked, ramp.expand_as(asked)).flatten(1).all(1)
    if shift:
        assert (~unmoved).sum() > 32  # offset p along every axis (1 in 9 here) is no move
    else:
        assert unmoved.all()
