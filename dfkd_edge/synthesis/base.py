"""The Synthesizer surface shared by every transfer-set method, and the transfer-set file.

A method implements :meth:`Synthesizer.sample` (one batch of inputs). :meth:`synthesize`
draws batches until it has ``n`` samples, labels them with the teacher's logits and returns a
:class:`TransferSet`. Methods that need to see the student while they run (adversarial ones)
override :meth:`synthesize` as a whole; the surface stays the same.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from dfkd_edge.compute import Compute
from dfkd_edge.distributed import Dist, rank_seed
from dfkd_edge.domain import InputDomain
from dfkd_edge.errors import UserError
from dfkd_edge.io import atomic_savez
from dfkd_edge.moves import shift_samples
from dfkd_edge.progress import NullProgress, Progress
from dfkd_edge.synthesis.start import resolve_start, start_points
from dfkd_edge.transfer_store import TransferSetFile, write_transfer_set
from dfkd_edge.teacher_model import Teacher

if TYPE_CHECKING:
    from dfkd_edge.distributed import Dist

METHODS: dict[str, type["Synthesizer"]] = {}


def register_method(cls):
    METHODS[cls.name] = cls
    return cls


#: ``--method auto`` before the teacher is known (validation, the data-parallel check): every choice
#: ``choose_auto`` can make is data-parallel, like this one, except CDFKD-MFS (several teachers with
#: --few-shot-data), which validate_config refuses under torchrun.
AUTO_METHOD = "deepinversion"
#: ``--method auto`` for a teacher without an observable BatchNorm layer: on the zoo's no-BN CNN the
#: inversion with the label and smoothness priors alone beat the generator methods (docs/benchmarks.md:
#: 93.8% int8 against adversarial 90.0% and noise 84.9%, real-data KD 97.8%)
AUTO_WITHOUT_BN = "deepinversion"


#: several teachers into one multi-header student, trained against a generator (dfkd_edge.distill.multi);
#: not a transfer-set method of METHODS: the synthesize stage runs its trainer
MULTI_METHOD = "cdfkd-mfs"


def resolve_method(name: str) -> str:
    if name == "auto":
        return AUTO_METHOD
    if name not in METHODS and name != MULTI_METHOD:
        raise UserError(f"unknown --method {name!r}; known: auto, {', '.join(sorted([*METHODS, MULTI_METHOD]))}")
    return name


def choose_auto(teacher, few_shot: bool = False) -> tuple[str, str]:
    """``--method auto`` for this teacher, decided by its structure: (method, why, in words)."""
    spec = teacher.spec
    members = getattr(teacher, "members", None)
    if members and few_shot:
        return MULTI_METHOD, (f"{len(members)} teachers and a few labelled samples: CDFKD-MFS trains one header per "
                              "teacher, and the samples train the attention over them")
    if members:
        return AUTO_METHOD, (f"{len(members)} teachers: DeepInversion against their ensemble (the mean logits and the "
                             f"running statistics of all {len(spec.bn_layers)} BatchNorm layers), then one student "
                             "distilled from the ensemble")
    if spec.taps and spec.bn_layers:
        return AUTO_METHOD, (f"the teacher has {len(spec.bn_layers)} BatchNorm layers whose running statistics "
                             "the inversion reproduces: the strongest data-free prior there is")
    why = ("BatchNorm inputs could not be observed" if not spec.taps else "the teacher has no BatchNorm layer")
    return AUTO_WITHOUT_BN, f"{why}: nothing to invert but the labels and the smoothness and L2 priors"


def start_of(method: str, start: str, input_shape: tuple[int, ...]) -> str | None:
    """Where ``method``'s samples started ("dead-leaves" | "noise" | "half"); None for methods that do not
    optimise inputs (the generator methods, gaussian, CDFKD-MFS)."""
    cls = METHODS.get(method)
    return resolve_start(start, input_shape) if cls is not None and issubclass(cls, InputOptimizer) else None


def create_synthesizer(name: str, teacher: Teacher, **cfg) -> "Synthesizer":
    return METHODS[resolve_method(name)](teacher, **cfg)


@dataclass
class TransferSet:
    """Synthetic inputs with the teacher's logits; ``holdout`` marks samples kept out of training
    (fidelity is measured on them)."""

    x: np.ndarray  # float32, (N, *input_shape)
    logits: np.ndarray  # float32, (N, classes)
    holdout: np.ndarray  # bool, (N,)
    method: str

    def save(self, path: str | Path) -> None:
        atomic_savez(path, x=self.x, logits=self.logits, holdout=self.holdout, method=np.array(self.method))

    @classmethod
    def load(cls, path: str | Path) -> "TransferSet":
        try:
            with np.load(path, allow_pickle=False) as z:
                return cls(z["x"].astype(np.float32), z["logits"].astype(np.float32),
                           z["holdout"].astype(bool), str(z["method"]))
        except (OSError, KeyError, ValueError) as e:
            raise UserError(f"{path} is not a dfkd-edge transfer set ({e}); re-run synthesis") from None

    @property
    def train(self) -> tuple[np.ndarray, np.ndarray]:
        return self.x[~self.holdout], self.logits[~self.holdout]

    @property
    def held_out(self) -> tuple[np.ndarray, np.ndarray]:
        return self.x[self.holdout], self.logits[self.holdout]


class Synthesizer:
    """Base: batches of ``sample()`` -> TransferSet labelled by the teacher."""

    name = "base"
    #: True for methods that train the student while they synthesize (they implement train_student)
    needs_student = False

    def __init__(self, teacher: Teacher, batch_size: int = 256, seed: int = 0, **_unused) -> None:
        self.teacher = teacher
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.teacher.spec.input_shape

    @property
    def domain(self):
        """The teacher's input domain (dfkd_edge.domain): every method draws and optimises inside it."""
        return teacher_domain(self.teacher)

    def sample(self, n: int, task=None) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def steps_per_batch(self) -> int:
        """Units of progress one ``sample()`` call reports (1 unless it iterates)."""
        return 1

    def _checkpoint(self, checkpoint_dir, i: int) -> Path:
        return Path(checkpoint_dir) / f"batch_{i:05d}.npz"

    def _resume_checkpoints(self, checkpoint_dir, batches: list[int], mine: list[int],
                            keep: bool) -> tuple[int, list[torch.Tensor]]:
        """(how many of ``mine`` are done, their inputs if ``keep``); restores the random state after them."""
        if checkpoint_dir is None:
            return 0, []
        Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
        done, xs, state = 0, [], None
        for k, i in enumerate(mine):
            f = self._checkpoint(checkpoint_dir, i)
            if not f.exists():
                break
            try:
                with np.load(f, allow_pickle=False) as z:
                    x, rng = z["x"], torch.from_numpy(z["rng"])
            except (OSError, ValueError, KeyError):
                break  # unreadable: redo from here
            if tuple(x.shape) != (batches[i], *self.input_shape):
                break
            if keep:
                xs.append(torch.from_numpy(x))
            done, state = k + 1, rng
        if state is not None:
            self.generator.set_state(state)
        return done, xs

    def synthesize(self, n: int, holdout: int = 0, progress: Progress | None = None,
                   checkpoint_dir: str | Path | None = None, out_path: str | Path | None = None,
                   dist: Dist | None = None, compute: Compute | None = None):
        """Draw ``n + holdout`` samples batch by batch and label them with the teacher.

        With ``checkpoint_dir``, every finished batch is saved there with the random state that
        follows it, and batches already there are loaded instead of redrawn: an interrupted run
        continues where it stopped and gives the same samples as an uninterrupted one.

        Returns a TransferSet in memory; with ``out_path`` (needs ``checkpoint_dir``) the set is
        streamed to that file instead, batch by batch, and a TransferSetFile is returned: memory
        then depends on the batch size, not on ``n``.

        With ``dist`` (several ranks, dfkd_edge.distributed) batch i is drawn by rank i mod N from
        that rank's random stream, checkpointed under ``checkpoint_dir/rank-R``, and gathered in
        order by the leader, which labels and writes the set; a follower returns None.
        ``compute`` says where the optimisation runs (dfkd_edge.compute; the CPU by default)."""
        dist = dist or Dist()
        self.compute = compute or Compute()
        progress = progress or NullProgress()
        total = n + holdout
        batches = [min(self.batch_size, total - i) for i in range(0, total, self.batch_size)]
        mine = [i for i in range(len(batches)) if i % dist.world == dist.rank]
        stream = out_path is not None
        if stream and checkpoint_dir is None:
            raise ValueError("streaming to out_path needs a checkpoint_dir")
        if dist.enabled:
            if checkpoint_dir is None:
                raise ValueError("distributed synthesis needs a checkpoint_dir")
            checkpoint_dir = Path(checkpoint_dir) / f"rank-{dist.rank}"
            if dist.rank:
                self.generator.manual_seed(rank_seed(self.seed, dist.rank))
        keep = not stream and not dist.enabled
        done, xs = self._resume_checkpoints(checkpoint_dir, batches, mine, keep=keep)
        self.samples_done = sum(batches[i] for i in mine[:done])
        self._draw(batches, mine[done:], done, xs if keep else None, checkpoint_dir, progress, dist)
        return self._assemble(batches, holdout, checkpoint_dir, out_path, xs if keep else None, dist)

    def _draw(self, batches: list[int], todo: list[int], done: int, xs: list | None, checkpoint_dir,
              progress: Progress, dist) -> None:
        """Draw the batches ``todo`` (``done`` are finished), checkpointing each; kept in ``xs`` if given."""
        total = sum(batches)
        what = f"synthesis ({self.name}, {total} samples" + (f", rank {dist.rank} of {dist.world})" if dist.enabled
                                                             else ")")
        with progress.task(what, total=(done + len(todo)) * self.steps_per_batch()) as task:
            task.advance(done * self.steps_per_batch())
            for i in todo:
                x = self.sample(batches[i], task=task).detach().cpu()
                self.samples_done += batches[i]
                if checkpoint_dir is not None:
                    atomic_savez(self._checkpoint(checkpoint_dir, i), x=x.numpy(),
                                 rng=self.generator.get_state().numpy())
                if xs is not None:
                    xs.append(x)

    def _assemble(self, batches: list[int], holdout: int, checkpoint_dir, out_path, xs: list | None, dist):
        """The held-out mask, the batches in order (gathered from every rank), labelled: in memory or
        streamed to ``out_path``; None on a follower rank."""
        total = sum(batches)
        mask = np.zeros(total, dtype=bool)
        if holdout and dist.is_leader:
            idx = torch.randperm(total, generator=self.generator)[:holdout].numpy()
            mask[idx] = True

        def load(i: int) -> np.ndarray:
            with np.load(self._checkpoint(checkpoint_dir, i), allow_pickle=False) as z:
                return z["x"]

        if dist.enabled:
            ordered = dist.gather_batches(batches, self.input_shape, load)
            if not dist.is_leader:
                for _ in ordered:  # a follower only sends its batches
                    pass
                return None
        else:
            ordered = (load(i) for i in range(len(batches)))
        if out_path is not None:
            return self._stream(out_path, ordered, sum(batches), mask)
        x = torch.cat(xs, 0) if xs is not None else torch.from_numpy(np.concatenate(list(ordered)))
        logits = self._label(x)
        return TransferSet(x.numpy().astype(np.float32), logits, mask, self.name)

    def _label(self, x: torch.Tensor) -> np.ndarray:
        logits = self.teacher.logits(x)
        if not torch.isfinite(logits).all():
            raise UserError("the teacher produced NaN/Inf logits on synthesized inputs; check its weights")
        return logits.numpy().astype(np.float32)

    def _stream(self, out_path, ordered, total: int, mask: np.ndarray):
        """Write the set from ``ordered`` (its input batches in order), labelling each as it passes."""
        logits: list[np.ndarray] = []  # N x classes: small, kept; x is not

        def labelled_batches():
            for x in ordered:
                logits.append(self._label(torch.from_numpy(x)))
                yield x

        write_transfer_set(out_path, labelled_batches(), total, self.input_shape,
                           lambda: np.concatenate(logits), mask, self.name)
        return TransferSetFile(out_path)


