"""Virtual knowledge distillation (after Kim, "A Virtual Knowledge Distillation via Conditional
GAN", IEEE Access 10, 2022): a generator, conditioned on a class label, of the teacher's softened
output distributions.

What the paper's abstract fixes: the generator takes a class label (and noise) and produces a
softened distribution over the classes; it is trained independently of, but concurrently with, a
teacher to mimic that teacher's softened distributions; a student then learns from it instead of,
or on top of, the teacher's soft targets; with small changes it serves self-distillation and
collaborative learning. The architecture and the losses are not known here. What we chose, and why
(docs/ARCHITECTURE.md repeats it; docs/benchmarks.md gives the measurements):

* **Generator** ``G(z, y)``: z ~ N(0, I) (16 dims) mapped by a linear layer and added to a learned
  embedding of y, then a 2-layer MLP (128 wide, LeakyReLU) to K logits plus a learned per-class
  bias; its log-softmax is the virtual softened distribution (it mimics ``softmax(t / T)`` at the
  same temperature T the student's KD loss uses). Noise gives the within-class spread the teacher
  shows (samples that look a little like another class), which a fixed per-class target cannot.
* **Discriminator** ``D(log p, y)``: a projection discriminator (Miyato & Koyama 2018): an MLP over
  log-probabilities plus the inner product of its features with an embedding of y; spectral norm on
  its linear layers; the non-saturating logistic GAN loss. It tells, for class y, the teacher's
  softened outputs from the generator's.
* **Fidelity term** (what keeps it faithful): for each class in a batch, the KL divergence from the
  teacher's mean softened distribution to the generator's mean (a moment match that does not
  collapse the spread the adversarial term is after), weight 1.
* **Data-free**: trained only on the teacher's logits over the transfer set (labels = its argmax),
  which synthesis already stored, so the teacher is not run while the generator or a ``vkd``
  student trains.
* **Student loss**: ``T^2 KL(G(z, y) || softmax(s / T))`` with fresh z per sample, on the stored
  inputs: the transfer set, or a set synthesized for the generator's draws (``VKDConfig.transfer``
  "virtual", dfkd_edge.synthesis.virtual_target; measured mixed, docs/benchmarks.md). Mixup for the VKD term was measured three ways and is off by default (docs/benchmarks.md):
  mixed virtual targets, mixup within a class, and a generator that also learned the teacher's
  outputs on mixed pairs conditioned on the mixed label (``VKDConfig.mixup``; the generator then
  takes a label distribution, whose embedding is the expected embedding).
* **Self-distillation**: the model trains with cross-entropy on its labels plus the KD loss towards
  its own generator, which learns the model's (detached) softened outputs at every step; the KD
  weight ramps up over the first ``warmup`` of training while the generator has little to mimic.
* **Collaborative learning**: each peer has its own generator; peer i learns cross-entropy plus
  the KD loss towards the mean of the other peers' virtual distributions. Peers exchange only
  their small generators' outputs, never run each other.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from dfkd_edge.distill.common import TrainConfig, make_optimizer, mix_inputs, soft_kl
from dfkd_edge.transfer_store import take
from dfkd_edge.errors import UserError
from dfkd_edge.io import atomic_path
from dfkd_edge.progress import NullProgress, Progress

log = logging.getLogger(__name__)

VKD_TRANSFERS = ("virtual", "inverted")


@dataclass
class VKDConfig:
    """The virtual generator and its training (``epochs`` over the transfer set's logits)."""

    temperature: float = 4.0
    z_dim: int = 16
    hidden: int = 128
    epochs: int = 200
    batch_size: int = 128
    lr: float = 2e-3
    adv_weight: float = 1.0
    fidelity_weight: float = 1.0
    mixup: float = 0.0  # > 0: also learn the teacher on mixed pairs, conditioned on the mixed label
    seed: int = 0
    # the student's inputs: "inverted" the transfer set the generator learned from, "virtual" a set
    # synthesized for the generator's targets (its own stage, dfkd_edge.synthesis.virtual_target)
    transfer: str = "inverted"

    def to_dict(self) -> dict:
        return asdict(self)


class VirtualGenerator(nn.Module):
    """(z, y) -> log of a softened distribution over the classes."""

    def __init__(self, num_classes: int, z_dim: int = 16, hidden: int = 128, temperature: float = 4.0) -> None:
        super().__init__()
        self.num_classes, self.z_dim, self.hidden = num_classes, z_dim, hidden
        self.temperature = float(temperature)  # of the softened outputs it mimics
        self.mixed = False  # also trained on mixed pairs, conditioned on mixed labels
        self.noise = nn.Linear(z_dim, hidden)
        self.embed = nn.Embedding(num_classes, hidden)
        self.net = nn.Sequential(nn.LeakyReLU(0.2), nn.Linear(hidden, hidden), nn.LeakyReLU(0.2),
                                 nn.Linear(hidden, num_classes))
        self.prior = nn.Embedding(num_classes, num_classes)  # per-class bias on the logits
        nn.init.zeros_(self.prior.weight)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.net(self.noise(z) + _condition(y, self.embed)) + _condition(y, self.prior), 1)

    def sample(self, y: torch.Tensor, gen: torch.Generator | None = None) -> torch.Tensor:
        """Log-probabilities for labels ``y``, fresh noise per row."""
        return self(torch.randn(len(y), self.z_dim, generator=gen), y)


