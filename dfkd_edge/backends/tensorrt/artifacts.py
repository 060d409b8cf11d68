"""What a TensorRT target needs to build its engine on the device: the S8S8 Q/DQ ONNX (checked against
TensorRT's placement rules, with the guardrail when it disagrees with fp32), an fp16 ONNX, a calibration cache
per TensorRT 10.x version and ``build_<target>.sh``; targets.json records what was checked. Every layer left
in float by the guardrail is an outcome (``int8_usable: false``: fp16 or fp32 on the device), not an error."""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

from dfkd_edge.backends import predict
from dfkd_edge.backends.onnxruntime import OrtRunner
from dfkd_edge.backends.tensorrt.qdq import (all_float_violations, quantize_for_tensorrt, tensorrt_qdq_violations,
                                             write_calibration_cache)
from dfkd_edge.backends.tensorrt.script import write_build_script
from dfkd_edge.errors import PipelineError
from dfkd_edge.export.quantize import (GUARD_MEASURE, RANGE_CACHE, CalibConfig, check_threshold, guardrail,
                                      input_name, weighted_agreement)
from dfkd_edge.io import atomic_path, atomic_write_json
from dfkd_edge.runfiles import TARGETS_JSON, Artifacts, build_script_name

log = logging.getLogger(__name__)


def write_tensorrt_artifacts(out: Path, profiles: list, input_shape, calib_x, x_hold, calib: CalibConfig,
                             threads: int, names: Artifacts, deadline: float | None = None) -> list[str]:
    """The files TensorRT targets share and each one's build script, in ``out`` (which holds ``names.onnx_fp32``):
    the Q/DQ model (``calib_x`` calibrates it, ``x_hold`` checks it), the fp16 model, a calibration cache per
    TensorRT 10.x version, ``build_<target>.sh`` and targets.json; the list of files written. ``deadline`` (the
    run's ``--time-budget``) bounds the guardrail as in dfkd_edge.export.quantize.guardrail."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    out = Path(out)
    doc = _qdq_model(out, calib_x, x_hold, calib, threads, names, deadline)
    with atomic_path(out / names.onnx_fp16) as tmp:
        onnx.save(convert_float_to_float16(onnx.load(str(out / names.onnx_fp32)), keep_io_types=True), str(tmp))
    written = [names.onnx_trt_qdq, names.onnx_fp16]
    caches = {}
    for p in profiles:
        if p.tensorrt[0] <= 10 and p.tensorrt_version not in caches:  # TensorRT 11 has no calibration caches
            caches[p.tensorrt_version] = names.calib_cache(p.tensorrt_version)
            write_calibration_cache(out / names.onnx_fp32, calib_x, p.tensorrt_version,
                                    out / caches[p.tensorrt_version])
            written.append(caches[p.tensorrt_version])
        files = {"qdq": names.onnx_trt_qdq, "fp32": names.onnx_fp32, "fp16": names.onnx_fp16,
                 "cache": caches.get(p.tensorrt_version, ""), "model": names.model}
        write_build_script(out / build_script_name(p.name), p, files, input_name(out / names.onnx_fp32),
                           tuple(input_shape))
        written.append(build_script_name(p.name))
    doc.update(calibration_caches=caches, calibration_samples=int(len(calib_x)),
               build_scripts={p.name: build_script_name(p.name) for p in profiles})
    written.append(TARGETS_JSON)
    atomic_write_json(out / TARGETS_JSON, {"tensorrt": doc})
    return written


def _qdq_model(out: Path, calib_x, x_hold, calib: CalibConfig, threads: int, names: Artifacts,
               deadline: float | None = None) -> dict:
    """The S8S8 Q/DQ model, the guardrail run on it when it disagrees with fp32, the rules checked."""
    from onnxruntime.quantization import quant_pre_process

    work = Path(tempfile.mkdtemp(prefix=".trt-", dir=out))
    try:
        pre = work / "pre.onnx"
        quant_pre_process(str(out / names.onnx_fp32), str(pre), skip_symbolic_shape=False)
        quantize_for_tensorrt(pre, out / names.onnx_trt_qdq, calib_x, calib.method, ranges=work / RANGE_CACHE)
        weighted, agreement, guard = _guard(out, pre, work, calib_x, x_hold, calib, threads, names, deadline)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    violations, all_float = all_float_violations(tensorrt_qdq_violations(out / names.onnx_trt_qdq),
                                                 guard["triggered"])
    if all_float:
        guard["int8_usable"] = False
        log.warning("TensorRT int8: every layer had to stay in float to agree with fp32; the TensorRT targets "
                    "get fp16 or fp32")
    if violations:
        raise PipelineError("the TensorRT Q/DQ model breaks TensorRT's placement rules: " + "; ".join(violations[:5]))
    return {"qdq_model": names.onnx_trt_qdq, "fp16_model": names.onnx_fp16, "qdq_rule_violations": violations,
            "qdq_agreement_with_fp32": agreement, "qdq_weighted_agreement": weighted,
            "agreement_samples": int(len(x_hold)), "guardrail": guard,
            "agreement_measured_with": "onnxruntime-cpu (TensorRT not available here)"}


def _guard(out: Path, pre: Path, work: Path, calib_x, x_hold, calib: CalibConfig, threads: int,
           names: Artifacts, deadline: float | None = None) -> tuple[float, float, dict]:
    """Weighted top-1 agreement of the Q/DQ model with fp32 (``weighted_agreement``, what the ONNX Runtime
    guardrail holds); below the threshold, the most sensitive layers are left in float (TensorRT runs them in
    fp16/fp32). Returns (weighted agreement, top-1 agreement, the guardrail's record)."""
    with OrtRunner(out / names.onnx_fp32, threads) as r32:
        fp32_outputs = predict(r32, x_hold)
    def int8_top1():
        with OrtRunner(out / names.onnx_trt_qdq, threads, "int8") as rq:
            return predict(rq, x_hold).argmax(1)

    q_top1 = int8_top1()
    agreement = weighted_agreement(fp32_outputs, q_top1)
    n_sure, threshold = check_threshold(fp32_outputs, calib.min_agreement, warn=False)  # calibrate warned
    guard = {"measure": GUARD_MEASURE, "threshold": threshold, "threshold_asked": calib.min_agreement,
             "triggered": agreement < threshold, "sure_samples": n_sure, "agreement_before": agreement,
             "excluded": [], "held": True}
    if guard["triggered"]:
        cfg = CalibConfig(**{**asdict(calib), "threads": threads, "min_agreement": threshold})
        final, found = guardrail(pre, "", calib_x, x_hold, fp32_outputs, cfg, work, quantize=lambda out, ex:
                                 quantize_for_tensorrt(pre, out, calib_x, calib.method, exclude=ex,
                                                       ranges=work / RANGE_CACHE), deadline=deadline)
        if found["held"] or found["agreement"] > agreement:  # else layers in float did not help: plain stays
            shutil.move(str(final), str(out / names.onnx_trt_qdq))
            agreement, q_top1 = found["agreement"], int8_top1()
            guard.update(excluded=found["excluded"], held=found["held"])
        else:
            guard.update(held=False)
        if found.get("cut_by_budget"):
            guard["cut_by_budget"] = found["cut_by_budget"]
    return agreement, float((q_top1 == fp32_outputs.argmax(1)).mean()), guard