class InputOptimizer(Synthesizer):
    """Methods that optimise a batch of inputs directly (DeepInversion, soft-target).

    ``sample()`` optimises ``u`` with ``x = mean + std * mix(u)`` (the teacher's input domain,
    dfkd_edge.domain; ``mix`` correlates the channels where the domain says they move together): ``u`` starts at ``start_points`` (dead leaves for images, the domain's noise
    otherwise; dfkd_edge.synthesis.start) and takes ``iterations`` Adam steps (betas 0.5/0.99,
    cosine decay from ``lr``) on ``loss(x, rec, ctx)`` plus the shared smoothness and L2 priors on
    ``u`` (scale-free: the same on every input domain), where
    ``rec`` holds the teacher's taps for that step and ``ctx`` is what ``batch_context(n)`` made
    for the batch (its labels or soft targets)."""

    def __init__(self, teacher: Teacher, iterations: int = 200, lr: float = 0.1, tv_weight: float = 1e-2,
                 l2_weight: float = 1e-4, start: str = "auto", jitter: bool = False, bn_units: str = "auto",
                 **kw) -> None:
        super().__init__(teacher, **kw)
        if bn_units not in BN_UNITS:
            raise UserError(f"bn_units must be one of {', '.join(BN_UNITS)}, got {bn_units!r}")
        self.bn_units = resolve_bn_units(teacher) if bn_units == "auto" else bn_units
        self.standardised_bn = self.bn_units == "standardised"
        self.jitter = bool(jitter) and len(self.input_shape) >= 2
        self.start = resolve_start(start, self.input_shape)
        self.iterations, self.lr = int(iterations), lr
        self.tv_weight, self.l2_weight = tv_weight, l2_weight

    def steps_per_batch(self) -> int:
        return self.iterations

    #: the first BatchNorm layer's weight in the BN-statistics loss (methods that have one set it)
    first_bn_weight = 1.0

    def bn_loss(self, rec) -> torch.Tensor:
        """The BN-statistics loss of this step's taps, in the units ``bn_units`` chose."""
        return bn_statistics_loss(rec.bn_inputs(), self.first_bn_weight, self.standardised_bn)

    def batch_context(self, n: int):
        return None

    def loss(self, x: torch.Tensor, logits: torch.Tensor, rec, ctx) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError  # pragma: no cover

    def sample(self, n: int, task=None) -> torch.Tensor:
        compute = getattr(self, "compute", None) or Compute()
        ctx = self.batch_context(n)
        if isinstance(ctx, torch.Tensor):
            ctx = ctx.to(compute.torch_device)
        domain = self.domain
        mean, std = (compute.to(t) for t in domain.tensors(self.input_shape))
        k = domain.mixing()  # correlated channels (a photograph's colours): x = mean + std * mix(u)
        k = None if k is None else compute.to(k)
        # u is optimised, x = mean + std * u is what the teacher sees: the step size, the start and the
        # priors are in units of the input's own scale, the same on [0, 1], 0-255 or z-scored inputs.
        # u is drawn on the CPU from the method's generator: the same start on every device; images
        # start as dead leaves, signals at the domain's per-sample levels (dfkd_edge.synthesis.start)
        u = compute.to(start_points(domain, n, self.input_shape, self.generator, self.start)).requires_grad_(True)
        opt = torch.optim.Adam([u], lr=self.lr, betas=(0.5, 0.99))
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, self.iterations)
        scaler = compute.grad_scaler()
        def inputs(u):  # what the teacher sees for ``u``
            return mean + std * domain.mix(u, k)

        for step in range(self.iterations):
            x = inputs(u)
            seen = shift_samples(x, self.generator) if self.jitter else x
            with self.teacher.taps() as rec, compute.autocast():
                logits = self.teacher(seen)
            loss, fields = self.loss(x, logits.float(), rec, ctx)
            loss = loss + self.tv_weight * smoothness_prior(u) + self.l2_weight * u.pow(2).mean()
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            if domain.low is not None:  # a known range: project back into it
                with torch.no_grad():
                    u.copy_(domain.unmix((domain.clamp(inputs(u)) - mean) / std, k))
            if task is not None:  # the loss read back every 10 steps only (a device sync)
                show = step % 10 == 9 or step == self.iterations - 1
                task.advance(1, samples=getattr(self, "samples_done", 0),
                             **({k: float(v.detach()) for k, v in fields.items()} if show else {}))
        return inputs(u).detach().cpu().contiguous()


