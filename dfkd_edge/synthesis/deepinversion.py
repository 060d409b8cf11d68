"""BatchNorm-statistics inversion (DeepInversion, Yin et al., CVPR 2020).

Each batch starts from Gaussian noise and is optimised with Adam so that

    loss = ce_weight * CE(teacher(x), y)            y: balanced labels drawn per batch
         + bn_weight * sum_l ||mu_l(x) - mu_l|| + ||var_l(x) - var_l||   (BN running stats)
         + tv_weight * TV(x)                         smoothness along each spatial axis
         + l2_weight * mean(x^2)

Works for any input rank: the BN term uses whatever BN layers the teacher has (BatchNorm1d
on vectors included) and the smoothness term is zero for vectors. Without BN layers (or when
the teacher cannot be tapped) only CE and the priors remain; a warning says so.

Defaults were chosen by measurement on the digits teacher (docs/benchmarks.md).
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

from dfkd_edge.synthesis.base import Synthesizer, bn_statistics_loss, register_method, smoothness_prior

log = logging.getLogger(__name__)


@register_method
class DeepInversionSynthesizer(Synthesizer):
    name = "deepinversion"

    def __init__(self, teacher, iterations: int = 200, lr: float = 0.1, bn_weight: float = 1.0,
                 first_bn_weight: float = 1.0, ce_weight: float = 1.0, tv_weight: float = 1e-2,
                 l2_weight: float = 1e-4, **kw) -> None:
        super().__init__(teacher, **kw)
        self.iterations = int(iterations)
        self.lr, self.bn_weight, self.first_bn_weight = lr, bn_weight, first_bn_weight
        self.ce_weight, self.tv_weight, self.l2_weight = ce_weight, tv_weight, l2_weight
        if not teacher.spec.bn_layers:
            log.warning("the teacher has no BatchNorm layers that can be observed: inversion uses "
                        "only the label and smoothness terms")

    def steps_per_batch(self) -> int:
        return self.iterations

    def _labels(self, n: int) -> torch.Tensor:
        k = self.teacher.spec.num_classes
        y = torch.arange(n) % k
        return y[torch.randperm(n, generator=self.generator)]

    def sample(self, n: int, task=None) -> torch.Tensor:
        y = self._labels(n)
        x = torch.randn((n, *self.input_shape), generator=self.generator).requires_grad_(True)
        opt = torch.optim.Adam([x], lr=self.lr, betas=(0.5, 0.99))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, self.iterations)
        for _ in range(self.iterations):
            with self.teacher.taps() as rec:
                logits = self.teacher(x)
            loss_ce = F.cross_entropy(logits, y)
            loss_bn = bn_statistics_loss(rec.bn_inputs(), self.first_bn_weight)
            loss = (self.ce_weight * loss_ce + self.bn_weight * loss_bn
                    + self.tv_weight * smoothness_prior(x) + self.l2_weight * x.pow(2).mean())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if task is not None:
                task.advance(1, ce=float(loss_ce.detach()), bn=float(loss_bn.detach()))
        return x.detach()
