"""BatchNorm-statistics inversion (DeepInversion, Yin et al., CVPR 2020).

Each batch starts where ``dfkd_edge.synthesis.start`` says (dead-leaves images for image teachers,
the input domain's noise otherwise) and is optimised with Adam so that

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

from dfkd_edge.synthesis.base import InputOptimizer, balanced_labels, register_method

log = logging.getLogger(__name__)


@register_method
class DeepInversionSynthesizer(InputOptimizer):
    name = "deepinversion"

    def __init__(self, teacher, bn_weight: float = 1.0, first_bn_weight: float = 1.0, ce_weight: float = 1.0,
                 **kw) -> None:
        super().__init__(teacher, **kw)
        self.bn_weight, self.first_bn_weight, self.ce_weight = bn_weight, first_bn_weight, ce_weight
        if not teacher.spec.bn_layers:
            log.warning("the teacher has no BatchNorm layers that can be observed: inversion uses "
                        "only the label and smoothness terms")

    def batch_context(self, n: int) -> torch.Tensor:
        return balanced_labels(n, self.teacher.spec.num_classes, self.generator)

    def loss(self, x, logits, rec, y):
        loss_ce = F.cross_entropy(logits, y)
        loss_bn = self.bn_loss(rec)
        return self.ce_weight * loss_ce + self.bn_weight * loss_bn, {"ce": loss_ce, "bn": loss_bn}