class VirtualDiscriminator(nn.Module):
    """Projection discriminator over (log-probabilities, label): a real/fake logit per row."""

    def __init__(self, num_classes: int, hidden: int = 128) -> None:
        super().__init__()
        self.phi = nn.Sequential(spectral_norm(nn.Linear(num_classes, hidden)), nn.LeakyReLU(0.2),
                                 spectral_norm(nn.Linear(hidden, hidden)), nn.LeakyReLU(0.2))
        self.psi = spectral_norm(nn.Linear(hidden, 1))
        self.embed = nn.Embedding(num_classes, hidden)
        nn.init.normal_(self.embed.weight, std=0.02)

    def forward(self, logp: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.phi(logp)
        return self.psi(h).squeeze(1) + (_condition(y, self.embed) * h).sum(1)


def _condition(y: torch.Tensor, table: nn.Embedding) -> torch.Tensor:
    """The embedding of labels (integers), or the expected embedding of label distributions (floats,
    (B, K): a mixup pair's lam * e_a + (1 - lam) * e_b)."""
    return y @ table.weight if y.is_floating_point() else table(y)


def class_mean_kl(real_logp: torch.Tensor, fake_logp: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean over the classes in ``y`` (weighted by count) of KL(mean real | y || mean fake | y)."""
    onehot = F.one_hot(y, num_classes).T.to(real_logp.dtype)  # (K, B)
    count = onehot.sum(1, keepdim=True)
    present = count.squeeze(1) > 0
    mr = (onehot @ real_logp.exp())[present] / count[present]
    mf = (onehot @ fake_logp.exp())[present] / count[present]
    kl = (mr * (mr.clamp_min(1e-12).log() - mf.clamp_min(1e-12).log())).sum(1)
    return (kl * count[present].squeeze(1)).sum() / len(y)


class VirtualKnowledge:
    """A generator, its discriminator and their optimisers: ``update`` takes one adversarial step
    pair on a batch of real softened outputs; ``targets`` draws virtual ones."""

    def __init__(self, num_classes: int, cfg: VKDConfig | None = None) -> None:
        self.cfg = cfg = cfg or VKDConfig()
        self.num_classes = num_classes
        with torch.random.fork_rng():
            torch.manual_seed(cfg.seed)
            self.generator = VirtualGenerator(num_classes, cfg.z_dim, cfg.hidden, cfg.temperature)
            self.discriminator = VirtualDiscriminator(num_classes, cfg.hidden)
        self.noise = torch.Generator().manual_seed(cfg.seed + 1)
        self.opt_g = torch.optim.Adam(self.generator.parameters(), lr=cfg.lr, betas=(0.5, 0.999))
        self.opt_d = torch.optim.Adam(self.discriminator.parameters(), lr=cfg.lr, betas=(0.5, 0.999))

    def update(self, real_logp: torch.Tensor, y: torch.Tensor, labels: torch.Tensor | None = None) -> dict:
        """``y``: the conditions (labels, or label distributions); ``labels``: the integer labels of the
        first rows, the ones the fidelity term groups by (default: ``y`` itself)."""
        real_logp = real_logp.detach()
        labels = y if labels is None else labels
        fake = self.generator.sample(y, self.noise)
        d_loss = (F.softplus(-self.discriminator(real_logp, y)).mean()
                  + F.softplus(self.discriminator(fake.detach(), y)).mean())
        self.opt_d.zero_grad(set_to_none=True)
        d_loss.backward()
        self.opt_d.step()
        adv = F.softplus(-self.discriminator(fake, y)).mean()
        n = len(labels)
        fid = class_mean_kl(real_logp[:n], fake[:n], labels, self.num_classes)
        g_loss = self.cfg.adv_weight * adv + self.cfg.fidelity_weight * fid
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        return {"d": float(d_loss.detach()), "g_adv": float(adv.detach()), "fidelity_kl": float(fid.detach())}

    @torch.no_grad()
    def targets(self, y: torch.Tensor) -> torch.Tensor:
        """Virtual softened distributions (log-probabilities) for labels ``y``."""
        self.generator.eval()
        out = self.generator.sample(y, self.noise)
        self.generator.train()
        return out


def fit_virtual_generator(logits: np.ndarray, cfg: VKDConfig, progress: Progress | None = None,
                          x=None, teacher=None) -> VirtualKnowledge:
    """Train a virtual generator on the teacher's logits over the transfer set (the teacher is not run).

    With ``cfg.mixup > 0`` (and the inputs ``x`` and the ``teacher``), each step also mixes pairs of
    transfer-set inputs, asks the teacher for their logits, and teaches the generator those outputs
    conditioned on the mixed label ``lam * e_a + (1 - lam) * e_b``: a student can then use mixup
    without the teacher (``KDConfig.vkd_mix = "pair"``)."""
    progress = progress or NullProgress()
    mixed = cfg.mixup > 0
    if mixed and (x is None or teacher is None):
        raise ValueError("a generator for mixed labels needs the transfer-set inputs and the teacher")
    lt = torch.from_numpy(np.asarray(logits, dtype=np.float32))
    if lt.dim() != 2 or len(lt) < 2:
        raise UserError(f"the virtual generator needs (N, classes) teacher logits with N >= 2, got {tuple(lt.shape)}")
    vk = VirtualKnowledge(lt.shape[1], cfg)
    vk.generator.mixed = mixed
    real = F.log_softmax(lt / cfg.temperature, 1)
    labels = lt.argmax(1)
    order = torch.Generator().manual_seed(cfg.seed)
    beta = torch.distributions.Beta(cfg.mixup, cfg.mixup) if mixed else None
    n = len(lt)
    with progress.task("virtual generator (VKD)", total=cfg.epochs) as task:
        for _ in range(cfg.epochs):
            perm = torch.randperm(n, generator=order)
            stats = []
            for i in range(0, n, cfg.batch_size):
                idx = perm[i:i + cfg.batch_size]
                if len(idx) < 2:
                    continue
                if not mixed:
                    stats.append(vk.update(real[idx], labels[idx]))
                    continue
                xb = torch.from_numpy(np.ascontiguousarray(take(x, idx.numpy())))
                lam = beta.sample((len(idx),))
                pair = torch.randperm(len(idx), generator=order)
                with torch.no_grad():
                    real_mix = F.log_softmax(teacher(mix_inputs(xb, lam, pair)) / cfg.temperature, 1)
                onehot = F.one_hot(labels[idx], lt.shape[1]).float()
                cond = lam[:, None] * onehot + (1 - lam[:, None]) * onehot[pair]
                stats.append(vk.update(torch.cat([real[idx], real_mix]), torch.cat([onehot, cond]), labels[idx]))
            task.advance(1, d=np.mean([s["d"] for s in stats]), fid=np.mean([s["fidelity_kl"] for s in stats]))
    vk.generator.eval()
    return vk


@torch.no_grad()
def generator_fidelity(generator: VirtualGenerator, held_logits: np.ndarray, train_logits: np.ndarray,
                       draws: int = 16, seed: int = 0) -> dict:
    """How close the generator's class-conditional distributions are to the teacher's, on held-out
    synthetic samples (never seen in its training):

    * ``class_kl``: KL(teacher's mean softened distribution | y || generator's mean | y), averaged
      over the held-out samples' classes (0 = the class means match);
    * ``sample_kl``: mean KL(teacher(x) || G(z, y(x))) over held-out x and ``draws`` noise draws,
      next to ``sample_kl_class_mean``, the same with the teacher's training-set class mean as the
      target: a noise-free class-conditional target's figure, for scale;
    * ``label_agreement``: how often argmax G(z, y) == y;
    * ``entropy_teacher`` / ``entropy_generator``: mean entropy (nats) of the softened distributions
      (a generator collapsed to one point per class shows a different entropy).
    """
    generator.eval()
    K, temperature = generator.num_classes, generator.temperature
    lh = torch.from_numpy(np.asarray(held_logits, dtype=np.float32))
    lt = torch.from_numpy(np.asarray(train_logits, dtype=np.float32))
    real = F.log_softmax(lh / temperature, 1)
    y = lh.argmax(1)
    gen = torch.Generator().manual_seed(seed)
    yy = y.repeat(draws)
    fake = generator.sample(yy, gen)
    rr = real.repeat(draws, 1)
    sample_kl = float((rr.exp() * (rr - fake)).sum(1).mean())
    train_real = F.log_softmax(lt / temperature, 1).exp()
    ty = lt.argmax(1)
    means = torch.stack([train_real[ty == c].mean(0) if (ty == c).any() else torch.full((K,), 1.0 / K)
                         for c in range(K)])
    base = (real.exp() * (real - means[y].clamp_min(1e-12).log())).sum(1).mean()
    all_y = torch.arange(K).repeat_interleave(draws)
    agree = float((generator.sample(all_y, gen).argmax(1) == all_y).float().mean())

    def entropy(lp):
        return float(-(lp.exp() * lp).sum(1).mean())

    return {"class_kl": float(class_mean_kl(rr, fake, yy, K)), "sample_kl": sample_kl,
            "sample_kl_class_mean": float(base), "label_agreement": agree,
            "entropy_teacher": entropy(real), "entropy_generator": entropy(fake),
            "held_out_samples": int(len(lh)), "draws": draws, "temperature": temperature}


def save_virtual_generator(path: str | Path, generator: VirtualGenerator) -> None:
    """A small file of tensors and numbers (loadable with ``weights_only=True``)."""
    doc = {"format": "dfkd-edge-virtual-generator/1", "num_classes": generator.num_classes,
           "z_dim": generator.z_dim, "hidden": generator.hidden, "temperature": generator.temperature,
           "mixed": bool(generator.mixed),
           "state_dict": generator.state_dict()}
    with atomic_path(path) as tmp:
        torch.save(doc, tmp)


def load_virtual_generator(path: str | Path) -> VirtualGenerator:
    """The generator, in eval mode (its ``temperature`` is the softening it mimics)."""
    try:
        doc = torch.load(path, map_location="cpu", weights_only=True)
        g = VirtualGenerator(int(doc["num_classes"]), int(doc["z_dim"]), int(doc["hidden"]), float(doc["temperature"]))
        g.load_state_dict(doc["state_dict"])
        g.mixed = bool(doc.get("mixed", False))
    except Exception as e:  # noqa: BLE001 - any unreadable file is the user's to fix: one line, exit 2
        msg = str(e).splitlines()[0] if str(e) else ""
        raise UserError(f"{path} is not a dfkd-edge virtual generator ({type(e).__name__}: {msg})") from None
    return g.eval()


# ----------------------------------------------------------------------------- self / collaborative


@dataclass
class SelfDistillConfig(TrainConfig):
    """Training a model on labelled data with virtual knowledge (self-distillation or peers)."""

    vkd_weight: float = 1.0
    warmup: float = 0.2  # fraction of steps over which the VKD weight ramps from 0
    seed: int = 0
    # the generator's network and optimiser; it takes one step per training step (its epochs, mixup
    # and temperature do not apply: T is this config's)
    generator: VKDConfig = field(default_factory=VKDConfig)

    def to_dict(self) -> dict:
        return asdict(self)


def _check_xy(x: np.ndarray, y: np.ndarray, num_classes: int | None = None) -> None:
    if len(x) != len(y) or len(x) < 2:
        raise UserError(f"need at least 2 labelled samples with as many labels as inputs; got {len(x)} inputs, "
                        f"{len(y)} labels")
    if num_classes is not None and (y.min() < 0 or y.max() >= num_classes):
        raise UserError(f"labels must lie in 0..{num_classes - 1}; got {int(y.min())}..{int(y.max())}")


def _ramp(step: int, steps: int, warmup: float) -> float:
    return 1.0 if warmup <= 0 else min(1.0, step / max(1.0, warmup * steps))


def train_ce(model: nn.Module, x: np.ndarray, y: np.ndarray, cfg: SelfDistillConfig,
             progress: Progress | None = None) -> dict:
    """The baseline: cross-entropy alone, same optimiser, schedule, batches and seed."""
    return collaborate([model], x, y, cfg, progress, _vkd=False)


def self_distill(model: nn.Module, x: np.ndarray, y: np.ndarray, cfg: SelfDistillConfig,
                 progress: Progress | None = None) -> tuple[dict, VirtualKnowledge]:
    """Train ``model`` in place with its own, concurrently trained, virtual generator."""
    history, peers = collaborate([model], x, y, cfg, progress, _return_generators=True)
    return history, peers[0]


def collaborate(models: list[nn.Module], x: np.ndarray, y: np.ndarray, cfg: SelfDistillConfig,
                progress: Progress | None = None, _vkd: bool = True, _return_generators: bool = False):
    """Collaborative learning: peers trained together, each with its own virtual generator; peer i
    learns from the mean of the other peers' virtual distributions (its own when alone, which is
    self-distillation). Every peer sees the same batches. Returns the history (per epoch: mean CE
    and VKD loss per peer)."""
    progress = progress or NullProgress()
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    _check_xy(x, y)
    torch.manual_seed(cfg.seed)
    order = torch.Generator().manual_seed(cfg.seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    with torch.no_grad():
        k = int(models[0].eval()(xt[:2]).shape[1])
    _check_xy(x, y, k)
    n = len(xt)
    steps = cfg.epochs * math.ceil(n / cfg.batch_size)
    opts = [make_optimizer(m.parameters(), cfg, steps) for m in models]
    peers = [VirtualKnowledge(k, VKDConfig(**{**asdict(cfg.generator), "temperature": cfg.temperature,
                                              "seed": cfg.seed + 7919 * i}))
             for i in range(len(models))] if _vkd else []  # the cross-entropy baseline needs no generators
    history: dict[str, list] = {"ce": [], "vkd": [], "generator_fidelity_kl": []}
    step = 0
    label = "self-distillation (VKD)" if len(models) == 1 else f"collaborative learning ({len(models)} peers, VKD)"
    with progress.task(label if _vkd else "cross-entropy", total=cfg.epochs) as task:
        for _ in range(cfg.epochs):
            for m in models:
                m.train()
            perm = torch.randperm(n, generator=order)
            sums = np.zeros((3, len(models)))
            for i in range(0, n, cfg.batch_size):
                idx = perm[i:i + cfg.batch_size]
                if len(idx) < 2:  # BatchNorm needs two rows
                    continue
                xb, yb = xt[idx], yt[idx]
                w = cfg.vkd_weight * _ramp(step, steps, cfg.warmup)
                if _vkd:
                    virtual = [p.targets(yb) for p in peers]
                for j, (m, (opt, sched)) in enumerate(zip(models, opts)):
                    out = m(xb)
                    ce = F.cross_entropy(out, yb)
                    loss = ce
                    if _vkd:
                        others = [v for q, v in enumerate(virtual) if q != j] or virtual
                        target = torch.stack([v.exp() for v in others]).mean(0).clamp_min(1e-12).log()
                        vkd = soft_kl(out, target, cfg.temperature)
                        loss = ce + w * vkd
                        stats = peers[j].update(F.log_softmax(out.detach() / cfg.temperature, 1), yb)
                        sums[1:, j] += [float(vkd.detach()) * len(idx), stats["fidelity_kl"] * len(idx)]
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    sched.step()
                    sums[0, j] += float(ce.detach()) * len(idx)
                step += 1
            for key, row in zip(history, sums / n):
                history[key].append([float(v) for v in row])
            task.advance(1, **({"ce": float(sums[0].mean() / n), "vkd": float(sums[1].mean() / n)} if _vkd
                               else {"ce": float(sums[0].mean() / n)}))
    for m in models:
        m.eval()
    return (history, peers) if _return_generators else history


__all__ = ["SelfDistillConfig", "VKDConfig", "VirtualDiscriminator", "VirtualGenerator", "VirtualKnowledge",
           "class_mean_kl", "collaborate", "fit_virtual_generator", "generator_fidelity", "load_virtual_generator",
           "save_virtual_generator", "self_distill", "soft_kl", "train_ce"]
