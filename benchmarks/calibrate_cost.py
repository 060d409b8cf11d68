"""What one calibration costs, part by part, on the reference networks: the figures behind the plan's calibrate
terms (dfkd_edge.plan: ``QUANTIZE_NODE_S``, ``INT8_FORWARD``).

For each network (benchmarks/refmodels.py, BatchNorm settled, exported as the export stage exports it): its ONNX
node count; onnxruntime's ``quant_pre_process``; the first quantization (one calibration pass over the samples,
which the plan counts apart, and the graph rewrite); each further format's quantization (the rewrite alone: the
ranges come from the cache); and the per-sample forward time of fp32 and of each int8 format over the check
batch. Seconds per node are the rewrite (and pre-processing) divided by the node count.

    python benchmarks/calibrate_cost.py --models resnet18 resnet50 mobilenet_v2 mobilenet_v3_large \\
        efficientnet_b0 deit_tiny [--size 224] [--threads 2] [--results benchmarks/results/calibrate-cost.jsonl]
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import refmodels  # noqa: E402

from dfkd_edge.backends import predict  # noqa: E402
from dfkd_edge.backends.onnxruntime import OrtRunner  # noqa: E402
from dfkd_edge.cost import onnx_figures  # noqa: E402
from dfkd_edge.export.onnx_export import export_onnx  # noqa: E402
from dfkd_edge.export.quantize import CANDIDATES, RANGE_CACHE, CalibConfig, quantize_one  # noqa: E402


def commit() -> str:
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parent)
    return out.stdout.strip() or "unknown"


def per_sample(path: Path, x: np.ndarray, threads: int) -> float:
    """Seconds per sample of one pass over ``x`` (after one warm-up batch), the fastest of two."""
    with OrtRunner(path, threads) as r:
        predict(r, x[:4])
        best = float("inf")
        for _ in range(2):
            t = time.perf_counter()
            predict(r, x)
            best = min(best, time.perf_counter() - t)
    return best / len(x)


def measure(name: str, size: int, threads: int, calib: int, check: int, work: Path) -> dict:
    from onnxruntime.quantization import quant_pre_process

    model = refmodels.build(name, size=size)
    shape = (3, size, size)
    fp32 = export_onnx(model, shape, work / f"{name}.onnx")
    nodes = len(onnx.load(str(fp32), load_external_data=False).graph.node)
    x = refmodels.structured_images(calib + check, size=size, seed=1).numpy()
    cx, hx = x[:calib], x[calib:]
    t = time.perf_counter()
    pre = work / f"{name}-pre.onnx"
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=False)
    pre_s = time.perf_counter() - t
    cfg = CalibConfig(threads=threads)
    passes = {}
    for n in (calib // 4, calib):  # no cache: a calibration pass over n samples and a rewrite
        t = time.perf_counter()
        quantize_one(pre, work / f"{name}-pass.onnx", cx[:n], "qdq-u8s8", cfg)
        passes[n] = time.perf_counter() - t
    ranges = work / f"{name}-{RANGE_CACHE}"
    row = {"model": name, "size": size, "nodes": nodes, "calib_samples": calib, "check_samples": check,
           "pre_process_s": round(pre_s, 3), "fp32_forward_s": round(per_sample(fp32, hx, threads), 5),
           "formats": {}}
    for i, fmt in enumerate(CANDIDATES):
        out = work / f"{name}-{fmt}.onnx"
        t = time.perf_counter()
        try:
            quantize_one(pre, out, cx, fmt, cfg, ranges=ranges)
            q_s = time.perf_counter() - t
            f_s = per_sample(out, hx, threads)
        except Exception as e:  # noqa: BLE001 - a format onnxruntime cannot make for this graph is recorded
            row["formats"][fmt] = {"error": str(e).splitlines()[0][:200]}
            continue
        row["formats"][fmt] = {"quantize_s": round(q_s, 3), "with_calibration_pass": i == 0,
                               "forward_s": round(f_s, 5),
                               "int8_over_fp32": round(f_s / row["fp32_forward_s"], 3)}
    per = (passes[calib] - passes[calib // 4]) / (calib - calib // 4)
    row["calibration_pass"] = {"samples": [calib // 4, calib], "seconds": [round(passes[k], 3) for k in passes],
                               "per_sample_s": round(per, 5),
                               "over_fp32_forward": round(per / row["fp32_forward_s"], 2),
                               "fixed_s": round(passes[calib] - calib * per, 3)}
    size, row["activation_bytes"] = onnx_figures(fp32)  # what the plan reads from the run's probe
    row["model_mb"] = round(size / 2**20, 1)
    return row


def table(rows: list[dict]) -> None:
    print("| model | nodes | MB | pre-process s | rewrite s (per format, ranges cached) | ms/node | "
          "int8 / fp32 forward: " + ", ".join(CANDIDATES) + " | calibration pass per sample / fp32 | fixed s | "
          "activation MB/sample |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        rewrites = [f["quantize_s"] for f in r["formats"].values() if "quantize_s" in f and
                    not f["with_calibration_pass"]]
        rw = float(np.mean(rewrites)) if rewrites else float("nan")
        ratios = ", ".join(f"{r['formats'][f]['int8_over_fp32']:.2f}" if "int8_over_fp32" in r["formats"].get(f, {})
                           else "failed" for f in CANDIDATES)
        c = r["calibration_pass"]
        print(f"| {r['model']} | {r['nodes']} | {r['model_mb']} | {r['pre_process_s']:.2f} | {rw:.2f} | "
              f"{1000 * (rw + r['pre_process_s']) / r['nodes']:.1f} | {ratios} | {c['over_fp32_forward']:.1f} | "
              f"{c['fixed_s']:.2f} | {r['activation_bytes'] / 2**20:.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=list(refmodels.PUBLISHED))
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--calib", type=int, default=64,
                    help="calibration samples (the pass is timed on a quarter too)")
    ap.add_argument("--check", type=int, default=32, help="samples each forward time is measured over")
    ap.add_argument("--results", type=Path, help="append each row (with the commit) to this JSON-lines file")
    a = ap.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    rows = []
    for name in a.models:
        with tempfile.TemporaryDirectory() as d:
            row = {"commit": commit(), "threads": a.threads, **measure(name, a.size, a.threads, a.calib, a.check,
                                                                          Path(d))}
        rows.append(row)
        print(json.dumps(row), flush=True)
        if a.results:
            with a.results.open("a") as f:
                f.write(json.dumps(row) + "\n")
    table(rows)


if __name__ == "__main__":
    main()
