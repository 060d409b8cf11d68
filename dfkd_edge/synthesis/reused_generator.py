"""A generator reused across batches, few steps per batch: the recipe of Fast-DFKD (Fang et al.,
"Up to 100x Faster Data-free Knowledge Distillation", AAAI 2022), without its student.

DeepInversion optimises every batch from noise for ``iterations`` steps. Here a generator G (the
adversarial method's, dfkd_edge.models.generators) carries what earlier batches learned: each batch
starts from a copy of a *meta* generator, optimises that copy and the batch's noise z for a few
steps on DeepInversion's objective (cross-entropy to balanced labels + BatchNorm statistics,
standardised per layer as for every generator here (dfkd_edge.synthesis.adversarial), + smoothness
and L2 priors), emits G(z), and moves the meta generator towards the copy (a Reptile step, as
Fast-DFKD's meta-learned initialisation does with its ``reptile`` interpolation).

Chosen here (Fast-DFKD's own values are for CIFAR on GPUs; ours measured on the digits teacher,
docs/benchmarks.md): the first batch is a warm-up of ``iterations`` steps (the flag DeepInversion
uses); later batches take ``steps`` = max(1, iterations // 10) steps; Adam lr 1e-3 for G and 0.05
for z, betas (0.5, 0.999); Reptile step 0.5. Fast-DFKD's adversarial term against the student is
left out: this is a transfer-set method (the student trains afterwards), like DeepInversion.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from dfkd_edge.compute import Compute
from dfkd_edge.synthesis.adversarial import GeneratorSynthesizer
from dfkd_edge.synthesis.base import balanced_labels, register_method, smoothness_prior


@register_method
class ReusedGeneratorSynthesizer(GeneratorSynthesizer):
    name = "reused-generator"

    def __init__(self, teacher, iterations: int = 200, steps: int | None = None, lr_g: float = 1e-3,
                 lr_z: float = 0.05, reptile: float = 0.5, bn_weight: float = 1.0, ce_weight: float = 1.0,
                 tv_weight: float = 1e-2, l2_weight: float = 1e-4, z_dim: int = 100, **kw) -> None:
        super().__init__(teacher, z_dim=z_dim, **kw)
        self.warmup = int(iterations)
        self.steps = int(steps) if steps else max(1, self.warmup // 10)
        self.lr_g, self.lr_z, self.reptile = lr_g, lr_z, reptile
        self.bn_weight, self.ce_weight, self.tv_weight, self.l2_weight = bn_weight, ce_weight, tv_weight, l2_weight
        self.batches_done = 0

    def steps_per_batch(self) -> int:
        return self.steps

    def sample(self, n: int, task=None) -> torch.Tensor:
        compute = getattr(self, "compute", None) or Compute()
        dev = compute.torch_device
        y = balanced_labels(n, self.teacher.spec.num_classes, self.generator).to(dev)
        z = self._z(n).to(dev).requires_grad_(True)
        meta = self.generator_net.to(dev)
        mean, std = (t.to(dev) for t in self.domain.tensors(self.input_shape))
        g = copy.deepcopy(meta).train()
        opt = torch.optim.Adam([{"params": g.parameters(), "lr": self.lr_g}, {"params": [z], "lr": self.lr_z}],
                               betas=(0.5, 0.999))
        scaler = compute.grad_scaler()
        k = self.warmup if self.batches_done == 0 else self.steps
        for step in range(k):
            x = g(z)
            with self.teacher.taps() as rec, compute.autocast():
                logits = self.teacher(compute.to(x))
            ce = F.cross_entropy(logits.float(), y)
            bn = self.bn_loss(rec.bn_inputs())
            u = (x - mean) / std  # the priors in units of the input's own scale (dfkd_edge.domain)
            loss = (self.ce_weight * ce + self.bn_weight * bn + self.tv_weight * smoothness_prior(u)
                    + self.l2_weight * u.pow(2).mean())
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            if task is not None and step < self.steps:  # the warm-up's extra steps are not in the total
                show = step % 10 == 9 or step == k - 1
                task.advance(1, samples=getattr(self, "samples_done", 0),
                             **({"ce": float(ce.detach()), "bn": float(bn.detach())} if show else {}))
        with torch.no_grad():
            x = g(z)
            for pm, pg in zip(meta.parameters(), g.parameters()):  # Reptile: the meta generator moves
                pm.add_(pg - pm, alpha=self.reptile)
            for bm, bg in zip(meta.buffers(), g.buffers()):
                bm.copy_(bg)
        self.batches_done += 1
        return x.detach().float().cpu().contiguous()
