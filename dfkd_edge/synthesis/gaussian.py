"""The baseline: inputs drawn from N(0, 1) (the teacher's inputs are assumed normalised)."""

from __future__ import annotations

import torch

from dfkd_edge.synthesis.base import Synthesizer, register_method


@register_method
class GaussianSynthesizer(Synthesizer):
    name = "gaussian"

    def sample(self, n: int, task=None) -> torch.Tensor:
        x = torch.randn((n, *self.input_shape), generator=self.generator)
        if task is not None:
            task.advance(1)
        return x
