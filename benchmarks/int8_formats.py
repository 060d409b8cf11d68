"""Which int8 format is fastest on ONNX Runtime's CPU provider, by student width?

For conv2d students of several widths on 1x8x8 (digits) and 3x32x32 inputs: fp32 ONNX and each
int8 candidate (calibrated on Gaussian inputs: latency barely depends on the values), p50 at
batch 1 and 32 with a fixed thread count, and the ratio to fp32 measured in the same run.

    python benchmarks/int8_formats.py [--threads 1] [--budget 1.0]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from dfkd_edge.backends.onnxruntime import OrtRunner
from dfkd_edge.export.onnx_export import export_onnx
from dfkd_edge.export.quantize import CANDIDATES, CalibConfig, quantize_one
from dfkd_edge.models import create_student
from dfkd_edge.targets.host import time_runner


def p50(path, x, threads, budget):
    with OrtRunner(path, threads) as r:
        return float(np.median(time_runner(r, x, budget_s=budget))) * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--budget", type=float, default=1.0, help="seconds of timed runs per cell")
    a = ap.parse_args()
    logging.getLogger().setLevel(logging.ERROR)  # ORT's "consider pre-processing" advice, once per model
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    print(f"threads={a.threads}; p50 ms; ratio = int8 / fp32 (below 1: int8 faster)")
    print("| input | width | params | batch | fp32 ms | " + " | ".join(f"{f} ms (ratio)" for f in CANDIDATES) + " |")
    print("|---|---|---|---|---|" + "---|" * len(CANDIDATES))
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        for shape in ((1, 8, 8), (3, 32, 32)):
            for width in (8, 16, 32, 64):
                m, _ = create_student("conv2d", shape, 10, 10**9, width=width)
                m.train()
                m(torch.randn(256, *shape))
                m.eval()
                fp32 = export_onnx(m, shape, d / "fp32.onnx")
                calib = rng.standard_normal((64, *shape)).astype(np.float32)
                paths = {}
                for fmt in CANDIDATES:
                    paths[fmt] = d / f"{fmt}.onnx"
                    quantize_one(fp32, paths[fmt], calib, fmt, CalibConfig())
                for batch in (1, 32):
                    x = rng.standard_normal((batch, *shape)).astype(np.float32)
                    base = p50(fp32, x, a.threads, a.budget)
                    cells = []
                    for fmt in CANDIDATES:
                        t = p50(paths[fmt], x, a.threads, a.budget)
                        cells.append(f"{t:.4f} ({t / base:.2f})")
                    params = sum(p.numel() for p in m.parameters())
                    print(f"| {'x'.join(map(str, shape))} | {width} | {params:,} | {batch} | {base:.4f} | "
                          + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
