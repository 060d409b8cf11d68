"""What one sample costs a network on this machine: a short probe of its forward pass and of a forward and
backward pass to the input (what every input optimiser repeats), and the memory autograd keeps per sample for
that backward. The run's plan (dfkd_edge.plan) multiplies these by what each stage repeats.

The memory is counted on 2 samples (:func:`saved_per_sample`); the time is taken at the batch the caller will
run (a synthesis batch: per sample, a batch whose activations leave the caches costs more, 54 against 32 ms on
MobileNetV2 at 224x224 between 27 and 4 samples), once to warm up and then ``REPEATS`` times, keeping the
fastest: a busy machine slows some repeats, never speeds one up.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from dfkd_edge.backends.base import predict_batch
from dfkd_edge.backends.onnxruntime import OrtRunner
from dfkd_edge.compute import Compute
from dfkd_edge.export.quantize import CalibConfig, preprocessed, quantize_one

#: timed repeats after the warm-up (the fastest is kept)
REPEATS = 2


@dataclass
class Probe:
    forward_s: float  # seconds per sample, no gradient
    train_s: float  # seconds per sample, forward and backward to the input
    saved_bytes: int  # bytes autograd keeps per sample between the forward and the backward
    batch: int  # the samples per pass the probe timed
    device: str
    loop: bool = False  # train_s timed as one step of the loop that repeats it (a synthesis step), not a bare pass
    ort_forward_s: float | None = None  # seconds per sample of the network's fp32 ONNX under ONNX Runtime (None: unknown)
    export_s: float | None = None  # seconds torch.onnx took to export it
    setup_s: float = 0.0  # with ``loop``: seconds a batch of the loop costs beyond its steps (its start, its set-up)
    onnx_bytes: int | None = None  # bytes of its fp32 ONNX file (its weights, mostly)
    activation_bytes: int | None = None  # bytes of every float tensor its ONNX graph computes for one sample
    int8_forward_s: dict | None = None  # seconds per sample of each int8 format of its ONNX (``int8_forward_s``)

    def to_dict(self) -> dict:
        return {k: (round(v, 6) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "Probe":
        return cls(**{k: d[k] for k in ("forward_s", "train_s", "saved_bytes", "batch", "device")},
                   loop=bool(d.get("loop", False)), ort_forward_s=d.get("ort_forward_s"), export_s=d.get("export_s"),
                   setup_s=float(d.get("setup_s") or 0.0), onnx_bytes=d.get("onnx_bytes"),
                   activation_bytes=d.get("activation_bytes"), int8_forward_s=d.get("int8_forward_s"))

    @property
    def ort_s(self) -> float:
        """Seconds per sample of an fp32 pass under ONNX Runtime: measured where the probe could, else PyTorch's."""
        return self.ort_forward_s if self.ort_forward_s is not None else self.forward_s

    def int8_share(self, fmt: str | None, default: float) -> float:
        """An int8 pass of ``fmt`` (None: the fastest format, the one that ships unless the check refuses it) as a
        share of the fp32 pass under ONNX Runtime: measured where the probe timed it, else ``default``."""
        timed = self.int8_forward_s or {}
        if fmt is not None and fmt in timed and timed[fmt] is None:
            return 0.0  # it failed to quantize or to load: calibration records the failure, no pass runs
        s = min((v for v in timed.values() if v is not None), default=None) if fmt is None else timed.get(fmt)
        return default if s is None or not self.ort_forward_s else s / self.ort_forward_s


def _sync(compute: Compute) -> None:
    if compute.is_cuda:
        torch.cuda.synchronize()


def _fastest(fn, compute: Compute, repeats: int = REPEATS) -> float:
    fn()
    _sync(compute)
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(compute)
        best = min(best, time.perf_counter() - t)
    return best


def _draw(n: int, input_shape: tuple[int, ...], compute: Compute) -> torch.Tensor:
    return compute.to(torch.randn((n, *input_shape), generator=torch.Generator().manual_seed(0)))


def saved_per_sample(module, input_shape: tuple[int, ...], compute: Compute | None = None, weights=None) -> int:
    """Bytes autograd keeps per sample between ``module``'s forward and backward passes (2 samples counted), less
    ``weights`` (the module's parameters and buffers by default), which it keeps once whatever the batch."""
    compute = compute or Compute()
    if weights is None:
        weights = [*module.parameters(), *module.buffers()]
    weights = {t.untyped_storage().data_ptr() for t in weights}
    saved = 0

    def pack(t):
        nonlocal saved
        if t.untyped_storage().data_ptr() not in weights:
            saved += t.numel() * t.element_size()
        return t

    u = _draw(2, input_shape, compute).requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), compute.autocast():
        out = module(u)
    out.float().sum().backward()
    return int(saved / 2)


def weights_of(teacher) -> list:
    """A teacher's (or several teachers') parameters and buffers: what ``saved_per_sample`` leaves out."""
    members = getattr(teacher, "members", None) or [teacher]
    return [p for t in members for p in (*t.module.parameters(), *t.module.buffers())]


#: the quick probe's (repeats, loop steps): 4 synthesis steps instead of 9 (``probe``'s ``quick``)
QUICK = (1, 2)

#: a loop's step is timed as (t(LOOP_STEPS) - t(1)) / (LOOP_STEPS - 1) after one step to warm up: what the loop
#: does once per batch (its start, its lazy set-up) cancels out
LOOP_STEPS = 3


