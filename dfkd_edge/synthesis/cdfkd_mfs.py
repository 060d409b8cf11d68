"""CDFKD-MFS (Hao et al. 2022), the trainer: several teachers into one multi-header student, data-free.

What the paper's abstract and the authors' scripts give, and is done here:

* **Asymmetric adversarial training.** A generator G (noise -> inputs) is trained against the
  student and every teacher. G maximises the per-header discrepancy ``sum_i L1(header_i(x),
  teacher_i(x))`` and minimises the BatchNorm-statistics loss on each teacher (weight 0.1, the
  first BN layer 5x; standardised per layer, as in the adversarial method, so that no teacher's input
  units outweigh the rest). The student minimises ``sum_i L1(header_i, teacher_i)`` (weight 1) + ``0.2 x
  sum_i L1(pooled features of header i, teacher i's penultimate features)`` (where the widths are
  equal) + ``5 x L1(mean of header logits, mean of teacher logits)``. "Asymmetric": G sees only the
  per-header terms. 5 student steps per generator step; student SGD lr 0.1 (momentum 0.9, cosine),
  G Adam 1e-3.

Added, because it measured necessary for the single-teacher adversarial method
(dfkd_edge/synthesis/adversarial.py: without it G collapsed onto one class of the signal teacher):
G also minimises 5 x DAFL's class-balance term on the teachers' mean prediction.

The transfer set this writes (int8 calibration, held-out fidelity) is drawn from the final G and
labelled with the teachers' mean logits. The attention over the headers, fitted on a few labelled
samples, is dfkd_edge.distill.multi.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from dfkd_edge.ensemble import Ensemble
from dfkd_edge.errors import UserError
from dfkd_edge.progress import NullProgress, Progress
from dfkd_edge.synthesis.adversarial import GeneratorSynthesizer, class_imbalance
from dfkd_edge.synthesis.base import TransferSet


@dataclass
class MultiTeacherConfig:
    iterations: int = 300  # generator steps
    batch_size: int = 256
    z_dim: int = 100
    student_steps: int = 5
    lr_s: float = 0.1
    lr_g: float = 1e-3
    bn_weight: float = 0.1
    first_bn_weight: float = 5.0
    feature_weight: float = 0.2
    ensemble_weight: float = 5.0
    balance_weight: float = 5.0
    seed: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def student_loss(h_logits, h_feats, t_logits, t_feats, cfg: MultiTeacherConfig) -> torch.Tensor:
    """Per-header L1 + feature L1 (where widths match) + ensemble L1, as the student sees it."""
    loss = sum(F.l1_loss(h, t) for h, t in zip(h_logits, t_logits))
    feat = [F.l1_loss(h, t) for h, t in zip(h_feats, t_feats) if t is not None and h.shape == t.shape]
    if feat and cfg.feature_weight:
        loss = loss + cfg.feature_weight * sum(feat)
    return loss + cfg.ensemble_weight * F.l1_loss(torch.stack(h_logits).mean(0), torch.stack(t_logits).mean(0))


class MultiTeacherSynthesizer(GeneratorSynthesizer):
    """The CDFKD-MFS trainer with the synthesizers' surface: ``train_student`` trains the
    multi-header student and returns the transfer set drawn from the final generator."""

    name = "cdfkd-mfs"
    needs_student = True

    def __init__(self, ensemble: Ensemble, cfg: MultiTeacherConfig | None = None, **kw) -> None:
        cfg = cfg or MultiTeacherConfig()
        super().__init__(ensemble, z_dim=cfg.z_dim, batch_size=cfg.batch_size, seed=cfg.seed, **kw)
        self.cfg = cfg

    def _teachers(self, x: torch.Tensor, taps: bool):
        """Each teacher's logits and penultimate features (and BN loss with ``taps``)."""
        logits, feats, bn = [], [], []
        for t in self.teacher.members:
            ctx = t.taps() if t.spec.taps else contextlib.nullcontext(None)
            with ctx as rec:
                logits.append(t(x))
            feats.append(rec.feature_tensor() if rec is not None else None)
            if taps and rec is not None:
                bn.append(self.bn_loss(rec.bn_inputs(), self.cfg.first_bn_weight))
        return logits, feats, (sum(bn) if bn else x.new_zeros(()))

    def train_student(self, student, n: int, holdout: int = 0, progress: Progress | None = None,
                      **synth_kw) -> TransferSet:
        if getattr(student, "num_headers", None) != len(self.teacher.members):
            raise ValueError("the student needs one header per teacher")
        progress = progress or NullProgress()
        cfg, g, b = self.cfg, self.generator_net, self.batch_size
        opt_g = torch.optim.Adam(g.parameters(), lr=cfg.lr_g, betas=(0.5, 0.999))
        opt_s = torch.optim.SGD(student.parameters(), lr=cfg.lr_s, momentum=0.9, weight_decay=5e-4)
        sched_s = torch.optim.lr_scheduler.CosineAnnealingLR(opt_s, cfg.iterations)
        sched_g = torch.optim.lr_scheduler.CosineAnnealingLR(opt_g, cfg.iterations)
        self.history = []
        with progress.task(f"CDFKD-MFS ({len(self.teacher.members)} teachers)", total=cfg.iterations) as task:
            for _ in range(cfg.iterations):
                g.train()
                student.eval()
                x = g(self._z(b))
                t_logits, _, loss_bn = self._teachers(x, taps=True)
                h_logits, _ = student.header_outputs(x)
                adv = -sum(F.l1_loss(h, t) for h, t in zip(h_logits, t_logits))  # per-header terms only
                balance = class_imbalance(torch.stack(t_logits).mean(0))
                loss_g = adv + cfg.bn_weight * loss_bn + cfg.balance_weight * balance
                opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
                opt_g.step()
                sched_g.step()
                student.train()
                for _ in range(cfg.student_steps):
                    with torch.no_grad():
                        x = g(self._z(b))
                        t_logits, t_feats, _ = self._teachers(x, taps=False)
                    h_logits, h_feats = student.header_outputs(x)
                    loss_s = student_loss(h_logits, h_feats, t_logits, t_feats, cfg)
                    if not torch.isfinite(loss_s):
                        raise UserError("multi-teacher training diverged (non-finite loss); check the teachers' "
                                        "weights or lower the student learning rate")
                    opt_s.zero_grad(set_to_none=True)
                    loss_s.backward()
                    opt_s.step()
                sched_s.step()
                self.history.append(float(loss_s.detach()))
                task.advance(1, student=self.history[-1], bn=float(loss_bn.detach()))
        student.eval()
        return self.synthesize(n, holdout, **synth_kw)
