"""One engine per target: the recommendation and its status under the data-free verdict."""

from __future__ import annotations

from dfkd_edge.runfiles import STUDENT_FILES, Artifacts, build_script_name
from dfkd_edge.targets import TargetProfile


def recommend(profile: TargetProfile, rows: list[dict], quality: dict, target_doc: dict,
              names: Artifacts = STUDENT_FILES, calibration: dict | None = None) -> dict:
    """One engine per target: the fastest at batch 1 among those within 1 point of fp32 quality.

    ``names``: the shipped model's files (convert's student, quantize's model); its quality is accuracy
    on the eval data when given, else fidelity on held-out synthetic samples (weighted, where the run weighs it:
    dfkd_edge.export.quantize.weighted_agreement). ``calibration``
    (calibration.json): an int8 ONNX Runtime model the guardrail left wholly in float is not int8.
    Measured rows decide where the target was measured (host, or measured-remote rows merged by
    ``dfkd-edge profile --report``); otherwise estimated rows do, and the reason says so."""
    m = names.model
    basis = "accuracy" if quality["accuracy"][f"{m}_fp32"] is not None else "fidelity"
    q = quality[basis]
    # fidelity weighted by the model's probabilities where the run has it (quantize: what its guardrail holds)
    key = "_weighted" if basis == "fidelity" and f"{m}_int8_weighted" in q else ""
    ok_int8 = q[f"{m}_int8{key}"] >= q[f"{m}_fp32{key}"] - 0.01
    trt = profile.engine == "tensorrt"
    if trt:
        t = target_doc.get("tensorrt", {})
        g = t.get("guardrail", {})
        ok_int8 = (ok_int8 and t.get("qdq_weighted_agreement", 0) >= g.get("threshold", 1.0)
                   and g.get("int8_usable", True))
    else:
        ok_int8 = ok_int8 and ((calibration or {}).get("guardrail") or {}).get("int8_usable", True)
    device_rows = [r for r in rows if r["model"] == m and r["batch"] == 1
                   and r["backend"].startswith(("onnxruntime", "tensorrt"))
                   and (r["device"] == profile.name or r["device"].startswith(profile.name + " ("))]
    for kind in ("measured", "measured-remote", "estimated"):
        cands = [r for r in device_rows if r["kind"] == kind]
        if cands:
            break
    files = ({"int8": names.onnx_trt_qdq, "fp16": names.onnx_fp16, "fp32": names.onnx_fp32} if trt
             else {"int8": names.onnx_int8, "fp32": names.onnx_fp32, "fp16": names.onnx_fp16})
    ok = [r for r in cands if r["precision"] != "int8" or ok_int8]
    if not ok:
        return {"target": profile.name, "file": files["fp32"], "precision": "fp32", "backend": "unknown",
                "kind": None, "reason": "no latency rows for this target"}
    best = min(ok, key=lambda r: r["p50_ms"])
    others = ", ".join(f"{r['precision']} {r['p50_ms']:.3g} ms" for r in cands)
    reason = (f"fastest {best['kind']} at batch 1 ({others}) within 1 point of fp32 {basis} "
              f"({100 * q[m + '_' + ('int8' if best['precision'] == 'int8' else 'fp32')]:.2f}% vs "
              f"{100 * q[m + '_fp32']:.2f}%)")
    if best["kind"] == "estimated":
        reason = "not measured: " + reason + "; estimated (" + best.get("error", "error not measured") + ")"
    if trt:
        reason += (f"; build the engine on the device with {build_script_name(profile.name)} "
                   "(TensorRT engines are not portable)")
    return {"target": profile.name, "file": files[best["precision"]], "precision": best["precision"],
            "backend": best["backend"], "kind": best["kind"], "reason": reason}


def with_verdict(rec: dict, verdict: dict, subject: str = "the student") -> dict:
    """``status`` on a recommendation: the quality verdict; a reason that says so when it is not ok."""
    rec["status"] = verdict["verdict"]
    if verdict["verdict"] != "ok":
        rec["reason"] = (f"{verdict['verdict'].upper()}: {subject}'s quality cannot be vouched for without real "
                         f"data ({verdict['reasons'][0]}); check it on labelled data (--eval-data) before shipping. "
                         + rec["reason"])
    return rec
