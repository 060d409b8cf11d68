"""What TensorRT needs from us before it runs: an explicitly quantized (Q/DQ) ONNX and a calibration cache.

TensorRT 10.1 deprecated and TensorRT 11 removed implicit int8 calibration: int8 comes as Q/DQ
nodes in the ONNX, **symmetric** (int8, zero point 0), activations per tensor, weights per
output channel, bias left in float. ONNX Runtime's static quantizer writes exactly that with
S8S8, ``ActivationSymmetric`` and ``WeightSymmetric``, ``QuantizeBias=False`` and Q->DQ pairs
on the float weights (the pattern TensorRT's own QAT exporters write). :func:`tensorrt_qdq_violations`
checks the placement rules of TensorRT's developer guide ("Explicit quantization") on the result.

For TensorRT 10.x implicit builds (JetPack 6) a calibration cache in TensorRT's own text format
is written too: a header ``TRT-<version>-EntropyCalibration2`` and one ``tensor: hex`` line per
tensor, hex being the big-endian IEEE-754 bits of the scale ``amax / 127``. The amax values are
measured on the synthesized calibration samples (max |x| per tensor: TensorRT's entropy
calibrator would choose a clipped range; plain max is what a MinMax calibrator writes).
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from dfkd_edge.export.quantize import _Reader, calibration_options, input_name, range_cache
from dfkd_edge.io import atomic_path, atomic_write_text

QUANTIZABLE = ("Conv", "ConvTranspose", "Gemm", "MatMul")
CALIBRATOR_TAG = "EntropyCalibration2"
#: the two rule violations of a model whose every layer is in float
NOT_QUANTIZED, NOTHING_INT8 = "the model is not explicitly quantized", "nothing runs in int8"

def quantize_for_tensorrt(pre_path: Path, out_path: Path, calib_x: np.ndarray, method: str = "minmax",
                          exclude: list[str] | None = None, ranges: Path | None = None) -> Path:
    """S8S8 symmetric Q/DQ ONNX for TensorRT from a (pre-processed) fp32 ONNX; ``ranges``: the calibration
    cache of these samples (dfkd_edge.export.quantize.range_cache)."""
    import onnxruntime.quantization as q

    cm = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
          "percentile": q.CalibrationMethod.Percentile}[method]
    with atomic_path(Path(out_path)) as tmp:
        q.quantize_static(str(pre_path), str(tmp), _Reader(input_name(pre_path), calib_x),
                          quant_format=q.QuantFormat.QDQ, activation_type=q.QuantType.QInt8,
                          weight_type=q.QuantType.QInt8, per_channel=True, calibrate_method=cm,
                          nodes_to_exclude=list(exclude or []),
                          extra_options={"ActivationSymmetric": True, "WeightSymmetric": True,
                                         "QuantizeBias": False, "AddQDQPairToWeight": True,
                                         "QDQKeepRemovableActivations": True, **calibration_options(method)},
                          **range_cache(ranges))
    return Path(out_path)


def _const(graph, name: str):
    from onnx import numpy_helper

    for init in graph.initializer:
        if init.name == name:
            return numpy_helper.to_array(init)
    for n in graph.node:
        if n.op_type == "Constant" and n.output[0] == name:
            return numpy_helper.to_array(n.attribute[0].t)
    return None


def _attr(node, name: str, default=None):
    for a in node.attribute:
        if a.name == name:
            return a.i if a.type == a.INT else a.f
    return default


def tensorrt_qdq_violations(path: str | Path) -> list[str]:
    """Every way the Q/DQ ONNX at ``path`` breaks TensorRT's explicit-quantization rules (empty: none).

    Rules checked: opset >= 13; Q and DQ are int8 with an all-zero zero point (symmetric) and a
    positive finite scale; activation Q/DQ are per tensor; weight Q/DQ are per channel along the
    output-channel axis (Conv 0, Gemm 0 when transB else 1, MatMul 1); a quantized Conv/Gemm/MatMul
    (one whose weight comes through DequantizeLinear) reads its data through DequantizeLinear too, fed
    by a QuantizeLinear (a layer with float weights is a float layer, which TensorRT runs in fp16/fp32,
    even when its input passed a Q/DQ pair; at least one layer must be quantized); the bias is not quantized; no DQ feeds another DQ directly."""
    import onnx

    model = onnx.load(str(path))
    g = model.graph
    out: list[str] = []
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < 13:
        out.append(f"opset {opset} < 13: per-channel Q/DQ needs opset 13")
    producer = {o: n for n in g.node for o in n.output}
    weight_dq, float_layers = _check_layers(g, producer, out)
    if not any(n.op_type == "QuantizeLinear" for n in g.node):
        out.append(f"no QuantizeLinear/DequantizeLinear nodes: {NOT_QUANTIZED}")
    if float_layers and len(float_layers) == sum(n.op_type in QUANTIZABLE for n in g.node):
        out.append(f"no Conv/Gemm/MatMul reads its inputs through DequantizeLinear: {NOTHING_INT8}")
    _check_qdq_nodes(g, producer, weight_dq, out)
    return out


def all_float_violations(violations: list[str], guard_triggered: bool) -> tuple[list[str], bool]:
    """(the placement-rule violations that are errors, whether every layer stayed in float). When the
    guardrail had to leave every layer in float, a model without Q/DQ nodes, or with no layer reading int8,
    is its expected outcome, not a placement error: int8 buys nothing for TensorRT there, and the
    recommendation takes fp16 or fp32."""
    if not guard_triggered:
        return violations, False
    rest = [v for v in violations if NOT_QUANTIZED not in v and NOTHING_INT8 not in v]
    return rest, len(rest) < len(violations)


def _check_layers(g, producer: dict, out: list[str]) -> tuple[dict[str, int], list[str]]:
    """The quantized layers' inputs, weights and bias (appends to ``out``); the weight Q/DQ nodes with
    their expected axis, and the float layers."""
    weights = {i.name for i in g.initializer}
    weight_dq: dict[str, int] = {}  # DQ node name -> expected axis, from the layers they feed
    float_layers: list[str] = []
    for n in g.node:
        if n.op_type not in QUANTIZABLE:
            continue
        w = producer.get(n.input[1])
        if w is None or w.op_type != "DequantizeLinear":
            float_layers.append(n.name)  # float weights: a float layer (the guardrail's), run in fp16/fp32
            continue
        for idx, role in ((0, "data"), (1, "weight")):
            dq = producer.get(n.input[idx])
            if dq is None or dq.op_type != "DequantizeLinear":
                out.append(f"{n.name}: {role} input {n.input[idx]!r} does not come from DequantizeLinear")
                continue
            q = producer.get(dq.input[0])
            if role == "data" and (q is None or q.op_type != "QuantizeLinear"):
                out.append(f"{n.name}: data DequantizeLinear {dq.name} is not fed by QuantizeLinear")
            if role == "weight":
                src = q.input[0] if q is not None and q.op_type == "QuantizeLinear" else dq.input[0]
                if src not in weights:
                    out.append(f"{n.name}: weight {src!r} is not a constant initializer")
                axis = 0
                if n.op_type == "Gemm":
                    axis = 0 if _attr(n, "transB", 0) else 1
                elif n.op_type == "MatMul":
                    axis = 1
                elif n.op_type == "ConvTranspose":
                    axis = 1
                weight_dq[dq.name] = axis
                if q is not None and q.op_type == "QuantizeLinear":
                    weight_dq[q.name] = axis
        if len(n.input) > 2 and n.input[2]:
            b = producer.get(n.input[2])
            if b is not None and b.op_type == "DequantizeLinear":
                out.append(f"{n.name}: bias is quantized (TensorRT keeps bias in float)")
    return weight_dq, float_layers


def _check_qdq_nodes(g, producer: dict, weight_dq: dict[str, int], out: list[str]) -> None:
    """Each Q/DQ node: constant positive scale, int8 zero point 0, per-channel weights on the right axis,
    per-tensor activations, no DQ feeding a DQ (appends to ``out``)."""
    for n in g.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        scale, zp = _const(g, n.input[1]), _const(g, n.input[2]) if len(n.input) > 2 else None
        if scale is None:
            out.append(f"{n.name}: scale is not a constant")
            continue
        if not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
            out.append(f"{n.name}: scale not positive and finite")
        if zp is None or zp.dtype != np.int8:
            out.append(f"{n.name}: zero point must be int8 (symmetric int8), got {None if zp is None else zp.dtype}")
        elif np.any(zp != 0):
            out.append(f"{n.name}: zero point not 0 (TensorRT quantization is symmetric)")
        if n.name in weight_dq:
            if scale.ndim != 1 or scale.size < 1:
                out.append(f"{n.name}: weight scale should be per channel (1-D)")
            elif _attr(n, "axis", 1) != weight_dq[n.name]:
                out.append(f"{n.name}: weight per-channel axis {_attr(n, 'axis', 1)}, expected {weight_dq[n.name]}")
        elif scale.size != 1:
            out.append(f"{n.name}: activation scale must be per tensor, got {scale.size} values")
        if n.op_type == "DequantizeLinear":
            p = producer.get(n.input[0])
            if p is not None and p.op_type == "DequantizeLinear":
                out.append(f"{n.name}: DequantizeLinear fed by DequantizeLinear")


def tensor_amax(fp32_path: str | Path, calib_x: np.ndarray, batch: int = 64) -> dict[str, float]:
    """max |x| of the input and of every float tensor a node writes, over ``calib_x`` (ONNX Runtime, CPU)."""
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(fp32_path))
    model = onnx.shape_inference.infer_shapes(model)
    g = model.graph
    float_t = {vi.name for vi in list(g.value_info) + list(g.output) + list(g.input)
               if vi.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    wanted = [o for n in g.node for o in n.output if o in float_t and o not in {x.name for x in g.output}]
    for name in wanted:
        g.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL  # keep every tensor
    so.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    in_name = sess.get_inputs()[0].name
    names = [o.name for o in sess.get_outputs()]
    amax = dict.fromkeys([in_name] + names, 0.0)
    for i in range(0, len(calib_x), batch):
        xb = np.ascontiguousarray(calib_x[i:i + batch], dtype=np.float32)
        amax[in_name] = max(amax[in_name], float(np.abs(xb).max()))
        for name, v in zip(names, sess.run(names, {in_name: xb})):
            if v.size:
                amax[name] = max(amax[name], float(np.abs(v).max()))
    return amax


def trt_version_tag(version: str) -> int:
    """TensorRT's NV_TENSORRT_VERSION: 8.6.1 -> 8601; 10.3.0 -> 100300 (the encoding changed at 10)."""
    major, minor, patch = (int(v) for v in version.split("."))
    return major * 10000 + minor * 100 + patch if major >= 10 else major * 1000 + minor * 100 + patch


