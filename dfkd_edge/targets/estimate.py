"""Estimated latency for targets that cannot be reached: a per-layer roofline over the ONNX graph.

For each node: FLOPs (2 x multiply-accumulates for Conv/Gemm/MatMul, one per output element for
pooling and element-wise ops) and bytes (weights + inputs + outputs at the precision's width:
int8 1 byte, fp16 2, fp32 4). A node's time is max(FLOPs / (peak x compute_efficiency),
bytes / (bandwidth x bandwidth_efficiency)); layers a runtime fuses into the preceding kernel
(activations, BatchNorm, Q/DQ, reshapes) add their bytes to that kernel but no launch. The
estimate is the sum of kernel times + ``kernel_overhead_us`` per kernel + ``fixed_overhead_us``.

Every number but the graph's comes from the target profile (peaks and bandwidth with sources,
efficiencies and overheads as stated assumptions). It is a model, not a measurement: rows say
``kind = "estimated"`` and carry their assumptions; p90/p99 are not estimated (null).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dfkd_edge.targets.host import LatencyRow
from dfkd_edge.targets.profile import TargetProfile

BYTES = {"int8": 1, "fp16": 2, "fp32": 4}
WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")
FUSED = ("Relu", "LeakyRelu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "BatchNormalization",
         "QuantizeLinear", "DequantizeLinear", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity",
         "Dropout", "Cast")


@dataclass
class LayerCost:
    name: str
    op: str
    flops: float
    bytes: float
    kernel: bool


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
    costs = []
    for n in model.graph.node:
        out_elems = sum(numel(o) for o in n.output)
        in_elems = sum(numel(i) for i in n.input if i and i not in inits)
        w_elems = sum(numel(i) for i in n.input if i in inits)
        if n.op_type in ("Conv", "ConvTranspose"):
            w = shapes.get(n.input[1], ())
            macs = out_elems * float(np.prod(w[1:])) if w else 0.0  # per output: Cin/groups x kernel
            flops = 2 * macs
        elif n.op_type in ("Gemm", "MatMul"):
            k = shapes.get(n.input[0], (0,))[-1]
            flops = 2.0 * out_elems * k
        else:
            flops = max(out_elems, in_elems)
        if not out_elems:  # Constant, Shape, ...: no float tensor written
            continue
        costs.append(LayerCost(n.name or n.op_type, n.op_type, flops, (in_elems + out_elems + w_elems) * width,
                               kernel=n.op_type not in FUSED))
    return costs


def at_width(costs: list[LayerCost], precision: str) -> list[LayerCost]:
    """The same layers with bytes at ``precision``'s width (``costs`` counted at fp32)."""
    f = BYTES[precision] / BYTES["fp32"]
    return [LayerCost(c.name, c.op, c.flops, c.bytes * f, c.kernel) for c in costs]


def estimate_ms(costs: list[LayerCost], profile: TargetProfile, precision: str) -> dict:
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
    fp32_costs = {b: layer_costs(onnx_path, b, "fp32") for b in batches}  # one shape inference per batch
    for precision in profile.precisions:
        for b in batches:
            est = estimate_ms(at_width(fp32_costs[b], precision), profile, precision)
            ms = round(est["ms"], 4)
            row = LatencyRow(model=model, precision=precision, backend=backend_for(profile), device=profile.name,
                             kind="estimated", batch=b, p50_ms=ms, p90_ms=None, p99_ms=None,
                             throughput_qps=round(b / (est["ms"] / 1e3), 1), runs=0).to_dict()
            rows.append(row)
            detail.append({"precision": precision, "batch": b, **{k: v for k, v in est.items() if k != "ms"}})
    assumptions = {"method": "per-layer roofline over the ONNX graph", **profile.estimate,
                   "peak_ops_per_s": profile.peak, "bandwidth_gbs": profile.bandwidth_gbs,
                   "sources": profile.sources, "layers": detail}
    return rows, assumptions
