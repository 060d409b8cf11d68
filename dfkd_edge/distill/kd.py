"""Knowledge distillation (Hinton et al. 2015) from a transfer set.

The student matches the teacher's temperature-softened distribution:
``T^2 * KL(softmax(t/T) || softmax(s/T))``. With ``mixup > 0`` (default), each batch also
mixes pairs of synthetic samples (Beta(mixup, mixup) weights) and asks the teacher for the
mixed samples' logits online: the transfer set is small and synthetic, and mixing covers the
space between its points (as Fast-Datafree and others do). ``mixup = 0`` trains on the stored
logits alone and never runs the teacher.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dfkd_edge.progress import NullProgress, Progress


@dataclass
class KDConfig:
    epochs: int = 100
    batch_size: int = 128
    lr: float = 5e-3
    weight_decay: float = 1e-4
    temperature: float = 4.0
    mixup: float = 1.0  # Beta(a, a) for online mixup; 0 disables it
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    t = temperature
    return F.kl_div(F.log_softmax(student_logits / t, 1), F.log_softmax(teacher_logits / t, 1),
                    reduction="batchmean", log_target=True) * t * t


def take(x, idx: np.ndarray) -> np.ndarray:
    """Rows ``idx`` of an array, or of a row source read from disk (``synthesis.store.Rows``)."""
    return x.take(idx) if hasattr(x, "store") else x[idx]


def distill(student: nn.Module, x, logits: np.ndarray, cfg: KDConfig,
            teacher=None, progress: Progress | None = None) -> dict:
    """Train ``student`` in place; returns a small history ({'loss': [...per epoch]}).

    ``x`` is an array or a row source on disk: only one batch of inputs is in memory at a time."""
    progress = progress or NullProgress()
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    lt = torch.from_numpy(logits)
    n = len(x)
    steps = cfg.epochs * ((n + cfg.batch_size - 1) // cfg.batch_size)
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.15)
    beta = torch.distributions.Beta(cfg.mixup, cfg.mixup) if cfg.mixup > 0 and teacher is not None else None
    history = []
    with progress.task("distillation (KD)", total=cfg.epochs) as task:
        for _ in range(cfg.epochs):
            student.train()
            perm = torch.randperm(n, generator=gen)
            total = 0.0
            for i in range(0, n, cfg.batch_size):
                idx = perm[i:i + cfg.batch_size]
                xb, tb = torch.from_numpy(np.ascontiguousarray(take(x, idx.numpy()))), lt[idx]
                if beta is not None:
                    lam = beta.sample((len(idx),)).view(-1, *([1] * (xb.dim() - 1)))
                    other = xb[torch.randperm(len(idx), generator=gen)]
                    xb = lam * xb + (1 - lam) * other
                    with torch.no_grad():
                        tb = teacher(xb)
                loss = kd_loss(student(xb), tb, cfg.temperature)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * len(idx)
            history.append(total / n)
            task.advance(1, loss=history[-1])
    student.eval()
    return {"loss": history}