#: the input optimisers' BatchNorm distance: ``raw`` (DeepInversion's, in each layer's own squared units),
#: ``standardised`` (each layer in its running units) or ``auto`` (``resolve_bn_units``)
BN_UNITS = ("auto", "raw", "standardised")
#: ``auto`` measures each layer in its own units when the first BatchNorm's mean running variance is more
#: than this many times the other layers' median: its raw term, in squared input units, then rules the sum
#: (raw 0-255 pixels: 3,000-30,000 times, unscaled tabular features more; every other zoo teacher 0.05-2.3)
#: and the label term is left behind (docs/benchmarks.md)
RAW_BN_DOMINANCE = 100.0


def resolve_bn_units(teacher) -> str:
    """``raw`` or ``standardised`` for ``teacher`` (``RAW_BN_DOMINANCE``), read from its BatchNorm running
    variances on one forward pass of two draws from its domain; ``raw`` without BatchNorm."""
    members = getattr(teacher, "members", None) or [teacher]
    for t in members:
        if not t.spec.taps or not t.spec.bn_layers:
            continue
        x = teacher_domain(teacher).draw(2, t.spec.input_shape, torch.Generator().manual_seed(0))
        with torch.no_grad(), t.taps() as rec:
            t(x.to(t.device))
        scales = [float(r.running_var.float().mean()) for r in rec.bn_inputs()]
        if len(scales) > 1 and scales[0] > RAW_BN_DOMINANCE * float(np.median(scales[1:])):
            return "standardised"
    return "raw"