def calibration_cache_text(amax: dict[str, float], trt_version: str) -> str:
    lines = [f"TRT-{trt_version_tag(trt_version)}-{CALIBRATOR_TAG}"]
    for name in sorted(amax):
        scale = max(amax[name], 1e-8) / 127.0  # an all-zero tensor still needs a usable scale
        lines.append(f"{name}: {struct.pack('>f', scale).hex()}")
    return "\n".join(lines) + "\n"


def parse_calibration_cache(text: str) -> tuple[int, dict[str, float]]:
    """(version tag, tensor -> scale) from a TensorRT calibration cache."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines or not lines[0].startswith("TRT-"):
        raise ValueError("not a TensorRT calibration cache: the first line must be TRT-<version>-<calibrator>")
    tag = int(lines[0].split("-")[1])
    scales = {}
    for ln in lines[1:]:
        name, _, hexv = ln.rpartition(": ")
        scales[name] = struct.unpack(">f", bytes.fromhex(hexv.strip()))[0]
    return tag, scales


def write_calibration_cache(fp32_path: Path, calib_x: np.ndarray, trt_version: str, out: Path) -> dict[str, float]:
    amax = tensor_amax(fp32_path, calib_x)
    atomic_write_text(out, calibration_cache_text(amax, trt_version))
    return amax
