"""The teacher's input domain: where its inputs live, per channel, without its data.

A data-free method draws inputs and optimises them; it must know the scale and offset of the
inputs the teacher consumes: [0, 1] pixels, [-1, 1], per-channel z-scores, raw 0-255 bytes and
unscaled tabular features (magnitudes from 0.001 to 1,000s) all occur. Nothing here assumes
zero-centred or unit-scale inputs. The domain is a per-channel (images, signals) or per-feature
(vectors) mean and standard deviation, and optionally a range ``[low, high]``; every method draws
``x = mean + std * u`` and optimises ``u``, whose scale is then the same on every teacher.

Where it comes from, in this order (``InputDomain.source``):

* ``user``: ``--input-mean/--input-std`` and/or ``--input-range LO,HI`` (a range alone gives
  mean (LO+HI)/2 and std (HI-LO)/4, and samples are kept inside it). With a mean and std given for
  images of several channels, the channels' correlation and the texture are still read from the
  first BatchNorm (``read_colour``), the given mean and spreads fixed.
* ``teacher-bn``: read from the teacher's first BatchNorm layer (in execution order). The
  mean and std per input channel are fitted so that this layer's input, on inputs
  ``mean + std * noise``, has the layer's running mean and variance. When that BatchNorm sits on
  the input itself (a BatchNorm-first MLP) this is exact; behind a convolution or linear layer it
  is the affine map's inverse in the least-squares sense, a starting scale the synthesis refines
  (the BatchNorm-statistics loss on every layer keeps acting on the samples).
  For images and signals the fit also splits the variance three ways: each sample's own level
  (``level_std``: the spread of a sample's per-channel mean, e.g. a photo's background colour or a
  signal's offset), smooth variation inside a sample (``smooth_std``: noise low-passed over a few
  positions, e.g. strokes and shapes) and independent per-position variation (the rest of ``std``).
  A first layer's filters weigh the three differently (a zero-sum edge filter ignores a level and
  passes fine grain, an averaging one the reverse), so the first BatchNorm's per-channel statistics
  tell them apart. Samples start as ``mean + level_std * v + std * u`` (``v`` one draw per sample and
  channel): without the levels a colour-invariant teacher was inverted into samples that all share one
  colour, and its student never learnt the invariance (docs/benchmarks.md). The smooth part is read so
  that it is not mistaken for a level (a level-only fit took a digit's strokes for one).
  Images of several channels then get the channels' correlation (``corr``, ``_fit_colour``): one
  mixing of the channels and one texture for all of them, kept when it lowers the mismatch. On
  photographs (colour channels correlated 0.8-0.95) the per-channel fit left a mismatch of 0.4-0.65
  and, on a photograph teacher trained elsewhere, read green and blue at a tenth of their real spread;
  with the correlation 0.006-0.02, every channel's spread within 8% and each correlation within 0.05
  (docs/benchmarks.md). What the fit
  leaves is ``fit_mismatch``, a signal of the run's verdict (dfkd_edge.quality).
* ``assumed``: the teacher has no BatchNorm that can be observed and nobody said: N(0, 1) per
  channel. Synthesis on such a teacher is flagged in the report's quality verdict.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F

from dfkd_edge.bn_moments import MAX_BASIS, Moments, basis_size, is_affine
from dfkd_edge.errors import UserError

log = logging.getLogger(__name__)

SOURCES = ("user", "teacher-bn", "assumed")


@dataclass
class InputDomain:
    mean: list[float]  # one per channel (rank 2/3 inputs) or per feature (vectors)
    std: list[float]
    low: float | None = None
    high: float | None = None
    source: str = "assumed"
    detail: str = ""
    #: per channel (images, signals), in input units: the spread of each sample's own level (its mean
    #: over positions) around ``mean``, and the part of ``std`` that is smooth over a few positions
    #: (``smooth_noise``); the rest of ``std`` is independent per position. None: not read (vectors,
    #: given domains, a fit they did not improve)
    level_std: list[float] | None = None
    smooth_std: list[float] | None = None
    #: images and signals of several channels: the correlation of the channels at one position (C x C, unit
    #: diagonal); photographs' colour channels move together (0.8-0.95). None: independent channels
    corr: list[list[float]] | None = None
    #: ``teacher-bn``: the first BatchNorm's standardised mismatch (``standardised_mismatch``) on inputs drawn
    #: from the fitted domain: how far the fit's family is from what the teacher saw (0: exact)
    fit_mismatch: float | None = None

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("mean", "std", "level_std", "smooth_std"):
            if d[k] is not None:
                d[k] = [round(float(v), 6) for v in d[k]]
        if d["corr"] is not None:
            d["corr"] = [[round(float(v), 6) for v in row] for row in d["corr"]]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "InputDomain":
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})

    def _shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return (1, len(self.mean), *([1] * (len(input_shape) - 1)))

    def tensors(self, input_shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, std) shaped to broadcast over a batch ``(N, *input_shape)``."""
        shape = self._shape(input_shape)
        return (torch.tensor(self.mean, dtype=torch.float32).view(shape),
                torch.tensor(self.std, dtype=torch.float32).view(shape))

    def noise(self, n: int, input_shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        """``u`` such that ``to_input(u)`` has the domain's spread inside a sample and, when the domain
        was read with its texture, each sample's own level: N(0, 1) per element plus one
        N(0, (level_std / std)^2) draw per sample and channel. (The smooth part is read so that it is
        not mistaken for a level; starting from smooth noise measured no better, docs/benchmarks.md.)
        ``u``'s channels are independent; ``to_input`` correlates them (``corr``)."""
        u = torch.randn((n, *input_shape), generator=generator)
        if self.level_std is None or len(input_shape) < 2:
            return u
        shape = self._shape(input_shape)
        level = torch.tensor(self.level_std, dtype=torch.float32) / torch.tensor(self.std, dtype=torch.float32)
        return u + level.view(shape) * torch.randn((n, *shape[1:]), generator=generator)

    def start_scale(self, input_shape: tuple[int, ...]) -> torch.Tensor | None:
        """Per channel, shaped to broadcast: the whole spread (each sample's level included) over ``std``, for
        starts that carry their own levels (dead leaves: a background and flat shapes); None where the start
        keeps ``std``. Only for domains read with their colours: a photograph's spread is mostly each crop's own
        colour (level 3x the rest on the zoo's photographs), and dead leaves at ``std`` started the inversion at
        a third of it, where a teacher whose first BatchNorm weighs little in the loss left it."""
        if self.corr is None or self.level_std is None:
            return None
        ratio = torch.tensor(self.level_std, dtype=torch.float32) / torch.tensor(self.std, dtype=torch.float32)
        return (1 + ratio.pow(2)).sqrt().view(self._shape(input_shape))

    def mixing(self) -> torch.Tensor | None:
        """The lower-triangular C x C factor of ``corr`` (None: independent channels)."""
        if self.corr is None:
            return None
        r = torch.tensor(self.corr, dtype=torch.float64)
        return torch.linalg.cholesky(r + 1e-6 * torch.eye(len(r), dtype=torch.float64)).float()

    def mix(self, u: torch.Tensor, k: torch.Tensor | None = None) -> torch.Tensor:
        """``u`` (N, C, ...) with its channels correlated as ``corr`` says: each position's channel vector
        times the factor ``k`` (``mixing()``); ``u`` itself when the channels are independent."""
        k = self.mixing() if k is None else k
        return u if k is None else mix_channels(k.to(u.device, u.dtype), u)

    def unmix(self, v: torch.Tensor, k: torch.Tensor | None = None) -> torch.Tensor:
        """The inverse of ``mix``."""
        k = self.mixing() if k is None else k
        if k is None:
            return v
        flat = v.movedim(1, -1).unsqueeze(-1)
        return torch.linalg.solve_triangular(k.to(v.device, v.dtype), flat, upper=False).squeeze(-1).movedim(-1, 1)

    def to_input(self, u: torch.Tensor) -> torch.Tensor:
        """``mean + std * mix(u)``, kept inside the range when one is known: the inputs ``u`` stands for."""
        m, s = (t.to(u.device) for t in self.tensors(tuple(u.shape[1:])))
        return self.clamp(m + s * self.mix(u))

    def draw(self, n: int, input_shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        """``n`` samples of ``to_input(noise)``, kept inside the range when one is known."""
        return self.to_input(self.noise(n, input_shape, generator))

    def clamp(self, x: torch.Tensor) -> torch.Tensor:
        if self.low is None and self.high is None:
            return x
        return x.clamp(self.low, self.high)

    def summary(self) -> str:
        def fmt(v: list[float]) -> str:
            vals = ", ".join(f"{x:.4g}" for x in v[:4])
            return f"[{vals}{', ...' if len(v) > 4 else ''}]"

        rng = f", range [{self.low:g}, {self.high:g}]" if self.low is not None else ""
        lvl = (f", per-sample level spread {fmt(self.level_std)}, smooth part {fmt(self.smooth_std)}"
               if self.level_std is not None else "")
        corr = f", channel correlation {fmt(corr_pairs(self.corr))}" if self.corr is not None else ""
        return f"mean {fmt(self.mean)}, std {fmt(self.std)}{lvl}{corr}{rng} ({self.source})"


def mix_channels(k: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Each position's channel vector of ``u`` (N, C, ...) times the C x C matrix ``k``."""
    return torch.einsum("cd,nd...->nc...", k, u)


def corr_pairs(corr: list[list[float]]) -> list[float]:
    """The correlations of each pair of channels, (1, 0), (2, 0), (2, 1), ...: R-G, R-B, G-B for colour."""
    return [corr[i][j] for i in range(len(corr)) for j in range(i)]


def _colour_parts(w: torch.Tensor, p: torch.Tensor, o: torch.Tensor, k: torch.Tensor) -> dict:
    """InputDomain's ``std``, ``level_std``, ``smooth_std`` and ``corr`` of a colour fit's parts."""
    return {"std": [float(v) for v in (w.pow(2) + p.pow(2)).sqrt()], "level_std": [float(v) for v in o],
            "smooth_std": [float(v) for v in p], "corr": [[float(v) for v in row] for row in k @ k.T]}


def parse_floats(text: str | None, flag: str) -> list[float] | None:
    if text is None or str(text).strip() == "":
        return None
    try:
        vals = [float(p) for p in str(text).replace(" ", "").split(",") if p != ""]
    except ValueError:
        raise UserError(f"{flag} {text!r} is not a comma-separated list of numbers, e.g. 0.485,0.456,0.406") from None
    if not vals or not all(math.isfinite(v) for v in vals):
        raise UserError(f"{flag} {text!r} must hold finite numbers")
    return vals


def user_domain(input_shape: tuple[int, ...], mean: str | None = None, std: str | None = None,
                input_range: str | None = None) -> InputDomain | None:
    """The domain a user gave (``--input-mean``, ``--input-std``, ``--input-range``), or None."""
    m, s = parse_floats(mean, "--input-mean"), parse_floats(std, "--input-std")
    r = parse_floats(input_range, "--input-range")
    if m is None and s is None and r is None:
        return None
    channels = input_shape[0]
    low = high = None
    if r is not None:
        if len(r) != 2 or not r[0] < r[1]:
            raise UserError(f"--input-range {input_range!r} must be LO,HI with LO < HI, e.g. 0,1 or 0,255")
        low, high = r
    if (m is None) != (s is None):
        if r is None:
            raise UserError("give --input-mean and --input-std together (or --input-range LO,HI)")
    if m is None:
        m = [(low + high) / 2] if r is not None else [0.0]
    if s is None:
        s = [(high - low) / 4] if r is not None else [1.0]
    for flag, v in (("--input-mean", m), ("--input-std", s)):
        if len(v) not in (1, channels):
            raise UserError(f"{flag} has {len(v)} values; the teacher's inputs have {channels} "
                            f"{'features' if len(input_shape) == 1 else 'channels'}: give 1 or {channels}")
    if any(v <= 0 for v in s):
        raise UserError(f"--input-std must be positive, got {std}")
    m = m * channels if len(m) == 1 else m
    s = s * channels if len(s) == 1 else s
    if r is not None and any(not low <= v <= high for v in m):
        raise UserError(f"--input-mean {mean} lies outside --input-range {input_range}")
    return InputDomain(m, s, low, high, "user", GIVEN_SPREAD if mean is not None and std is not None
                       else "given on the command line")


#: ``InputDomain.detail`` of a user's domain given with its spread (``--input-mean`` and ``--input-std``)
GIVEN_SPREAD = "mean and std given on the command line"


def read_colour(teacher, user: InputDomain, seed: int = 0, steps: int = 300) -> InputDomain:
    """``user``'s mean and spread, with the channels' correlation and the texture read from the teacher's first
    BatchNorm (``_fit_colour`` with the spreads fixed): images of several channels whose teacher has an
    observable BatchNorm; ``user`` unchanged otherwise. A photograph's mean and std per channel say nothing of
    how its colours move together, and inputs with independent colour channels are not photographs."""
    members = [t for t in (getattr(teacher, "members", None) or [teacher]) if t.spec.taps and t.spec.bn_layers]
    shape = tuple(teacher.spec.input_shape)
    if not members or len(shape) < 2 or shape[0] < 2:
        return user
    gen = torch.Generator().manual_seed(seed)
    white = _standard_normal((fit_batch(shape), *shape), gen)
    s = torch.tensor(user.std, dtype=torch.float32)
    third = s / math.sqrt(3)
    affine = _affine(members[0], shape, s, seed)
    _, w, p, o, k, loss = _fit_colour(members[0], shape, torch.tensor(user.mean, dtype=torch.float32), third, third,
                                      third, white, gen, steps, fixed=True, affine=affine)
    parts = _colour_parts(w, p, o, k)
    return InputDomain(user.mean, parts.pop("std"), user.low, user.high, "user",
                       user.detail + f"; the channels' correlation and texture read from the first BatchNorm layer "
                       f"(standardised mismatch {loss:.3g})", **parts, fit_mismatch=round(float(loss), 4))


def _first_bn(teacher, x: torch.Tensor):
    return teacher.first_bn_input(x)


def _probe_mean(teacher, shape: tuple[int, ...], target: torch.Tensor) -> torch.Tensor:
    """Least-squares input mean per channel from constant probes: the first BatchNorm's input mean
    is ``A @ m + c`` when the layers before it are affine (exact for a BatchNorm on the input);
    behind a nonlinearity it is a start the fit below corrects. Zeros when it cannot be solved."""
    c_in = shape[0]
    probes = torch.zeros((c_in + 1, *shape))
    for c in range(c_in):
        probes[c + 1, c] = 1.0
    with torch.no_grad():
        r = _first_bn(teacher, probes)
    if r is None:
        return torch.zeros(c_in)
    x = r.x.float()
    per_probe = x.mean(list(range(2, x.dim()))) if x.dim() > 2 else x  # (C_in + 1, C_bn)
    offset = per_probe[0]
    a = (per_probe[1:] - offset).T  # (C_bn, C_in)
    try:
        m = torch.linalg.lstsq(a.double(), (target.float() - offset).double()[:, None]).solution[:, 0].float()
    except RuntimeError:
        return torch.zeros(c_in)
    return m if torch.isfinite(m).all() else torch.zeros(c_in)


def _probe_std(teacher, shape: tuple[int, ...], mean: torch.Tensor, target_var: torch.Tensor,
               gen: torch.Generator, per_channel: int = 32) -> torch.Tensor:
    """Least-squares input std per channel from noise probes, one channel at a time: the first
    BatchNorm's input variance is ``V @ std^2`` when the layers before it are affine. Ones when it
    cannot be solved; a channel the solve leaves non-positive gets the median of the others."""
    c_in = shape[0]
    view = (1, c_in, *([1] * (len(shape) - 1)))
    x = mean.view(view).expand(c_in * per_channel, *shape).clone()
    for c in range(c_in):
        x[c * per_channel:(c + 1) * per_channel, c] += torch.randn((per_channel, *shape[1:]), generator=gen)
    with torch.no_grad():
        r = _first_bn(teacher, x)
    if r is None:
        return torch.ones(c_in)
    y = r.x.float().reshape(c_in, per_channel, r.x.shape[1], -1)  # (C_in, probes, C_bn, positions)
    v = y.transpose(1, 2).reshape(c_in, r.x.shape[1], -1).var(2, unbiased=False).T  # (C_bn, C_in)
    try:
        s2 = torch.linalg.lstsq(v.double(), target_var.double()[:, None]).solution[:, 0].float()
    except RuntimeError:
        return torch.ones(c_in)
    good = torch.isfinite(s2) & (s2 > 0)
    if not good.any():
        return torch.ones(c_in)
    s2 = torch.where(good, s2, s2[good].median())
    return s2.sqrt()


def _adam_fit(teacher, params: list[torch.Tensor], make_x, fields: list[torch.Tensor], steps: int,
              affine: bool = False) -> tuple[list[torch.Tensor], float]:
    """Adam on ``params`` (lr 0.05, cosine) minimising the first BatchNorm's standardised mismatch on
    ``make_x(*fields)`` (affine in the fields); the best parameters seen and their mismatch. ``affine``: the
    network before the first BatchNorm is affine, and the statistics come from the fields' responses computed
    once (dfkd_edge.bn_moments) instead of a forward and backward pass per step."""
    opt = torch.optim.Adam(params, lr=0.05)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    best, best_loss = [p.detach().clone() for p in params], math.inf
    moments = Moments(teacher, fields, tuple(fields[0].shape[1:])) if affine else None
    for _ in range(steps):
        if moments is None:
            loss = standardised_mismatch(_first_bn(teacher, make_x(*fields)))
        else:
            mean, var = moments.statistics(moments.coefficients(make_x))
            loss = mismatch(mean, var, moments.running_mean, moments.running_var)
        if float(loss.detach()) < best_loss:
            best_loss, best = float(loss.detach()), [p.detach().clone() for p in params]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return best, best_loss


def _standard_normal(shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """Normal draws standardised per channel over the batch and positions: an exact fit's inputs."""
    return _standard_normal_like(torch.randn(shape, generator=gen))


def _standard_normal_like(z: torch.Tensor) -> torch.Tensor:
    dims = [0] + list(range(2, z.dim()))
    return (z - z.mean(dims, keepdim=True)) / z.std(dims, keepdim=True, unbiased=False)


_SMOOTH = torch.tensor([0.25, 0.5, 0.25])
_SMOOTH_GAIN = math.sqrt(70 / 256)  # the std of unit white noise after the kernel twice, per axis


def smooth_noise(z: torch.Tensor) -> torch.Tensor:
    """``z`` (N, C, *positions) low-passed along every position axis by [1, 2, 1] / 4 twice (edges
    replicated) and scaled back to unit variance: variation smooth over a few positions, the
    scale a first layer's 3-wide filters tell apart from independent noise and from a level."""
    k = _SMOOTH.to(z.dtype).view(1, 1, 3)
    for axis in range(2, z.dim()):
        zt = z.movedim(axis, -1)
        shape = zt.shape
        flat = zt.reshape(-1, 1, shape[-1])
        for _ in range(2):
            flat = F.conv1d(F.pad(flat, (1, 1), mode="replicate"), k)
        z = (flat.reshape(shape) / _SMOOTH_GAIN).movedim(-1, axis)
    return z


def _texture_fields(shape, white: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(smooth, level): unit-variance smooth noise like ``white``, and one draw per sample and channel."""
    smooth = _standard_normal_like(smooth_noise(torch.randn(white.shape, generator=gen)))
    v = _standard_normal((white.shape[0], shape[0], *([1] * (len(shape) - 1))), gen)
    return smooth, v


def _fit_texture(teacher, shape, m: torch.Tensor, s: torch.Tensor, white: torch.Tensor, gen: torch.Generator,
                 steps: int, affine: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """(mean, white_std, smooth_std, level_std, mismatch) for inputs ``mean + white_std * white +
    smooth_std * smooth + level_std * v`` (``v`` one draw per sample and channel). Starts from the
    fit without texture (the two new parts at e^-2 of std): they grow only as far as they lower the
    mismatch, which they can because the first layer's filters weigh the three parts differently."""
    c = shape[0]
    view = (1, c, *([1] * (len(shape) - 1)))
    smooth, v = _texture_fields(shape, white, gen)
    log_w, log_p, log_o = (t.clone().requires_grad_(True) for t in (s.log(), s.log() - 2, s.log() - 2))
    a = torch.zeros(c, requires_grad=True)

    def make_x(white, smooth, v):
        return ((m + s * a).view(view) + log_w.exp().view(view) * white + log_p.exp().view(view) * smooth
                + log_o.exp().view(view) * v)

    (log_w, log_p, log_o, a), loss = _adam_fit(teacher, [log_w, log_p, log_o, a], make_x, [white, smooth, v], steps,
                                               affine)
    return m + s * a, log_w.exp(), log_p.exp(), log_o.exp(), loss


def _unit_rows(b: torch.Tensor) -> torch.Tensor:
    """``b``'s lower triangle, each row scaled to unit length: the factor of a correlation matrix."""
    low = torch.tril(b)
    return low / low.norm(dim=1, keepdim=True).clamp_min(1e-8)


def _fit_colour(teacher, shape, m: torch.Tensor, w: torch.Tensor, p: torch.Tensor, o: torch.Tensor,
                white: torch.Tensor, gen: torch.Generator, steps: int, fixed: bool = False, affine: bool = False):
    """(mean, white_std, smooth_std, level_std, correlation factor, mismatch) for inputs
    ``mean + s * K(a * white + b * smooth + c * v)``: each channel's spread ``s``, the channels mixed by one
    factor ``K`` (lower-triangular, unit rows: each channel keeps its spread, the channels correlate as
    ``K K^T``) and one texture (``a^2 + b^2 + c^2 = 1``) shared by every channel, fitted jointly from the
    texture fit's spreads and mean texture with independent channels.

    A first convolution's filters weigh mixtures of channels (a luminance filter sums them, an opponent one
    takes their differences), so the variances behind it say how the channels move together: a per-channel
    fit cannot reproduce them on photographs. One texture for every channel (a photograph's colour and its
    spatial structure vary apart) leaves the spreads no texture to trade against: with a texture per channel
    the fit reached the same mismatch with a channel's spread 30-45% off (docs/benchmarks.md).

    ``fixed``: the mean and the spreads stay as given (a user's ``--input-mean/--input-std``); only the
    correlation and the texture are read."""
    c = shape[0]
    view = (1, c, *([1] * (len(shape) - 1)))
    smooth, v = _texture_fields(shape, white, gen)
    scale = (w.pow(2) + p.pow(2) + o.pow(2)).sqrt()
    shares = torch.stack([w, p, o]).pow(2) / scale.pow(2)
    q = shares.mean(1).clamp_min(1e-4).log().clone().requires_grad_(True)
    log_s = scale.log().clone().requires_grad_(True)
    a = torch.zeros(c, requires_grad=True)
    b = torch.eye(c).requires_grad_(True)

    def make_x(white, smooth, v):
        f = torch.softmax(q, 0).sqrt()
        z = f[0] * white + f[1] * smooth + f[2] * v
        return (m + scale * a).view(view) + log_s.exp().view(view) * mix_channels(_unit_rows(b), z)

    best, loss = _adam_fit(teacher, [q, b] if fixed else [q, log_s, a, b], make_x, [white, smooth, v], steps, affine)
    q, b = best[0], best[-1]
    if not fixed:
        log_s, a = best[1], best[2]
    with torch.no_grad():
        f, s = torch.softmax(q, 0).sqrt(), log_s.exp()
        return m + scale * a, s * f[0], s * f[1], s * f[2], _unit_rows(b), loss


def fit_to_first_bn(teacher, steps: int = 100, batch: int | None = None, seed: int = 0) -> InputDomain | None:
    """Per-channel mean/std of inputs whose first-BatchNorm statistics match its running ones.

    The mean and std start from least-squares solves over probes (``_probe_mean``, ``_probe_std``);
    then Adam fits (log std, offset / std) jointly, scale-free steps, so 0-255 inputs are reached in as many
    steps as [0, 1] ones. Images and signals then get their texture (``_fit_texture``: each sample's
    level, smooth and independent variation), kept when it lowers the mismatch. None when the teacher has no observable BatchNorm."""
    spec = teacher.spec
    if not spec.taps or not spec.bn_layers:
        return None
    shape = tuple(spec.input_shape)
    c = shape[0]
    view = (1, c, *([1] * (len(shape) - 1)))
    gen = torch.Generator().manual_seed(seed)
    noise = _standard_normal((batch or fit_batch(shape), *shape), gen)
    first = _first_bn(teacher, noise[:2])
    if first is None:
        return None
    m0 = _probe_mean(teacher, shape, first.running_mean)
    s0 = _probe_std(teacher, shape, m0, first.running_var.float(), gen)
    affine = _affine(teacher, shape, s0, seed)
    log_s = s0.log().clone().requires_grad_(True)
    a = torch.zeros(c, requires_grad=True)
    (log_s, a), loss = _adam_fit(teacher, [log_s, a],
                                 lambda white: (m0 + log_s.exp() * a).view(view) + log_s.exp().view(view) * white,
                                 [noise], steps, affine)
    s = log_s.exp()
    m, level, smooth, corr = m0 + s * a, None, None, None
    detail = f"fitted to the running statistics of the first BatchNorm layer (standardised mismatch {loss:.3g}"
    fit = (m, s, s * 0, s * 0)  # mean, white, smooth, level
    if len(shape) > 1:
        m2, w2, p2, o2, loss2 = _fit_texture(teacher, shape, m, s, noise, gen, 3 * steps, affine)
        if loss2 < loss:
            detail += f"; {loss2:.3g} with each sample's level and smooth variation"
            m, s, loss, fit = m2, (w2.pow(2) + p2.pow(2)).sqrt(), loss2, (m2, w2, p2, o2)
            level, smooth = [float(v) for v in o2], [float(v) for v in p2]
    if len(shape) > 1 and c > 1:
        m3, w3, p3, o3, k, loss3 = _fit_colour(teacher, shape, *fit, noise, gen, 3 * steps, affine=affine)
        if loss3 < loss:
            detail += f"; {loss3:.3g} with the channels correlated"
            parts = _colour_parts(w3, p3, o3, k)
            m, s, loss = m3, torch.tensor(parts["std"]), loss3
            level, smooth, corr = parts["level_std"], parts["smooth_std"], parts["corr"]
    return InputDomain([float(v) for v in m], [float(v) for v in s], source="teacher-bn", detail=detail + ")",
                       level_std=level, smooth_std=smooth, corr=corr, fit_mismatch=round(float(loss), 4))


def standardised_mismatch(r) -> torch.Tensor:
    """Mean over channels of |batch mean - running mean| / running std + |log(batch var / running var)|."""
    x = r.x.float()
    dims = [0] + list(range(2, x.dim()))
    return mismatch(x.mean(dims), x.var(dims, unbiased=False), r.running_mean.float(), r.running_var.float())


def mismatch(mean: torch.Tensor, var: torch.Tensor, running_mean: torch.Tensor, running_var: torch.Tensor):
    """``standardised_mismatch`` of per-channel statistics."""
    rv = running_var.clamp_min(1e-8)
    return ((mean - running_mean).abs() / rv.sqrt() + (var.clamp_min(1e-12) / rv).log().abs()).mean()


#: the domain fit's batch holds about this many input positions (128 samples up to 32x32; at 224x224, 16)
FIT_POSITIONS = 128 * 32 * 32
#: at least this many samples: each sample's own level is one draw per sample and channel
FIT_MIN_BATCH = 16


def fit_batch(shape: tuple[int, ...]) -> int:
    """The domain fit's batch for inputs of ``shape``: 128 samples, fewer where a sample has more than 1,024
    positions (``FIT_POSITIONS``), never under ``FIT_MIN_BATCH``."""
    positions = math.prod(shape[1:]) if len(shape) > 1 else 1
    return max(FIT_MIN_BATCH, min(128, math.ceil(FIT_POSITIONS / positions)))


def _affine(teacher, shape: tuple[int, ...], scale: torch.Tensor, seed: int) -> bool:
    """The fits read the first BatchNorm's statistics from precomputed moments (dfkd_edge.bn_moments): images
    and signals whose network before that layer is affine, with few enough channels. Its own generator: the
    fits' draws stay as they were."""
    if len(shape) < 2 or basis_size(shape, 3) > MAX_BASIS:
        return False
    return is_affine(teacher, shape, scale, torch.Generator().manual_seed(seed + 1))


def infer_domain(teacher, user: InputDomain | None = None, seed: int = 0) -> InputDomain:
    """The domain every method uses: the user's, else read from the teacher, else assumed N(0, 1).

    ``teacher`` may be an Ensemble (several teachers): each member with a BatchNorm is fitted and
    the means averaged, the stds (and level and smooth spreads, when every fit has them) combined geometrically."""
    if user is not None:
        return read_colour(teacher, user, seed) if user.detail == GIVEN_SPREAD else user
    members = getattr(teacher, "members", None) or [teacher]
    fits = [d for d in (fit_to_first_bn(t, seed=seed) for t in members) if d is not None]
    if fits:
        if len(fits) == 1:
            return fits[0]
        def geo(vectors):
            return [math.exp(sum(math.log(x) for x in v) / len(fits)) for v in zip(*vectors)]

        mean = [sum(v) / len(fits) for v in zip(*(d.mean for d in fits))]
        textured = all(d.level_std is not None for d in fits)
        corr = None
        if all(d.corr is not None for d in fits):
            corr = (sum(torch.tensor(d.corr) for d in fits) / len(fits)).tolist()
        return InputDomain(mean, geo(d.std for d in fits), source="teacher-bn",
                           detail=f"fitted to the first BatchNorm layer of {len(fits)} of {len(members)} teachers",
                           level_std=geo(d.level_std for d in fits) if textured else None,
                           smooth_std=geo(d.smooth_std for d in fits) if textured else None, corr=corr,
                           fit_mismatch=max(d.fit_mismatch for d in fits))
    c = teacher.spec.input_shape[0]
    log.warning("the teacher has no BatchNorm layer that can be observed: its input domain cannot be read and "
                "N(0, 1) inputs are assumed; give --input-range LO,HI or --input-mean/--input-std if you know it")
    return InputDomain([0.0] * c, [1.0] * c, source="assumed",
                       detail="no observable BatchNorm layer and nothing given: N(0, 1) assumed")


__all__ = ["GIVEN_SPREAD", "InputDomain", "SOURCES", "corr_pairs", "fit_to_first_bn", "infer_domain", "mix_channels",
           "read_colour", "standardised_mismatch", "user_domain"]
