"""Soft-targeted transfer-set synthesis (Wang, "Data-Free Knowledge Distillation with Soft
Targeted Transfer Set Synthesis", AAAI 2021).

The teacher's intermediate feature space, the input of its last linear layer, is modelled as a
multivariate normal N(mu, Sigma). Feature vectors sampled from it go through the classifier to
give *soft targets* over all classes jointly; pseudo samples start from noise and are optimised
until the teacher's output matches them (KL), with an activation regulariser.

What the paper's abstract gives and what is chosen here (measured in docs/benchmarks.md):

* Sigma = sigma^2 * R with R a correlation matrix built from the classifier's weights. Chosen:
  the rows of W (one weight vector per class) are L2-normalised and R is the correlation,
  across classes, between feature dimensions (D x D), shrunk towards the identity
  (R' = (1 - shrink) R + shrink I, shrink 0.1) so that it is positive definite (R alone has rank
  at most classes - 1).
* sigma: the paper's 1.5 is in the feature units of its MNIST LeNet-5; features of another
  teacher have another scale, and a spread too small for them gives every soft target the same
  top class (the method then collapsed to 15.6% on a [0, 1]-pixel teacher). Here the spread
  is read from the teacher's own classifier: ``sigma * 2^k`` times the RMS of the feature mean,
  the smallest k in -4..8 at which the top classes of 4,096 sampled soft targets cover the
  classes (normalised entropy of their histogram at least 0.9; the best k when none does).
* mu (unknown in the paper): ``mu="noise"`` (default) is the mean of the teacher's features on
  noise drawn in its input domain (dfkd_edge.domain), which needs no data; ``mu="zero"`` is the
  alternative measured.
* Soft targets: softmax(W f + b) for f ~ N(mu, Sigma).
* Loss per pseudo sample: KL(target || softmax(teacher(x))) + act_weight * activation term,
  the activation term being DAFL's -mean|features| (encourage the feature layer to fire);
  act_weight 0.05 (the paper's best for LeNet-5), plus DeepInversion's BatchNorm-statistics prior
  (``bn_weight``, default 1 as DeepInversion's; 0 gives the paper's loss alone) and the same
  smoothness and L2 priors: without a prior that ties the samples to the teacher's training
  distribution, matching a soft target is reached off the input domain.
* Optimiser: Adam, lr 0.1, cosine decay, ``iterations`` steps per batch (as DeepInversion), on
  the domain-standardised input (dfkd_edge.synthesis.base.InputOptimizer).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dfkd_edge.backends.base import predict_batch
from dfkd_edge.errors import UserError
from dfkd_edge.synthesis.base import InputOptimizer, register_method


def feature_covariance(weight: torch.Tensor, sigma: float, shrink: float = 0.1) -> torch.Tensor:
    """sigma^2 * shrunk correlation (D x D) of the normalised class weight vectors."""
    w = weight / weight.norm(dim=1, keepdim=True).clamp_min(1e-12)
    w = w - w.mean(0, keepdim=True)
    cov = w.T @ w / max(w.shape[0] - 1, 1)
    std = cov.diagonal().clamp_min(1e-12).sqrt()
    r = cov / (std[:, None] * std[None, :])
    r = (1 - shrink) * r + shrink * torch.eye(r.shape[0])
    return sigma ** 2 * r


@register_method
class SoftTargetSynthesizer(InputOptimizer):
    name = "soft-target"

    def __init__(self, teacher, sigma: float = 1.5, act_weight: float = 0.05, bn_weight: float = 1.0,
                 first_bn_weight: float = 1.0, mu: str = "noise", shrink: float = 0.1, **kw) -> None:
        super().__init__(teacher, **kw)
        self.act_weight, self.bn_weight, self.first_bn_weight = act_weight, bn_weight, first_bn_weight
        if mu not in ("noise", "zero"):
            raise UserError(f"soft-target mu must be 'noise' or 'zero', got {mu!r}")
        self.weight, self.bias = teacher.classifier()
        d = self.weight.shape[1]
        noise_mu = self._noise_mean()
        self.mu = noise_mu if mu == "noise" else torch.zeros(d)
        self.sigma = self._spread(sigma, shrink, float(noise_mu.pow(2).mean().sqrt()) or 1.0)
        self.dist = torch.distributions.MultivariateNormal(self.mu, covariance_matrix=feature_covariance(
            self.weight, self.sigma, shrink))

    def _spread(self, sigma: float, shrink: float, scale: float) -> float:
        """sigma in the teacher's feature units: the smallest ``sigma * scale * 2^k`` whose sampled soft
        targets cover the classes (see the module doc)."""
        g = torch.Generator().manual_seed(self.seed)
        eps = torch.randn((4096, self.mu.numel()), generator=g)
        classes = self.weight.shape[0]
        best = (-1.0, sigma * scale)
        for k in range(-4, 9):
            s = sigma * scale * 2.0 ** k
            tril = torch.linalg.cholesky(feature_covariance(self.weight, s, shrink))
            top = (self.mu + eps @ tril.T) @ self.weight.T + self.bias
            counts = torch.bincount(top.argmax(1), minlength=classes).double()
            p = counts[counts > 0] / counts.sum()
            cover = float(-(p * p.log()).sum() / torch.log(torch.tensor(float(classes))))
            if cover >= 0.9:
                return s
            best = max(best, (cover, s))
        return best[1]

    def _noise_mean(self) -> torch.Tensor:
        x = self.domain.draw(256, self.input_shape, self.generator)
        parts = []
        step = max(1, predict_batch(x) // 4)  # the taps keep every BatchNorm input of a pass
        for i in range(0, len(x), step):
            with torch.no_grad(), self.teacher.taps() as rec:
                self.teacher(x[i:i + step].to(self.teacher.device))
            parts.append(rec.feature_tensor())
        f = None if any(p is None for p in parts) else torch.cat(parts, 0)
        if f is None or f.dim() != 2:
            raise UserError("soft-target needs the teacher's features before its last linear layer; "
                            "they could not be observed (use --method deepinversion)")
        return f.float().mean(0).cpu()

    def soft_targets(self, n: int) -> torch.Tensor:
        """Probabilities over all classes, from features sampled in the modelled feature space."""
        g = torch.Generator().manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=self.generator)))
        eps = torch.randn((n, self.mu.numel()), generator=g)
        f = self.mu + eps @ self.dist.scale_tril.T
        return F.softmax(f @ self.weight.T + self.bias, dim=1)

    def batch_context(self, n: int) -> torch.Tensor:
        return self.soft_targets(n)

    def loss(self, x, logits, rec, target):
        loss_kl = F.kl_div(F.log_softmax(logits, 1), target, reduction="batchmean")
        loss = loss_kl
        feats = rec.feature_tensor()
        if self.act_weight and feats is not None:
            loss = loss - self.act_weight * feats.abs().mean()
        if self.bn_weight:
            loss = loss + self.bn_weight * self.bn_loss(rec)
        return loss, {"kl": loss_kl}