def step_seconds(run, compute: Compute | None = None, repeats: int = REPEATS,
                 steps: int = LOOP_STEPS) -> tuple[float, float]:
    """Seconds one more step of ``run(steps)`` costs (``run`` does a whole batch's loop of ``steps`` steps), and
    the seconds the batch costs beyond its steps (``repeats`` timings of 1 and ``steps`` steps, the fastest)."""
    compute = compute or Compute()

    def timed(k: int) -> float:
        t = time.perf_counter()
        run(k)
        _sync(compute)
        return time.perf_counter() - t

    timed(1)
    best = (math.inf, math.inf)
    for _ in range(repeats):  # the fastest: what slows a probe (another process, a page fault) only adds
        one, more = timed(1), timed(steps)
        step = max(more - one, 0.0) / (steps - 1) or more / steps
        best = min(best, (step, max(one - step, 0.0)))
    return best


def probe(module, input_shape: tuple[int, ...], batch: int, compute: Compute | None = None,
          saved_bytes: int | None = None, loop=None, quick: bool = False) -> Probe:
    """Time ``module`` on ``batch`` samples of ``input_shape`` (N(0, 1) draws: the cost does not depend on the
    values) where ``compute`` says, under its autocast; ``saved_bytes`` from :func:`saved_per_sample`. With
    ``loop`` (``loop(steps)`` runs a batch of ``batch`` samples through the loop that repeats the backward, e.g.
    a synthesis batch of ``steps`` steps), ``train_s`` is one step of that loop (:func:`step_seconds`) instead
    of a bare forward and backward pass: the loop's own work per step is counted. ``quick`` (``QUICK``): each
    figure timed once, the loop's step from 1 and 2 steps, for a plan that is read, not run (``dfkd-edge
    inspect``)."""
    compute = compute or Compute()
    n = max(1, int(batch))
    x = _draw(n, input_shape, compute)

    def forward():
        with torch.no_grad(), compute.autocast():
            module(x)

    def train():
        u = x.detach().requires_grad_(True)
        with compute.autocast():
            out = module(u)
        out.float().sum().backward()

    if saved_bytes is None:
        saved_bytes = saved_per_sample(module, input_shape, compute)
    repeats, steps = QUICK if quick else (REPEATS, LOOP_STEPS)
    train_s, setup_s = (step_seconds(loop, compute, repeats, steps) if loop is not None
                        else (_fastest(train, compute, repeats), 0.0))
    return Probe(forward_s=_fastest(forward, compute, repeats) / n, train_s=train_s / n, saved_bytes=int(saved_bytes),
                 batch=n, device=str(compute.torch_device), loop=loop is not None, setup_s=setup_s)


#: samples per ONNX Runtime call the probe times (what predictions run at, up to this many)
ORT_PROBE_BATCH = 8


def onnx_forward_s(path, input_shape: tuple[int, ...], threads: int) -> float:
    """Seconds per sample of the ONNX model at ``path`` under ONNX Runtime on the CPU with ``threads``: one warm-up
    call, then the fastest of ``REPEATS``, at the batch predictions run at (up to ``ORT_PROBE_BATCH``)."""
    x = np.random.default_rng(0).standard_normal((1, *input_shape)).astype(np.float32)
    n = min(ORT_PROBE_BATCH, predict_batch(x))
    x = np.repeat(x, n, 0)
    with OrtRunner(path, threads, "fp32") as r:
        return _fastest(lambda: r.infer(x), Compute()) / n


#: random inputs each int8 format of the speed probe is calibrated on: what a model computes in int8, and so its
#: speed, does not depend on the ranges
INT8_PROBE_SAMPLES = 2


def int8_forward_s(path, input_shape: tuple[int, ...], cfg: CalibConfig, threads: int, work: Path) -> dict[str, float]:
    """Seconds per sample of each of ``cfg``'s int8 formats of the ONNX model at ``path`` under ONNX Runtime, timed
    as ``onnx_forward_s`` times fp32: the model pre-processed and quantized as calibration quantizes it (``cfg``),
    on ``INT8_PROBE_SAMPLES`` N(0, 1) draws; None for a format that fails to quantize or to load. How much faster int8
    runs than fp32 differs from network to network (0.25x-2.9x of fp32 on the six reference networks at 224x224),
    and calibration's check passes and the stages after it run the int8 model."""
    pre = preprocessed(path, work)
    x = np.random.default_rng(0).standard_normal((INT8_PROBE_SAMPLES, *input_shape)).astype(np.float32)
    out = {}
    for fmt in cfg.formats:
        q = Path(work) / f"int8-probe-{fmt}.onnx"
        try:
            quantize_one(pre, q, x, fmt, cfg)
            out[fmt] = onnx_forward_s(q, input_shape, threads)
        except Exception:  # noqa: BLE001 - a format the network does not take (calibration says why)
            out[fmt] = None
    return out


def onnx_figures(path) -> tuple[int, int]:
    """(bytes of the ONNX file at ``path``, bytes of every float tensor its graph computes for one sample, from
    ONNX shape inference: what a calibration pass makes every node output). A dimension shape inference leaves
    unknown counts as 1."""
    import onnx

    m = onnx.shape_inference.infer_shapes(onnx.load(str(path)))
    total = 0
    for v in list(m.graph.value_info) + list(m.graph.output):
        t = v.type.tensor_type
        if t.elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in t.shape.dim]
        total += int(np.prod(dims[1:])) * (4 if t.elem_type == onnx.TensorProto.FLOAT else 2)
    return Path(path).stat().st_size, total
