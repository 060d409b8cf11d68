"""What the int8 calibration and its guardrail cost, with the tensor ranges measured once per calibration
set (onnxruntime's calibration cache, what dfkd-edge does where onnxruntime has it) against measuring
them again for every quantization (what onnxruntime without the cache does), on the same model, the
same samples, in one process, alternating.

    python benchmarks/guardrail_cost.py --models shapes32-mbv2 shapes01-mbv digits255-res --repeats 2

Each measurement is one ``dfkd_edge.export.quantize.calibrate`` (one int8 format, Q/DQ U8S8, so that
both arms build the same model; the 99% guardrail when it does not hold) of the model's fp32 ONNX export on 256 real training inputs, checked on the
test inputs: the guardrail's cost does not depend on where the samples come from. Both arms must
produce the same int8 model (SHA-256) and the same layers in float; the table gives seconds (mean ± std
over the repeats) and the ratio, and the number of calibration passes (create_calibrator calls).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import zoo  # noqa: E402
from quantize_bench import onnx_export  # noqa: E402

FORMAT = "qdq-u8s8"


def measure(fp32: Path, out: Path, calib_x, check_x, check_logits, threads: int, cached: bool) -> dict:
    import dfkd_edge.export.quantize as dq
    from dfkd_edge.io import sha256

    ort_quantize = importlib.import_module("onnxruntime.quantization.quantize")
    real_create, passes = ort_quantize.create_calibrator, []

    def counting(*a, **k):
        passes.append(1)
        return real_create(*a, **k)

    ort_quantize.create_calibrator = counting
    has_cache = dq._has_range_cache
    if not cached:
        dq._has_range_cache = lambda: False
    try:
        t0 = time.perf_counter()
        rec = dq.calibrate(fp32, out, calib_x, check_x, check_logits, dq.CalibConfig(formats=(FORMAT,), threads=threads))
        seconds = time.perf_counter() - t0
    finally:
        ort_quantize.create_calibrator, dq._has_range_cache = real_create, has_cache
    g = rec["guardrail"]
    return {"seconds": seconds, "passes": len(passes), "sha256": sha256(out), "format": rec["chosen_format"],
            "triggered": g["triggered"], "excluded": g.get("excluded", []),
            "units": len(g.get("sensitivity", []))}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", required=True)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    logging.getLogger().setLevel(logging.ERROR)
    from dfkd_edge.backends import predict
    from dfkd_edge.backends.onnxruntime import OrtRunner
    from dfkd_edge.export.quantize import calibration_subset

    print("| model | guardrail | units scored | calibration passes (cached / every time) | seconds, ranges once "
          "| seconds, ranges every time | ratio | same int8 model |")
    print("|---|---|---|---|---|---|---|---|")
    work = Path(tempfile.mkdtemp(prefix="guardrail-cost-"))
    try:
        for name in a.models:
            meta = zoo.build(zoo.BY_NAME[name])
            tx = np.load(meta["eval"])["x"].astype(np.float32)
            calib = calibration_subset(np.load(meta["train"])["x"].astype(np.float32), 256, 0)
            fp32 = onnx_export(meta, work)
            with OrtRunner(fp32, a.threads, "fp32") as r:
                logits = predict(r, tx)
            runs: dict[bool, list[dict]] = {True: [], False: []}
            for _ in range(a.repeats):
                for cached in (True, False):
                    runs[cached].append(measure(fp32, work / f"{cached}.onnx", calib, tx, logits, a.threads, cached))
            on, off = runs[True], runs[False]
            same = all(r["sha256"] == on[0]["sha256"] and r["excluded"] == on[0]["excluded"] for r in on + off)
            s_on, s_off = [r["seconds"] for r in on], [r["seconds"] for r in off]
            sd = lambda v: f" ± {statistics.stdev(v):.1f}" if len(v) > 1 else ""  # noqa: E731
            guard = (f"triggered, {len(on[0]['excluded'])} layer(s) in float" if on[0]["triggered"] else "not triggered")
            print(f"| {name} | {guard} | {on[0]['units']} | {on[0]['passes']} / {off[0]['passes']} | "
                  f"{statistics.mean(s_on):.1f}{sd(s_on)} | {statistics.mean(s_off):.1f}{sd(s_off)} | "
                  f"{statistics.mean(s_off) / statistics.mean(s_on):.2f}x | {'yes' if same else 'NO'} |", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
