"""Knowledge distillation (Hinton et al. 2015) from a transfer set.

The student matches the teacher's temperature-softened distribution:
``T^2 * KL(softmax(t/T) || softmax(s/T))``. With ``mixup > 0`` (default), each batch also
mixes pairs of synthetic samples (Beta(mixup, mixup) weights), moves each image or signal by a few positions
(``shift``), and asks the teacher for their logits online: the transfer set is small and synthetic, and mixing covers the
space between its points (as Fast-Datafree and others do). ``mixup = 0`` trains on the stored
logits alone and never runs the teacher.

``mode`` picks the soft-target source (dfkd_edge.distill.vkd): ``kd`` the teacher; ``vkd`` a
virtual generator conditioned on the sample's label (the argmax of the stored logits), the teacher
never run; ``kd+vkd`` ``(1 - vkd_weight) * KD + vkd_weight * VKD``. Online mixup applies to the
KD term (the teacher labels the mixed inputs); the VKD term sees the stored inputs, whose labels its
targets are conditioned on (``vkd_mix`` selects the measured alternatives: ``pair`` mixes inputs and
virtual targets alike, ``class`` mixes inputs of the same label).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dfkd_edge.compute import Compute, maybe_compile
from dfkd_edge.distill.common import TrainConfig, make_optimizer, mix_inputs, soft_kl
from dfkd_edge.transfer_store import take
from dfkd_edge.distill.vkd import VirtualGenerator
from dfkd_edge.distributed import Dist, rank_seed
from dfkd_edge.errors import UserError
from dfkd_edge.io import atomic_path
from dfkd_edge.moves import shift_samples
from dfkd_edge.progress import NullProgress, Progress


@dataclass
class KDConfig(TrainConfig):
    epochs: int = 200  # twice the other trainers': +0.3 points over the zoo at 4,096 samples (docs/benchmarks.md)
    mixup: float = 1.0  # Beta(a, a) for online mixup; 0 disables it
    seed: int = 0
    mode: str = "kd"  # kd | vkd | kd+vkd (DISTILL_MODES)
    vkd_weight: float = 0.5  # kd+vkd only: the VKD term's share of the loss
    vkd_mix: str = "none"  # the VKD term's inputs: none (as stored) | pair (mixup, targets mixed) | class
    shift: bool = True  # images and signals, with online mixup: each mixed input also moved by up to 1/8 of its size

    def to_dict(self) -> dict:
        return asdict(self)


DISTILL_MODES = ("kd", "vkd", "kd+vkd")


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return soft_kl(student_logits, F.log_softmax(teacher_logits / temperature, 1), temperature)


def check_mode(cfg: KDConfig) -> None:
    if cfg.mode not in DISTILL_MODES:
        raise UserError(f"unknown --distill {cfg.mode!r}; known: {', '.join(DISTILL_MODES)}")
    if cfg.vkd_mix not in ("none", "pair", "class"):
        raise UserError(f"unknown vkd_mix {cfg.vkd_mix!r}; known: none, pair, class")
    if cfg.mode == "kd+vkd" and not 0.0 < cfg.vkd_weight < 1.0:
        raise UserError(f"--vkd-weight must lie strictly between 0 and 1 for kd+vkd, got {cfg.vkd_weight}")


def _same_label_pairs(y: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """For each row, a random row with the same label (itself when it is alone in its class)."""
    pair = torch.arange(len(y))
    for c in y.unique():
        rows = (y == c).nonzero().squeeze(1)
        pair[rows] = rows[torch.randperm(len(rows), generator=gen)]
    return pair


class _Checkpoint:
    """The training state after an epoch, in one file rewritten atomically (nothing when ``where`` is None)."""

    def __init__(self, where, student, opt, sched, scaler, streams: dict) -> None:
        from pathlib import Path

        self.file = Path(where) / "state.pt" if where is not None else None
        self.student, self.opt, self.sched, self.scaler, self.streams = student, opt, sched, scaler, streams

    def save(self, epoch: int, history: list) -> None:
        if self.file is None:
            return

        state = {"epoch": epoch, "history": list(history), "student": self.student.state_dict(),
                 "opt": self.opt.state_dict(), "sched": self.sched.state_dict(), "scaler": self.scaler.state_dict(),
                 "streams": {k: g.get_state() for k, g in self.streams.items()}, "torch": torch.get_rng_state()}
        with atomic_path(self.file) as tmp:
            torch.save(state, tmp)

    def restore(self, history: list) -> int:
        """The first epoch still to train (0 without a checkpoint); the state restored into place."""
        if self.file is None:
            return 0
        if not self.file.is_file():
            self.file.parent.mkdir(parents=True, exist_ok=True)
            return 0
        state = torch.load(self.file, map_location="cpu", weights_only=True)
        self.student.load_state_dict(state["student"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        self.scaler.load_state_dict(state["scaler"])
        for k, g in self.streams.items():
            g.set_state(state["streams"][k])
        torch.set_rng_state(state["torch"])
        history.extend(state["history"])
        return int(state["epoch"]) + 1


def distill(student: nn.Module, x, logits: np.ndarray, cfg: KDConfig,
            teacher=None, progress: Progress | None = None, virtual: VirtualGenerator | None = None,
            dist=None, compute: Compute | None = None, checkpoint_dir=None, micro_batch: int | None = None) -> dict:
    """Train ``student`` in place; returns a small history ({'loss': [...per epoch]}).

    ``x`` is an array or a row source on disk: only one batch of inputs is in memory at a time.
    ``virtual`` is the generator for ``vkd`` and ``kd+vkd``; in ``vkd`` mode ``teacher`` is never
    called.

    ``dist`` (dfkd_edge.distributed.Dist, several ranks): DistributedDataParallel. Every rank draws
    the same epoch permutation and takes every N-th row of each global batch of ``batch_size``, so
    the step count and the effective batch are the single process's; a last global batch too small
    to give each rank two rows is dropped. Each rank's mixup and virtual-target noise come from its
    own stream (rank 0's is the single process's). ``compute``: device, autocast, memory format and
    torch.compile (dfkd_edge.compute); the student is back on the CPU, in eval mode, at the end.

    ``checkpoint_dir`` (one process): the whole training state is saved there after every epoch
    (weights, optimizer, schedule, every random stream), and a call that finds it continues from
    the next epoch, with the same result as an uninterrupted run.

    ``micro_batch``: a batch (this rank's rows of it) is run in near-equal parts of at most this many rows (at
    least 2), their gradients summed before the one optimizer step, so that a student with large activations
    trains in the memory of a part (dfkd_edge.plan.distill_micro_batch); None or a part as large as the batch
    runs it whole."""
    check_mode(cfg)
    dist = dist or Dist()
    compute = compute or Compute()
    progress = progress or NullProgress()
    if cfg.mode in ("vkd", "kd+vkd") and virtual is None:
        raise ValueError(f"distill mode {cfg.mode} needs a virtual generator")
    rank_s = rank_seed(cfg.seed, dist.rank)
    torch.manual_seed(rank_s)
    gen = torch.Generator().manual_seed(cfg.seed)  # the epoch permutations: the same on every rank
    own = gen if not dist.enabled else torch.Generator().manual_seed(rank_s)  # this rank's pairings
    noise = torch.Generator().manual_seed(rank_s + 1)
    n = len(x)
    starts = list(range(0, n, cfg.batch_size))
    if dist.enabled and n - starts[-1] < 2 * dist.world and len(starts) > 1:
        starts = starts[:-1]  # every rank needs two rows (BatchNorm in training mode)
    four_d = len(x.shape) == 4
    student = compute.module(student, four_d)
    model = student
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP

        model = DDP(student, device_ids=[compute.torch_device] if compute.is_cuda else None)
    terms = _Terms(cfg, teacher, virtual, compute, maybe_compile(model, compute), own, noise)
    opt, sched = make_optimizer(student.parameters(), cfg, cfg.epochs * len(starts))
    scaler = compute.grad_scaler()
    history = []
    ckpt = _Checkpoint(checkpoint_dir, student, opt, sched, scaler, {"gen": gen, "own": own, "noise": noise})
    first = ckpt.restore(history)
    lt = torch.from_numpy(logits)
    micro = max(2, micro_batch or cfg.batch_size)
    title = f"distillation ({cfg.mode.upper()}" + (f", {dist.world} ranks)" if dist.enabled else ")")
    with progress.task(title, total=cfg.epochs) as task:
        if first:
            task.advance(first)
        for epoch in range(first, cfg.epochs):
            model.train()
            perm = torch.randperm(n, generator=gen)
            total = count = 0.0
            for i in starts:
                idx = perm[i:i + cfg.batch_size][dist.rank::dist.world]
                opt.zero_grad(set_to_none=True)
                for part in idx.tensor_split(-(-len(idx) // micro)):
                    xb = torch.from_numpy(np.ascontiguousarray(take(x, part.numpy())))
                    with compute.autocast():
                        loss = terms.loss(xb, lt[part])
                    share = loss if len(part) == len(idx) else loss * (len(part) / len(idx))
                    scaler.scale(share).backward()
                    total += float(loss.detach()) * len(part)
                scaler.step(opt)
                scaler.update()
                sched.step()
                count += len(idx)
            total, count = dist.all_sum([total, count])
            history.append(total / count)
            ckpt.save(epoch, history)
            task.advance(1, loss=history[-1])
    student.to("cpu")
    if four_d:
        student.to(memory_format=torch.contiguous_format)
    student.eval()
    return {"loss": history}


class _Terms:
    """The loss of one batch: the KD term (online mixup labelled by the teacher) and the VKD term
    (virtual targets for the stored labels), weighted by the mode."""

    def __init__(self, cfg: KDConfig, teacher, virtual, compute: Compute, forward, own, noise) -> None:
        self.cfg, self.virtual, self.compute, self.forward, self.own, self.noise = cfg, virtual, compute, forward, own, noise
        self.use_kd, self.use_vkd = cfg.mode in ("kd", "kd+vkd"), cfg.mode in ("vkd", "kd+vkd")
        self.w_kd, self.w_vkd = {"kd": (1.0, 0.0), "vkd": (0.0, 1.0),
                                 "kd+vkd": (1 - cfg.vkd_weight, cfg.vkd_weight)}[cfg.mode]
        self.teacher = teacher if self.use_kd else None
        self.mix = cfg.mixup > 0
        self.beta = torch.distributions.Beta(cfg.mixup, cfg.mixup) if self.mix and self.teacher is not None else None
        self.vbeta = torch.distributions.Beta(cfg.mixup, cfg.mixup) if self.mix else None

    def loss(self, xb: torch.Tensor, stored: torch.Tensor):
        loss, out = 0.0, None
        if self.use_kd:
            out, kd = self._kd(xb, stored)
            loss = loss + self.w_kd * kd
        if self.use_vkd:
            loss = loss + self.w_vkd * self._vkd(xb, stored, out)
        return loss

    def _kd(self, xb: torch.Tensor, tb: torch.Tensor):
        xk = xb
        if self.beta is not None:  # online mixup: the teacher labels the mixed inputs
            xk = mix_inputs(xb, self.beta.sample((len(xb),)), torch.randperm(len(xb), generator=self.own))
            if self.cfg.shift and xk.dim() >= 3:  # the teacher labels the moved inputs too
                xk = shift_samples(xk, self.own)
            with torch.no_grad():
                tb = self.teacher(self.compute.to(xk)).float()
        out = self.forward(self.compute.to(xk))
        return out, kd_loss(out.float(), tb.to(out.device), self.cfg.temperature)

    def _vkd(self, xb: torch.Tensor, stored: torch.Tensor, out):
        cfg, virtual, noise = self.cfg, self.virtual, self.noise
        yb = stored.argmax(1)  # the label: the teacher's argmax, stored by synthesis
        with torch.no_grad():
            vb = virtual.sample(yb, noise)
        xv = xb
        if self.mix and cfg.vkd_mix != "none":  # measured alternatives (docs/benchmarks.md)
            lam = self.vbeta.sample((len(xb),))
            pair = _same_label_pairs(yb, self.own) if cfg.vkd_mix == "class" else \
                torch.randperm(len(xb), generator=self.own)
            xv = mix_inputs(xb, lam, pair)
            if cfg.vkd_mix == "pair" and getattr(virtual, "mixed", False):  # learned for mixed labels
                onehot = F.one_hot(yb, vb.shape[1]).float()
                with torch.no_grad():
                    vb = virtual.sample(lam[:, None] * onehot + (1 - lam[:, None]) * onehot[pair], noise)
            elif cfg.vkd_mix == "pair":  # the two virtual targets mixed with the inputs' weights
                vb = (lam[:, None] * vb.exp() + (1 - lam[:, None]) * vb[pair].exp()).clamp_min(1e-12).log()
        # the KD forward is reused when the VKD term sees the same (unmixed) inputs
        ov = out if (out is not None and xv is xb and self.beta is None) else self.forward(self.compute.to(xv))
        return soft_kl(ov.float(), vb.to(ov.device), virtual.temperature)
