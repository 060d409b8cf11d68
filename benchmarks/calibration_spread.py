"""How far int8 accuracy moves when only the calibration subset changes: each model calibrated on
several random subsets of its own real training split, and the spread of its real test accuracy.

A difference between synthetic and real calibration smaller than real calibration's own spread
between two random subsets of the same data is not one the benchmark can tell from chance. This
script measures that floor, model by model, and puts the synthetic calibration's rows from a
``quantize_bench.py`` results file beside it.

    python benchmarks/calibration_spread.py --subsets 5                       # every cached zoo model
    python benchmarks/calibration_spread.py --models shapes32b-res --subsets 3 --threads 2
    python benchmarks/calibration_spread.py --table --synthetic benchmarks/results/quantize-session13.jsonl

Each calibration is dfkd-edge's own (``dfkd_edge.export.quantize.calibrate``: minmax, per-channel
weights, the 99% guardrail) of the model's fp32 ONNX export, in one fixed format (QOperator U8S8,
what ``quantize`` shipped on the deeper models; the Q/DQ U8S8 model computes the same numbers), on
256 real training inputs drawn with the subset's seed; the guardrail checks agreement on the test
inputs, as ``quantize --eval-data`` does. Results are appended to ``--results`` (JSON lines; a
subset already there is not repeated).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import zoo  # noqa: E402
from quantize_bench import _ms, load, onnx_export  # noqa: E402

DEFAULT_RESULTS = HERE / "results" / "calibration-spread.jsonl"
FORMAT = "qoperator-u8s8"


def run_model(meta: dict, subsets: list[int], threads: int, work: Path, done: set) -> list[dict]:
    from dfkd_edge.backends import predict
    from dfkd_edge.backends.onnxruntime import OrtRunner
    from dfkd_edge.export.quantize import CalibConfig, calibrate, calibration_subset

    test = np.load(meta["eval"])
    tx, ty = test["x"].astype(np.float32), test["y"]
    train_x = np.load(meta["train"])["x"].astype(np.float32)
    fp32 = onnx_export(meta, work)
    with OrtRunner(fp32, threads, "fp32") as r:
        fp32_logits = predict(r, tx)
    fp32_acc = float((fp32_logits.argmax(1) == ty).mean())
    rows = []
    for k in subsets:
        if (meta["name"], k) in done:
            continue
        cfg = CalibConfig(formats=(FORMAT,), seed=k, threads=threads)
        x = calibration_subset(train_x, cfg.samples, k)
        out = work / f"{meta['name']}-{k}.onnx"
        rec = calibrate(fp32, out, x, tx, fp32_logits, cfg)
        with OrtRunner(out, threads, "int8") as r:
            top1 = predict(r, tx).argmax(1)
        rows.append({"model": meta["name"], "subset": k, "samples": int(len(x)), "format": FORMAT, "fp32": fp32_acc,
                     "accuracy": float((top1 == ty).mean()),
                     "agreement": float((top1 == fp32_logits.argmax(1)).mean()),
                     "float_layers": len(rec["guardrail"].get("excluded", [])), "test_samples": int(len(ty)),
                     "commit": zoo.code_commit(), "config": {**asdict(cfg), "formats": list(cfg.formats)}})
        out.unlink(missing_ok=True)
    return rows


def print_table(rows: list[dict], synthetic: list[dict]) -> None:
    """One line per model: real calibration over its subsets, the largest gap between two of them, and
    the synthetic calibration (quantize_bench rows, PyTorch models, the steps given) beside it."""
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["model"], []).append(r)
    print("| model | test samples (one = points) | fp32 | int8, real calibration, subsets | real: largest gap "
          "between two subsets | int8, synthetic (quantize, seeds) | synthetic - mean real |")
    print("|---|---|---|---|---|---|---|")
    for model, rs in by.items():
        acc = [r["accuracy"] for r in rs]
        syn = [s["sources"]["synthetic"]["accuracy"] for s in synthetic if s["model"] == model]
        n = rs[0]["test_samples"]
        diff = f"{(statistics.mean(syn) - statistics.mean(acc)) * 100:+.2f}" if syn else "-"
        print(f"| {model} | {n} ({100 / n:.2f}) | {rs[0]['fp32'] * 100:.2f} | {_ms(acc)} ({len(acc)}) | "
              f"{(max(acc) - min(acc)) * 100:.2f} | {_ms(syn)} ({len(syn)}) | {diff} |")


def synthetic_rows(paths: list[str], steps: int) -> list[dict]:
    """quantize_bench rows of PyTorch models at ``steps``; a (model, seed) in a later file replaces the
    same run of an earlier one (a re-run after a fix), other seeds add up."""
    by: dict[tuple, dict] = {}
    for path in paths:
        for r in load(Path(path)):
            if r.get("variant", "pytorch") == "pytorch" and r["iterations"] == steps:
                by[(r["model"], r["seed"])] = r
    return list(by.values())


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="*", help="zoo names (default: every entry cached, deep ones included)")
    ap.add_argument("--subsets", type=int, default=5, help="real calibration subsets per model (seeds 0..N-1)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--results", default=str(DEFAULT_RESULTS))
    ap.add_argument("--synthetic", default=str(HERE / "results" / "quantize-session13.jsonl"),
                    help="quantize_bench.py results (comma-separated; a later file's run replaces an earlier's) "
                         "whose synthetic rows go beside")
    ap.add_argument("--steps", type=int, default=50, help="the synthesis steps of the synthetic rows to show")
    ap.add_argument("--table", action="store_true", help="only print the table from --results")
    a = ap.parse_args(argv)
    results = Path(a.results)
    synthetic = synthetic_rows(a.synthetic.split(","), a.steps)
    if not a.table:
        torch.set_num_threads(a.threads)
        logging.getLogger().setLevel(logging.ERROR)  # onnxruntime.quantization's per-weight warnings
        names = a.models or [e.name for e in zoo.ENTRIES + zoo.EXTRA + zoo.DEEP
                             if (zoo.DEFAULT_CACHE / f"{e.name}.json").exists()]
        done = {(r["model"], r["subset"]) for r in load(results)}
        work = Path(tempfile.mkdtemp(prefix="calibration-spread-"))
        try:
            for name in names:
                for row in run_model(zoo.build(zoo.BY_NAME[name]), list(range(a.subsets)), a.threads, work, done):
                    results.parent.mkdir(parents=True, exist_ok=True)
                    with results.open("a") as f:
                        f.write(json.dumps(row) + "\n")
                    print(f"{name} subset {row['subset']}: int8 {row['accuracy']:.4f} (fp32 {row['fp32']:.4f}), "
                          f"{row['float_layers']} layer(s) in float", flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print_table(load(results), synthetic)


if __name__ == "__main__":
    main()
