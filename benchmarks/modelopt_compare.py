"""The TensorRT int8 model next to NVIDIA's own tool: the Q/DQ ONNX the build stage writes (``model_trt_qdq.onnx``:
ONNX Runtime's static quantizer, symmetric int8, per-channel weights, calibrated on the synthesized set) against
NVIDIA ModelOpt's ONNX quantizer (``python -m modelopt.onnx.quantization --quantize_mode int8``) given the same
fp32 ONNX and the same synthesized calibration samples.

    python3 -m venv /opt/modelopt && /opt/modelopt/bin/pip install torch==2.13.0 "nvidia-modelopt[onnx]"
    python benchmarks/modelopt_compare.py --models digits01-seq shapesz-res photoz-res photo01-mbv2 --seeds 0 1 \\
        --modelopt-python /opt/modelopt/bin/python

For each model and seed: ``dfkd-edge quantize`` of the zoo teacher (benchmarks/zoo.py) with a TensorRT target, so
that its build stage writes the Q/DQ model; ModelOpt on the run's fp32 ONNX with the run's calibration subset
of the synthesized set (the run's --calib-samples, the seed's draw). Both Q/DQ models run under ONNX Runtime on
the CPU (what runs the TensorRT Q/DQ model's arithmetic here; TensorRT cannot be installed): int8 accuracy and
agreement with fp32 on the teacher's real test split, where Q/DQ sits (quantized inputs per operator type) and
the weight layers left in float. Rows (commit, full configuration) go to benchmarks/results/modelopt-compare.jsonl.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import zoo  # noqa: E402
from bn_free import measure, modelopt_quantize  # noqa: E402
from quantize_bench import _ms, run_one  # noqa: E402

RESULTS = HERE / "results" / "modelopt-compare.jsonl"


def qdq_placement(path: Path) -> dict:
    """Which operators read a DequantizeLinear output (per op type), and the Conv/Gemm/MatMul left in float."""
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph
    producer = {o: n for n in g.node for o in n.output}
    reads = collections.Counter()
    weighted = float_layers = 0
    for n in g.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if any(producer.get(i) is not None and producer[i].op_type == "DequantizeLinear" for i in n.input if i):
            reads[n.op_type] += 1
        if n.op_type in ("Conv", "Gemm", "MatMul"):
            weighted += 1
            data = producer.get(n.input[0])
            if data is None or data.op_type != "DequantizeLinear":
                float_layers += 1
    return {"quantized_inputs": dict(sorted(reads.items())), "weight_layers": weighted,
            "float_weight_layers": float_layers,
            "q_nodes": sum(n.op_type == "QuantizeLinear" for n in g.node)}


def run_model(meta: dict, seed: int, threads: int, work: Path, modelopt: str) -> dict:
    from dfkd_edge.backends import predict
    from dfkd_edge.backends.onnxruntime import OrtRunner
    from dfkd_edge.export.quantize import calibration_subset
    from dfkd_edge.runfiles import MODEL_FILES, TRANSFER_SET

    row = run_one(meta, seed, None, threads, work, "pytorch", {"targets": ("jetson-orin-nano", "host-cpu")})
    run = work / f"{meta['name']}-{seed}"
    fp32, ours = run / MODEL_FILES.onnx_fp32, run / MODEL_FILES.onnx_trt_qdq
    test = np.load(meta["eval"])
    x, y = test["x"].astype(np.float32), test["y"]
    with OrtRunner(fp32, threads, "fp32") as r:
        fp32_logits = predict(r, x)
    with np.load(run / TRANSFER_SET, allow_pickle=False) as z:
        synth = z["x"][~z["holdout"].astype(bool)]
    calib = calibration_subset(synth, row["config"]["calib"]["samples"], seed)
    out = {"dfkd-edge": {**measure(ours, x, y, fp32_logits, threads), **qdq_placement(ours)}}
    mo_path = work / f"{meta['name']}-{seed}-modelopt.onnx"
    rec = modelopt_quantize(modelopt, fp32, mo_path, calib)
    if "error" not in rec:
        rec.update(measure(mo_path, x, y, fp32_logits, threads))
        rec.update(qdq_placement(mo_path))
    out["modelopt"] = rec
    return {"model": meta["name"], "seed": seed, "fp32": float((fp32_logits.argmax(1) == y).mean()),
            "calib_samples": int(len(calib)), "q_dq": out, "commit": zoo.code_commit(), "config": row["config"],
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def table(rows: list[dict]) -> None:
    print("| model | fp32 % | dfkd-edge Q/DQ: int8 % | agreement % | ModelOpt Q/DQ: int8 % | agreement % | "
          "float weight layers (ours / ModelOpt) | operators reading Q/DQ (ours / ModelOpt) |")
    print("|---|---|---|---|---|---|---|---|")
    for m in dict.fromkeys(r["model"] for r in rows):
        rs = [r for r in rows if r["model"] == m]
        o = [r["q_dq"]["dfkd-edge"] for r in rs]
        mo = [r["q_dq"]["modelopt"] for r in rs if "error" not in r["q_dq"]["modelopt"]]
        mo_txt = (f"{_ms([v['accuracy'] for v in mo])} | {_ms([v['agreement'] for v in mo])}" if mo
                  else f"failed: {rs[0]['q_dq']['modelopt'].get('error', '')[:60]} | -")
        ops = lambda v: ", ".join(f"{k} {c}" for k, c in v["quantized_inputs"].items())  # noqa: E731
        print(f"| {m} | {_ms([r['fp32'] for r in rs])} | {_ms([v['accuracy'] for v in o])} | "
              f"{_ms([v['agreement'] for v in o])} | {mo_txt} | "
              f"{o[0]['float_weight_layers']}/{o[0]['weight_layers']} / "
              f"{(str(mo[0]['float_weight_layers']) + '/' + str(mo[0]['weight_layers'])) if mo else '-'} | "
              f"{ops(o[0])} / {ops(mo[0]) if mo else '-'} |")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=["digits01-seq", "shapesz-res", "photoz-res", "photo01-mbv2"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--modelopt-python", help="the python of a virtual environment with nvidia-modelopt[onnx]")
    ap.add_argument("--results", default=str(RESULTS))
    ap.add_argument("--table", action="store_true")
    a = ap.parse_args(argv)
    results = Path(a.results)
    rows = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    if a.table:
        table(rows)
        return
    if not a.modelopt_python:
        raise SystemExit("--modelopt-python is required (see the module docstring)")
    results.parent.mkdir(parents=True, exist_ok=True)
    work = Path(zoo.DEFAULT_CACHE) / "modelopt-runs"
    have = {(r["model"], r["seed"]) for r in rows}
    for name in a.models:
        meta = zoo.build(zoo.BY_NAME[name])
        for seed in a.seeds:
            if (name, seed) in have:
                continue
            row = run_model(meta, seed, a.threads, work, a.modelopt_python)
            with results.open("a") as f:
                f.write(json.dumps(row) + "\n")
            rows.append(row)
            print(f"{name} seed {seed}: ours {row['q_dq']['dfkd-edge']['accuracy']:.4f}, ModelOpt "
                  f"{row['q_dq']['modelopt'].get('accuracy', row['q_dq']['modelopt'].get('error'))}", flush=True)
    table(rows)


if __name__ == "__main__":
    main()
