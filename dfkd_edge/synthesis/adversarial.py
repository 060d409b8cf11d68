"""Adversarial synthesis (DFAD-style, Fang et al. 2019; with the BN prior as CDFKD-MFS adds it).

A generator G maps noise to inputs. The student minimises the L1 distance between its logits and
the teacher's on G's samples; G maximises it, so it keeps finding inputs where the two disagree.
G also minimises the BatchNorm-statistics loss on the teacher (weight ``bn_weight`` = 0.1, the
first BN layer weighted ``first_bn_weight`` = 10x, as DeepInversion's code does), which keeps its
samples near what the teacher saw in training; standardised per layer (each layer's distance in its
own running units, :meth:`GeneratorSynthesizer.bn_loss`, for every generator here), else a teacher of
raw 0-255 pixels puts 65,000x more on its first layer than the same network on [0, 1] pixels and G
serves that term alone (85% -> 97% on the zoo's 0-255 digits). ``student_steps`` (5) student updates
follow each generator update.

Not in DFAD or the CDFKD-MFS abstract, added because it measured necessary: without it the
generator collapsed onto one class of the 1-D-signal teacher (570 of 576 samples, student at
chance). The generator also minimises ``balance_weight`` (5, DAFL's weight) x the gap between
log(classes) and the entropy of its batch's mean teacher prediction (DAFL's information-entropy
loss), which keeps every class in every batch.

Synthesis and distillation interleave, so this method sees the student: ``needs_student`` is
True and the pipeline calls :meth:`train_student` instead of ``synthesize`` + KD. The transfer
set it returns (for int8 calibration and fidelity) is drawn from the final generator.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dfkd_edge.models import create_model
from dfkd_edge.progress import NullProgress, Progress
from dfkd_edge.synthesis.base import Synthesizer, TransferSet, bn_statistics_loss, register_method


def class_imbalance(logits: torch.Tensor) -> torch.Tensor:
    """log(classes) - entropy of the batch-mean prediction: 0 when a batch covers every class
    equally (DAFL's information-entropy loss, shifted to be >= 0)."""
    p = F.softmax(logits, 1).mean(0)
    return torch.log(torch.tensor(float(p.numel()))) + (p * torch.log(p.clamp_min(1e-12))).sum()


class GeneratorSynthesizer(Synthesizer):
    """Base of the methods whose samples come from a generator network G(z) trained against a student."""

    def __init__(self, teacher, z_dim: int = 100, **kw) -> None:
        super().__init__(teacher, **kw)
        self.z_dim = z_dim
        torch.manual_seed(self.seed)
        self.generator_net = create_model("generator", input_shape=self.input_shape, z_dim=z_dim)
        self.generator_net.domain.set_domain(self.domain)  # outputs in the teacher's input domain

    @staticmethod
    def bn_loss(records, first_weight: float = 1.0) -> torch.Tensor:
        """The BatchNorm-statistics loss every generator here trains on: standardised per layer (see the
        module docstring and :func:`~dfkd_edge.synthesis.base.bn_statistics_loss`)."""
        return bn_statistics_loss(records, first_weight, standardised=True)

    def _z(self, n: int) -> torch.Tensor:
        return torch.randn((n, self.z_dim), generator=self.generator)

    def sample(self, n: int, task=None) -> torch.Tensor:
        self.generator_net.eval()
        with torch.no_grad():
            x = self.generator_net(self._z(n))
        if task is not None:
            task.advance(1)
        return x


@register_method
class AdversarialSynthesizer(GeneratorSynthesizer):
    name = "adversarial"
    needs_student = True

    def __init__(self, teacher, iterations: int = 1000, z_dim: int = 100, lr_g: float = 1e-3,
                 lr_s: float = 2e-3, student_steps: int = 5, bn_weight: float = 0.1,
                 first_bn_weight: float = 10.0, balance_weight: float = 5.0, **kw) -> None:
        super().__init__(teacher, z_dim=z_dim, **kw)
        self.iterations = int(iterations)
        self.lr_g, self.lr_s, self.student_steps = lr_g, lr_s, int(student_steps)
        self.bn_weight, self.first_bn_weight = bn_weight, first_bn_weight
        self.balance_weight = balance_weight

    def train_student(self, student: torch.nn.Module, n: int, holdout: int = 0,
                      progress: Progress | None = None, **synth_kw) -> TransferSet:
        progress = progress or NullProgress()
        g, b = self.generator_net, self.batch_size
        opt_g = torch.optim.Adam(g.parameters(), lr=self.lr_g, betas=(0.5, 0.999))
        opt_s = torch.optim.AdamW(student.parameters(), lr=self.lr_s, weight_decay=1e-4)
        sched_s = torch.optim.lr_scheduler.CosineAnnealingLR(opt_s, self.iterations)
        sched_g = torch.optim.lr_scheduler.CosineAnnealingLR(opt_g, self.iterations)
        with progress.task("adversarial synthesis + distillation", total=self.iterations) as task:
            for _ in range(self.iterations):
                # generator: maximise the student-teacher disagreement, match BN statistics
                g.train()
                student.eval()
                x = g(self._z(b))
                with self.teacher.taps() as rec:
                    t_logits = self.teacher(x)
                loss_bn = self.bn_loss(rec.bn_inputs(), self.first_bn_weight)
                loss_adv = -F.l1_loss(student(x), t_logits)
                loss_g = loss_adv + self.bn_weight * loss_bn + self.balance_weight * class_imbalance(t_logits)
                opt_g.zero_grad(set_to_none=True)
                loss_g.backward()
                opt_g.step()
                sched_g.step()
                # student: minimise it on fresh samples
                student.train()
                for _ in range(self.student_steps):
                    with torch.no_grad():
                        x = g(self._z(b))
                        t_logits = self.teacher(x)
                    loss_s = F.l1_loss(student(x), t_logits)
                    opt_s.zero_grad(set_to_none=True)
                    loss_s.backward()
                    opt_s.step()
                sched_s.step()
                task.advance(1, l1=float(loss_s.detach()), bn=float(loss_bn.detach()))
        student.eval()
        return self.synthesize(n, holdout, **synth_kw)
