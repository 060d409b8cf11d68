"""Where an inversion starts: dead leaves for images, the domain's noise for signals and vectors."""

import torch

from dfkd_edge.domain import InputDomain
from dfkd_edge.synthesis.start import LEAVES, PIXEL_NOISE, dead_leaves, start_points


def _neighbour_msd(x: torch.Tensor) -> float:
    """Mean squared difference of horizontally neighbouring pixels."""
    return float(x.diff(dim=-1).pow(2).mean())


def test_dead_leaves_are_flat_shapes_with_the_domains_spread():
    g = torch.Generator().manual_seed(0)
    x = dead_leaves(512, (3, 12, 12), g)
    assert x.shape == (512, 3, 12, 12) and torch.isfinite(x).all()
    # colours N(0, 1) per channel: the domain's mean and spread once mapped by mean + std * u
    assert abs(float(x.mean())) < 0.1 and 0.85 < float(x.std()) < 1.15
    # flat regions: neighbours differ by about the pixel noise, not by two unit variances as noise does
    assert _neighbour_msd(x) < 0.5 * _neighbour_msd(torch.randn(512, 3, 12, 12))
    # each image has its own shapes: several distinct colours inside, and images differ from each other
    first = x[0, 0]
    assert (first - first.mean()).abs().max() > 3 * PIXEL_NOISE
    assert float((x[0] - x[1]).abs().mean()) > 0.1


def test_dead_leaves_are_reproducible_and_scale_with_the_image():
    a = dead_leaves(8, (1, 8, 8), torch.Generator().manual_seed(3))
    b = dead_leaves(8, (1, 8, 8), torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    big = dead_leaves(4, (3, 96, 64), torch.Generator().manual_seed(0))
    assert big.shape == (4, 3, 96, 64)
    # the same picture at a larger size: shapes a twelfth of the image and up, so as flat as at 12x12
    small = dead_leaves(64, (3, 12, 12), torch.Generator().manual_seed(0))
    assert _neighbour_msd(big) < 2 * _neighbour_msd(small)
    assert LEAVES[0] >= 1


def test_start_points_pick_by_rank():
    d = InputDomain([0.0], [1.0], level_std=[0.5], smooth_std=[0.1])
    for shape in ((1, 40), (30,)):  # signals and vectors: the domain's noise, unchanged
        d_vec = InputDomain([0.0] * shape[0], [1.0] * shape[0]) if len(shape) == 1 else d
        got = start_points(d_vec, 16, shape, torch.Generator().manual_seed(1))
        assert torch.equal(got, d_vec.noise(16, shape, torch.Generator().manual_seed(1)))
    img = start_points(d, 16, (1, 8, 8), torch.Generator().manual_seed(1))
    assert torch.equal(img, dead_leaves(16, (1, 8, 8), torch.Generator().manual_seed(1)))


def test_half_start_is_dead_leaves_then_noise():
    d = InputDomain([0.0] * 3, [1.0] * 3)
    got = start_points(d, 64, (3, 12, 12), torch.Generator().manual_seed(2), "half")
    g = torch.Generator().manual_seed(2)
    want = torch.cat([dead_leaves(32, (3, 12, 12), g), d.noise(32, (3, 12, 12), g)])
    assert torch.equal(got, want)
    assert _neighbour_msd(got[:32]) < 0.5 * _neighbour_msd(got[32:])


def test_the_report_says_every_start_in_words():
    from dfkd_edge.report.render import _STARTS
    from dfkd_edge.synthesis.start import STARTS, resolve_start

    kinds = {resolve_start(k, (3, 12, 12)) for k in STARTS} | {resolve_start("auto", (1, 40))}
    assert kinds <= set(_STARTS)
