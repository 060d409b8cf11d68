"""Estimated latency for targets that cannot be reached: a per-layer model over the ONNX graph.

For each node: FLOPs (2 x multiply-accumulates for Conv/Gemm/MatMul, one per output element for
pooling and element-wise ops) and bytes (weights + inputs + outputs at the precision's width:
int8 1 byte, fp16 2, fp32 4). A node's time is max(FLOPs / (peak x compute_efficiency),
bytes / (bandwidth x bandwidth_efficiency)); layers a runtime fuses into the preceding kernel
(activations, BatchNorm, Q/DQ, reshapes, a residual add after a convolution) run in that kernel's
epilogue: no launch and no bytes of their own but a second operand's. The
estimate is the sum of kernel times + ``kernel_overhead_us`` per kernel + ``fixed_overhead_us``.

A Jetson profile names a *fitted* model instead (``[estimate] fit``; targets/fits/NAME.toml, written by
benchmarks/jetson_fit.py from published TensorRT latencies): dense convolutions and matrix products run
at a fraction of the Tensor Core peak, depthwise convolutions on the CUDA cores (4 int8 / 2 fp16 / 1 fp32
operations per core and FLOP slot), every kernel is limited by bandwidth as well and is slowed when its
output is too small to fill the GPU's SMs (``work / (work + fill x SMs)``, work = the kernel's output
blocks of TILE x TILE: GEMM rows (batch x positions) by output channels), and each kernel and each inference pay a fixed time. It predicts what trtexec measures for an engine built from the ONNX file,
run without CUDA graphs (the build script, ``profile --remote``); the fit's ``mlperf_harness_factor`` is the
fraction of that NVIDIA's MLPerf harness ran at, fitted to its rows and applied to no estimate. Its rows carry
the error measured on published rows held out of the fit (``error``).

Every number but the graph's comes from the target profile (peaks and bandwidth with sources) and the
fit or the profile's stated assumptions. It is a model, not a measurement: rows say
``kind = "estimated"`` and carry their assumptions; p90/p99 are not estimated (null).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np

from dfkd_edge.targets.host import LatencyRow
from dfkd_edge.errors import UserError
from dfkd_edge.targets.profile import TargetProfile

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

BYTES = {"int8": 1, "fp16": 2, "fp32": 4}
WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")
FUSED = ("Relu", "LeakyRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "BatchNormalization",
         "QuantizeLinear", "DequantizeLinear", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity",
         "Dropout", "Cast", "Concat")
#: the side of the output block a GPU kernel computes per SM at a time (CUTLASS / TensorRT tiles are 64-256)
TILE = 64
#: operations per CUDA core and FLOP slot on the GPU's vector units (dp4a int8, paired fp16)
VECTOR = {"int8": 4.0, "fp16": 2.0, "fp32": 1.0}
#: the fitted model's parameters, in the order benchmarks/jetson_fit.py searches them
FIT_PARAMS = ("tensor_efficiency", "depthwise_efficiency", "bandwidth_efficiency", "fill_blocks_per_sm",
              "kernel_us", "fixed_us")


@dataclass
class LayerCost:
    name: str
    op: str
    flops: float
    bytes: float
    kernel: bool
    kind: str = "other"  # "dense" (Tensor Core work), "depthwise" (CUDA cores), "other" (memory-bound)
    work: float = 0.0  # the parallelism the kernel offers: output blocks of TILE x TILE


def _shapes(model, batch: int) -> dict[str, tuple[int, ...]]:
    """Static shapes of the float tensors at ``batch`` (integer tensors are shape arithmetic: no cost)."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    for d in m.graph.input[0].type.tensor_type.shape.dim[:1]:
        d.ClearField("dim_param")
        d.dim_value = batch
    m = onnx.shape_inference.infer_shapes(m)
    out = {}
    for vi in list(m.graph.input) + list(m.graph.value_info) + list(m.graph.output):
        dims = vi.type.tensor_type.shape.dim
        if vi.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            continue
        if dims and all(d.HasField("dim_value") for d in dims):
            out[vi.name] = tuple(d.dim_value for d in dims)
    for init in m.graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT:
            out[init.name] = tuple(init.dims)
    return out


