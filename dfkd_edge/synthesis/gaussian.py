"""The baseline: inputs drawn from N(mean, std^2) of the teacher's input domain (dfkd_edge.domain)."""

from __future__ import annotations

import torch

from dfkd_edge.synthesis.base import Synthesizer, register_method


@register_method
class GaussianSynthesizer(Synthesizer):
    name = "gaussian"

    def sample(self, n: int, task=None) -> torch.Tensor:
        x = self.domain.draw(n, self.input_shape, self.generator)
        if task is not None:
            task.advance(1)
        return x
