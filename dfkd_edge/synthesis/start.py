"""Where an input optimiser's samples start: a draw in the teacher's input domain, in its units ``u``.

Vectors and signals start from the domain's noise (``InputDomain.noise``). Images (inputs of rank 3,
channels x height x width) start from a *dead-leaves* image (Matheron's occlusion model, the classic
model of natural images' statistics: Lee, Mumford and Huang, IJCV 2001): a background and a few
flat shapes, discs and rectangles, laid over each other, sizes scale-invariant (density ~ r^-3
between max(1 pixel, a 12th of the image) and half the image), each shape one colour drawn from the
domain (N(0, 1) per channel in ``u``, so ``mean + std * u`` has the domain's mean and spread), plus a
little per-pixel noise. Nothing in it comes from a data set; only the size of the image and the domain set it.

Why: an inversion started from per-pixel noise stays per-pixel noise where the teacher's BatchNorm
statistics do not rule it out (on the zoo's colour-shapes teachers it matches them better than the
real images do, docs/benchmarks.md), and a student distilled on noise learns the teacher where no
image of its task lies. Started from flat regions and edges, the optimiser keeps more of them: on the
zoo's shapes teachers the students gained 5.5-6 points (three seeds), the digits teachers moved by -0.6
to +0.3 (docs/benchmarks.md, "Where does the inversion of an image teacher start?").
"""

from __future__ import annotations

import torch

from dfkd_edge.errors import UserError

#: per-pixel noise on top of the flat shapes, in domain standard deviations
PIXEL_NOISE = 0.1
#: shapes per image, drawn uniformly
LEAVES = (4, 24)


#: ``--synth-start``: auto (dead leaves for images, noise otherwise), dead-leaves (images only), noise,
#: half (images only: the first half of each batch dead leaves, the rest noise; measured no better)
STARTS = ("auto", "dead-leaves", "noise", "half")


def check_start(kind: str) -> None:
    """UserError (exit 2) on a ``--synth-start`` that is not one of STARTS: needs no teacher."""
    if kind not in STARTS:
        raise UserError(f"--synth-start must be one of {', '.join(STARTS)}, got {kind!r}")


def resolve_start(kind: str, input_shape: tuple[int, ...]) -> str:
    """``kind`` for inputs of ``input_shape``: "dead-leaves", "noise" or "half" (UserError where it cannot apply)."""
    check_start(kind)
    image = len(input_shape) == 3
    if kind in ("dead-leaves", "half") and not image:
        raise UserError(f"--synth-start {kind} draws images (channels x height x width); the teacher takes "
                        f"inputs of shape {tuple(input_shape)}: use auto or noise")
    if kind == "auto":
        return "dead-leaves" if image else "noise"
    return kind


def start_points(domain, n: int, input_shape: tuple[int, ...], generator: torch.Generator,
                 kind: str = "auto") -> torch.Tensor:
    """``u`` for ``n`` samples: dead leaves or the domain's noise (``resolve_start``)."""
    kind = resolve_start(kind, input_shape)
    if kind == "noise":
        return domain.noise(n, input_shape, generator)
    scale = domain.start_scale(input_shape)  # dead leaves at the domain's whole spread, where it says so

    def leaves(k: int) -> torch.Tensor:
        u = dead_leaves(k, input_shape, generator)
        return u if scale is None else u * scale

    if kind == "half":  # the first half of each batch dead leaves, the rest noise
        k = n // 2
        return torch.cat([leaves(k), domain.noise(n - k, input_shape, generator)])
    return leaves(n)


def _uniform(shape, generator: torch.Generator, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator)


def dead_leaves(n: int, input_shape: tuple[int, int, int], generator: torch.Generator) -> torch.Tensor:
    """``n`` dead-leaves images, (n, C, H, W), colours N(0, 1) per channel and shape."""
    c, h, w = input_shape
    size = max(h, w)
    lo, hi = LEAVES
    yy = torch.arange(h, dtype=torch.float32).view(1, h, 1)
    xx = torch.arange(w, dtype=torch.float32).view(1, 1, w)
    x = torch.randn((n, c, 1, 1), generator=generator).expand(n, c, h, w).clone()  # the background
    count = torch.randint(lo, hi + 1, (n,), generator=generator)
    rmin, rmax = max(1.0, size / 12), max(size / 2, 1.5)  # the same picture at any size above 12 pixels
    for k in range(hi):
        # scale-invariant sizes: inverse CDF of the r^-3 density on [rmin, rmax]
        q = _uniform((n, 1, 1), generator)
        r = (rmin ** -2 - q * (rmin ** -2 - rmax ** -2)) ** -0.5
        cy, cx = _uniform((n, 1, 1), generator, 0, h), _uniform((n, 1, 1), generator, 0, w)
        aspect = _uniform((n, 1, 1), generator, 0.3, 1.0)
        upright = torch.rand((n, 1, 1), generator=generator) < 0.5
        ry, rx = torch.where(upright, r / aspect, r * aspect), torch.where(upright, r * aspect, r / aspect)
        disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r ** 2
        rect = ((yy - cy).abs() <= ry) & ((xx - cx).abs() <= rx)
        mask = torch.where(torch.rand((n, 1, 1), generator=generator) < 0.5, disc, rect)
        mask = mask & (k < count).view(n, 1, 1)
        colour = torch.randn((n, c, 1, 1), generator=generator)
        x = torch.where(mask.unsqueeze(1), colour, x)
    return x + PIXEL_NOISE * torch.randn(x.shape, generator=generator)