def teacher_domain(teacher):
    """``teacher.domain``, or N(0, 1) per channel when nobody set one (library use without the pipeline)."""
    d = getattr(teacher, "domain", None)
    if d is None:
        c = teacher.spec.input_shape[0]
        d = InputDomain([0.0] * c, [1.0] * c, source="assumed", detail="not inferred")
    return d


def balanced_labels(n: int, classes: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` labels cycling through the classes, shuffled: every class about equally often."""
    y = torch.arange(n) % classes
    return y[torch.randperm(n, generator=generator)]


def bn_statistics_loss(records, first_weight: float = 1.0, standardised: bool = False) -> torch.Tensor:
    """DeepInversion's feature-distribution prior: for each BN layer, the distance between the
    batch mean/variance of its input and its running statistics (L2 norms, as in the paper).
    ``first_weight`` scales the first layer (CDFKD-MFS weights it more).

    ``standardised``: each layer's distance in that layer's own units, ``||(mean - running_mean) /
    running_std|| + ||var / running_var - 1||`` (the same as the raw one where the running variance is
    1). The raw distance grows with the square of the input's units through a linear first layer: a
    teacher of raw 0-255 pixels put 4,250 on its first layer where the same network on [0, 1] pixels
    put 0.065, and a generator trained on the sum then served that term alone (docs/benchmarks.md)."""
    total = None
    for i, r in enumerate(records):
        x = r.x.float()  # autocast may have run the layer in bf16/fp16
        dims = [0] + list(range(2, x.dim()))
        mean = x.mean(dims)
        var = x.var(dims, unbiased=False)
        if standardised:
            rv = r.running_var.float().clamp_min(1e-8)
            loss = torch.norm((mean - r.running_mean) / rv.sqrt(), 2) + torch.norm(var / rv - 1, 2)
        else:
            loss = torch.norm(mean - r.running_mean, 2) + torch.norm(var - r.running_var, 2)
        loss = loss * (first_weight if i == 0 else 1.0)
        total = loss if total is None else total + loss
    return total if total is not None else torch.zeros(())


def smoothness_prior(x: torch.Tensor) -> torch.Tensor:
    """Total-variation (squared differences of neighbours) along each spatial axis; zero for vectors."""
    if x.dim() <= 2:
        return x.new_zeros(())
    tv = x.new_zeros(())
    for axis in range(2, x.dim()):
        d = x.diff(dim=axis)
        tv = tv + d.pow(2).mean()
    return tv