def layer_costs(onnx_path: str | Path, batch: int, precision: str) -> list[LayerCost]:
    """FLOPs and bytes per node of the fp32 ONNX at ``batch``, bytes at ``precision``'s width."""
    import onnx

    model = onnx.load(str(onnx_path))
    shapes = _shapes(model, batch)
    inits = {i.name for i in model.graph.initializer}
    width = BYTES[precision]
    numel = lambda name: float(np.prod(shapes[name])) if name in shapes else 0.0  # noqa: E731
    producer = {o: n for n in model.graph.node for o in n.output}

    def after_weighted(name: str) -> bool:  # the tensor leaves a Conv/Gemm through fused ops only
        n = producer.get(name)
        while n is not None and n.op_type in FUSED and n.input:
            n = producer.get(n.input[0])
        return n is not None and n.op_type in WEIGHTED

    costs = []
    for n in model.graph.node:
        out_elems = sum(numel(o) for o in n.output)
        in_elems = sum(numel(i) for i in n.input if i and i not in inits)
        w_elems = sum(numel(i) for i in n.input if i in inits)
        kind, kernel = "other", n.op_type not in FUSED
        if n.op_type in ("Conv", "ConvTranspose"):
            w = shapes.get(n.input[1], ())
            macs = out_elems * float(np.prod(w[1:])) if w else 0.0  # per output: Cin/groups x kernel
            flops = 2 * macs
            group = next((a.i for a in n.attribute if a.name == "group"), 1)
            kind = "depthwise" if group > 1 and len(w) > 1 and w[1] == 1 else "dense"
        elif n.op_type in ("Gemm", "MatMul"):
            k = shapes.get(n.input[0], (0,))[-1]
            flops = 2.0 * out_elems * k
            kind = "dense"
        else:
            flops = max(out_elems, in_elems)
            if n.op_type in ("Add", "Sum") and any(after_weighted(i) for i in n.input if i):
                kernel = False  # a residual add runs in the convolution's epilogue
        if not out_elems:  # Constant, Shape, ...: no float tensor written
            continue
        moved = in_elems + out_elems + w_elems
        if not kernel:  # runs in the producing kernel's epilogue: only a second operand is read from memory
            moved = max(in_elems - out_elems, 0.0) if n.op_type in ("Add", "Sum", "Mul") else 0.0
        out_shape = shapes.get(n.output[0], ())
        if kind != "other" and len(out_shape) >= 2 and out_shape[-1]:
            # a convolution or matrix product is tiled over its implicit GEMM: rows = batch x output positions,
            # columns = output channels, in TILE x TILE blocks, one per SM at a time
            cols = out_shape[1 if n.op_type in ("Conv", "ConvTranspose") else -1]
            work = math.ceil(out_elems / cols / TILE) * math.ceil(cols / TILE)
        else:  # element-wise: blocks of TILE x TILE elements
            work = math.ceil(out_elems / TILE ** 2)
        costs.append(LayerCost(n.name or n.op_type, n.op_type, flops, moved * width, kernel=kernel, kind=kind,
                               work=work))
    return costs


def at_width(costs: list[LayerCost], precision: str) -> list[LayerCost]:
    """The same layers with bytes at ``precision``'s width (``costs`` counted at fp32)."""
    f = BYTES[precision] / BYTES["fp32"]
    return [LayerCost(c.name, c.op, c.flops, c.bytes * f, c.kernel, c.kind, c.work) for c in costs]


def fits_dir():
    return resources.files("dfkd_edge.targets") / "fits"


def load_fit(name: str) -> dict:
    """A fitted model: ``params`` (FIT_PARAMS) and ``held_out`` (its error on published rows left out)."""
    f = fits_dir() / f"{name}.toml"
    if not f.is_file():
        raise UserError(f"no fitted latency model {name!r} (targets/fits/{name}.toml)")
    doc = tomllib.loads(f.read_text())
    missing = [k for k in FIT_PARAMS if k not in doc.get("params", {})]
    if missing:
        raise UserError(f"fitted latency model {name!r} lacks {', '.join(missing)}")
    return doc


