"""What every trainer here shares: the optimisation recipe and the soft-target loss."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class TrainConfig:
    """The recipe of every student trainer: AdamW with a one-cycle schedule, KD at temperature T."""

    epochs: int = 100
    batch_size: int = 128
    lr: float = 5e-3
    weight_decay: float = 1e-4
    temperature: float = 4.0


def make_optimizer(params, cfg: TrainConfig, steps: int):
    """AdamW with a one-cycle schedule over ``steps`` steps (15% warm-up)."""
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return opt, torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.15)


def soft_kl(student_logits: torch.Tensor, target_logp: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 KL(target || softmax(s / T))``, batch mean: the KD loss against any soft-target source."""
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, 1), target_logp, reduction="batchmean",
                    log_target=True) * t * t


def mix_inputs(x: torch.Tensor, lam: torch.Tensor, pair: torch.Tensor) -> torch.Tensor:
    """Mixup: ``lam * x + (1 - lam) * x[pair]`` per row."""
    lx = lam.view(-1, *([1] * (x.dim() - 1)))
    return lx * x + (1 - lx) * x[pair]
