"""Where synthesis and distillation compute: the device, mixed precision, memory format, compile.

``--device auto`` takes CUDA when PyTorch sees a GPU, else the CPU. ``--precision auto`` is bf16
autocast on a GPU that supports it (fp16 with a gradient scaler on one that does not) and fp32 on
the CPU: bf16 on the CPU is allowed when asked for (it runs, it is not faster on CPUs without
AMX/avx512-bf16). ``--channels-last auto`` uses NHWC for 2-D convolutions on a GPU (the layout
tensor cores want under autocast) and leaves the CPU in NCHW. ``--compile auto`` compiles the
student's training forward with ``torch.compile`` on a GPU and never on the CPU, where it measured
slower end to end on the digits recipe (compilation costs more than the short runs gain;
docs/benchmarks.md); ``on`` asks for it anywhere, and a compile that fails falls back to eager with a
warning.

Only the training-time computation moves: the teacher's latency figures, export and calibration stay
on the CPU as before, and every file written is the same format whatever the device.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import torch

from dfkd_edge.errors import UserError
from dfkd_edge.targets.host import host_info

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SWITCHES = ("auto", "on", "off")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Compute:
    """The resolved choices (see the module docstring); ``Compute()`` is today's CPU fp32 eager."""

    device: str = "cpu"  # "cpu" or "cuda:N"
    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device)

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")

    def autocast(self):
        """The autocast context of this precision (a no-op for fp32)."""
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.torch_device.type, dtype=_DTYPES[self.precision])

    def grad_scaler(self):
        """A gradient scaler for fp16 (bf16 and fp32 need none: it is then a pass-through)."""
        return torch.amp.GradScaler(self.torch_device.type, enabled=self.precision == "fp16")

    def to(self, x: torch.Tensor) -> torch.Tensor:
        """An input batch on this device, in this memory format."""
        x = x.to(self.torch_device, non_blocking=self.is_cuda)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def module(self, m: torch.nn.Module, four_d: bool) -> torch.nn.Module:
        m = m.to(self.torch_device)
        if self.channels_last and four_d:
            m = m.to(memory_format=torch.channels_last)
        return m

    def to_dict(self) -> dict:
        return {"device": self.device, "device_name": device_name(self.device), "precision": self.precision,
                "channels_last": self.channels_last, "compile": self.compile}


def device_name(device: str) -> str:
    if device.startswith("cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(torch.device(device))

    return host_info(1)["cpu"]


def resolve(device: str = "auto", precision: str = "auto", channels_last: str = "auto", compile: str = "auto",
            local_rank: int = 0, four_d: bool = True) -> Compute:
    """Turn the CLI's choices into a Compute; UserError for what this machine cannot do."""
    for name, value, known in (("--device", device, DEVICES), ("--precision", precision, PRECISIONS),
                               ("--channels-last", channels_last, SWITCHES), ("--compile", compile, SWITCHES)):
        if value not in known:
            raise UserError(f"unknown {name} {value!r}; known: {', '.join(known)}")
    cuda = torch.cuda.is_available()
    if device == "cuda" and not cuda:
        raise UserError("--device cuda: PyTorch sees no CUDA GPU here (a CPU build, or no driver); "
                        "use --device cpu or auto")
    use_cuda = device == "cuda" or (device == "auto" and cuda)
    dev = "cpu"
    if use_cuda:
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise UserError(f"local rank {local_rank} has no GPU of its own ({count} visible); start at most "
                            f"{count} processes per node")
        dev = f"cuda:{local_rank}"
    if precision == "auto":
        precision = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if use_cuda else "fp32"
    if precision == "fp16" and not use_cuda:
        raise UserError("--precision fp16 needs a GPU (fp16 autocast is not supported for training on the CPU); "
                        "use bf16 or fp32")
    cl = use_cuda and four_d if channels_last == "auto" else channels_last == "on"
    comp = use_cuda if compile == "auto" else compile == "on"
    return Compute(device=dev, precision=precision, channels_last=bool(cl and four_d), compile=comp)


class _GuardedCompile:
    """Calls ``torch.compile(model)``; on its first failure, warns once and calls ``model`` from then on.

    Compilation happens at the first call, on the first real batch: nothing extra runs through the
    model (an extra training-mode forward would move BatchNorm's running statistics)."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.compiled = torch.compile(model)

    def __call__(self, x):
        if self.compiled is not None:
            try:
                return self.compiled(x)
            except Exception as e:  # a guard: compile support varies by model, platform and version
                log.warning("torch.compile failed (%s: %s); training continues eager", type(e).__name__,
                            str(e).splitlines()[0] if str(e) else "")
                self.compiled = None
        return self.model(x)


def maybe_compile(model: torch.nn.Module, compute: Compute):
    """The callable a trainer runs its forward through: ``model`` itself, or a guarded compile of it."""
    return _GuardedCompile(model) if compute.compile else model