def fitted_ms(costs: list[LayerCost], profile: TargetProfile, precision: str, params: dict) -> dict:
    """The fitted GPU model (module docstring) for ``costs`` counted at ``precision``'s width."""
    p = params
    tensor = (profile.peak.get(precision) or profile.peak["fp32"]) * p["tensor_efficiency"]
    vector = profile.peak["fp32"] * VECTOR[precision] * p["depthwise_efficiency"]
    bw = profile.bandwidth_gbs * 1e9 * p["bandwidth_efficiency"]
    fill_at = p["fill_blocks_per_sm"] * profile.sms
    t = compute_t = memory_t = 0.0
    for c in costs:
        rate = tensor if c.kind == "dense" else vector if c.kind == "depthwise" else None
        comp, mem = (c.flops / rate if rate else 0.0), c.bytes / bw
        fill = c.work / (c.work + fill_at) if c.work else 1.0
        t += max(comp, mem) / fill
        compute_t, memory_t = compute_t + comp, memory_t + mem
    kernels = sum(c.kernel for c in costs)
    total_s = t + kernels * p["kernel_us"] * 1e-6 + p["fixed_us"] * 1e-6
    return {"ms": total_s * 1e3, "roofline_ms": t * 1e3, "kernels": kernels,
            "bound": "compute" if compute_t > memory_t else "memory",
            "flops": float(sum(c.flops for c in costs)), "bytes": float(sum(c.bytes for c in costs))}


def estimate_ms(costs: list[LayerCost], profile: TargetProfile, precision: str, fit: dict | None = None) -> dict:
    """The estimate for ``costs`` on ``profile``: its fitted model (``fit`` given, or the one it names), else
    the plain roofline of its [estimate] assumptions."""
    if fit is not None or profile.fit:
        return fitted_ms(costs, profile, precision, (fit or load_fit(profile.fit))["params"])
    e = profile.estimate
    peak = profile.peak.get(precision) or profile.peak.get("fp32")
    compute = peak * e["compute_efficiency"]
    bw = profile.bandwidth_gbs * 1e9 * e["bandwidth_efficiency"]
    t = sum(max(c.flops / compute, c.bytes / bw) for c in costs)
    kernels = sum(c.kernel for c in costs)
    total_s = t + kernels * e["kernel_overhead_us"] * 1e-6 + e["fixed_overhead_us"] * 1e-6
    bound = "compute" if sum(c.flops for c in costs) / compute > sum(c.bytes for c in costs) / bw else "memory"
    return {"ms": total_s * 1e3, "roofline_ms": t * 1e3, "kernels": kernels, "bound": bound,
            "flops": float(sum(c.flops for c in costs)), "bytes": float(sum(c.bytes for c in costs))}


def backend_for(profile: TargetProfile) -> str:
    return "tensorrt" if profile.engine == "tensorrt" else "onnxruntime-cpu"


def estimate_rows(onnx_path: str | Path, profile: TargetProfile, batches=(1, 32),
                  model: str = "student") -> tuple[list[dict], dict]:
    """Estimated rows for each precision the target runs, and the assumptions behind them."""
    rows, detail = [], []
    fit = load_fit(profile.fit) if profile.fit else None
    error = estimate_error(profile, fit)
    fp32_costs = {b: layer_costs(onnx_path, b, "fp32") for b in batches}  # one shape inference per batch
    for precision in profile.precisions:
        for b in batches:
            est = estimate_ms(at_width(fp32_costs[b], precision), profile, precision, fit)
            ms = round(est["ms"], 4)
            row = LatencyRow(model=model, precision=precision, backend=backend_for(profile), device=profile.name,
                             kind="estimated", batch=b, p50_ms=ms, p90_ms=None, p99_ms=None,
                             throughput_qps=round(b / (est["ms"] / 1e3), 1), runs=0).to_dict()
            rows.append({**row, "error": error})
            detail.append({"precision": precision, "batch": b, **{k: v for k, v in est.items() if k != "ms"}})
    method = (f"per-layer model fitted to published TensorRT latencies ({profile.fit})" if fit
              else "per-layer roofline over the ONNX graph (assumed efficiencies, not fitted)")
    assumptions = {"method": method, **profile.estimate, **(fit["params"] if fit else {}),
                   "peak_ops_per_s": profile.peak, "bandwidth_gbs": profile.bandwidth_gbs, "power_mode": profile.mode,
                   "sources": profile.sources, "error": error, "layers": detail}
    return rows, assumptions


def estimate_error(profile: TargetProfile, fit: dict | None) -> str:
    """How wrong the estimate has been measured to be, in words a row can carry."""
    if fit is None:
        return ("not measured: this profile's estimate is a roofline of assumed efficiencies, never checked "
                "against the device; treat it as a rough guide")
    h = fit["held_out"]
    return (f"measured on {h['rows']} published TensorRT rows of Jetson GPUs held out of the fit ({h['scheme']}): "
            f"off by {h['median_pct']:.0f}% at the median, {h['max_pct']:.0f}% at worst (estimate / published "
            f"{h['min_ratio']:.2f}-{h['max_ratio']:.2f})")
