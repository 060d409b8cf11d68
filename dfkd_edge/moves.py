"""Moves of images and signals: each sample shifted by a few positions (KD's moved copies, inversion's jitter)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def shift_samples(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Each sample (N, C, *spatial) moved by a random whole number of positions (up to 1/8 of each
    spatial size, at least 1) along every spatial axis, edges replicated. The transfer set is a few
    thousand inverted samples; moved copies labelled by the teacher online cover positions the
    inversion did not. Differentiable in ``x`` (a gather), so an inversion can show the teacher
    moved copies too."""
    n, c, *spatial = x.shape
    ones = [1] * len(spatial)
    pads = [max(1, round(size / 8)) for size in spatial]
    padded = F.pad(x, [p for p in reversed(pads) for _ in (0, 1)], mode="replicate")
    index = [torch.arange(n).view(n, 1, *ones), torch.arange(c).view(1, c, *ones)]
    for axis, (size, pad) in enumerate(zip(spatial, pads)):
        offset = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
        shape = [n, 1, *ones]
        shape[2 + axis] = size
        index.append((offset[:, None] + torch.arange(size)).view(shape))
    return padded[tuple(index)]
