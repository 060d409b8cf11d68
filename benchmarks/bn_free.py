"""int8 calibration of models without BatchNorm, where the data-free prior DeepInversion reads from BatchNorm's
running statistics is gone: ONNX files whose BatchNorms torch.onnx folded into the convolutions, and networks
that never had one. Each model is given to ``dfkd-edge quantize`` as its ONNX file alone (synthesized from the
graph: labels, smoothness and L2 priors only, input domain assumed N(0, 1) unless told), with its real test split
as eval data and its training split as the real calibration source, and set against NVIDIA ModelOpt's ONNX
quantizer (``modelopt.onnx.quantization``, int8, the CPU execution provider) given no data (it calibrates on
random inputs then) and given the same synthesized calibration samples that ship.

ModelOpt runs in its own virtual environment (it brings onnxruntime-gpu, which must not replace this project's
onnxruntime); its Q/DQ models are run here, by this project's onnxruntime on the CPU:

    python3 -m venv /opt/modelopt && /opt/modelopt/bin/pip install torch==2.13.0 "nvidia-modelopt[onnx]"
    python benchmarks/bn_free.py --models shapes01-mbv photo01-mbv2 photoz-res photo255-dw --seeds 0 1 \\
        --modelopt-python /opt/modelopt/bin/python
    python benchmarks/bn_free.py --table

Zoo names are benchmarks/zoo.py's (trained and cached on first use); ``photo22`` is benchmarks/photo_task.py's
trained 22-class MobileNetV2 at 128x128 (its ONNX export folds every BatchNorm). ``--input-range LO,HI`` tells
quantize the domain instead of assuming it. Rows (JSON lines, with the commit and the
configuration) go to ``--results``; a run already there is not repeated. Without ``--modelopt-python`` the
ModelOpt columns are left out.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import zoo  # noqa: E402
from quantize_bench import _ms, load, run_one  # noqa: E402
from guardrail_criterion import PHOTO  # noqa: E402
from real_size import int8_weight_layers  # noqa: E402

DEFAULT_RESULTS = HERE / "results" / "bn-free.jsonl"
#: the ModelOpt command (its documented entry point); the calibration data, when given, follows
MODELOPT = ["-m", "modelopt.onnx.quantization", "--quantize_mode", "int8", "--calibration_eps", "cpu"]


def batchnorm_nodes(path: Path) -> int:
    import onnx
    return sum(n.op_type == "BatchNormalization" for n in onnx.load(str(path), load_external_data=False).graph.node)


def modelopt_quantize(python: str, fp32: Path, out: Path, calib: np.ndarray | None) -> dict:
    """ModelOpt's int8 Q/DQ model of ``fp32`` at ``out``; ``calib`` None: its random calibration."""
    from dfkd_edge.export.quantize import input_name

    cmd = [python, *MODELOPT, "--onnx_path", str(fp32), "--output_path", str(out)]
    if calib is not None:
        data = out.with_suffix(".calib.npz")
        np.savez(data, **{input_name(fp32): calib.astype(np.float32)})
        cmd += ["--calibration_data_path", str(data)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = round(time.perf_counter() - t0, 1)
    if proc.returncode != 0 or not out.is_file():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"error": " | ".join(tail), "seconds": seconds}
    return {"seconds": seconds}


def measure(path: Path, x: np.ndarray, y: np.ndarray, fp32_logits: np.ndarray, threads: int) -> dict:
    """Accuracy, top-1 and weighted agreement with fp32 on the real test inputs, weight layers in int8."""
    from dfkd_edge.backends import predict
    from dfkd_edge.backends.onnxruntime import OrtRunner
    from dfkd_edge.export.quantize import weighted_agreement

    with OrtRunner(path, threads, "int8") as r:
        top1 = predict(r, x).argmax(1)
    return {"accuracy": float((top1 == y).mean()), "agreement": float((top1 == fp32_logits.argmax(1)).mean()),
            "weighted_agreement": weighted_agreement(fp32_logits, top1), "weight_layers": int8_weight_layers(path)}


def model_meta(name: str, cache: Path) -> dict:
    """The zoo entry, or photo22 (benchmarks/photo_task.py) described the same way."""
    if name != "photo22":
        return zoo.build(zoo.BY_NAME[name], cache)
    doc = json.loads((PHOTO / "photo22.json").read_text())
    return {"name": name, "teacher": str(PHOTO / "mobilenet_v2-22.pt"), "input_shape": doc["input_shape"],
            "eval": str(PHOTO / "test.npz"), "train": str(PHOTO / "calib.npz")}


def run_model(meta: dict, seed: int, threads: int, work: Path, modelopt: str | None,
              input_range: str | None = None) -> dict:
    from dfkd_edge.backends import predict
    from dfkd_edge.backends.onnxruntime import OrtRunner
    from dfkd_edge.export.quantize import calibration_subset
    from dfkd_edge.runfiles import TRANSFER_SET

    row = run_one(meta, seed, None, threads, work, "onnx", {"input_range": input_range})
    row["input_range_told"] = input_range
    fp32 = work / f"{meta['name']}.onnx"
    run = work / f"{meta['name']}-{seed}"
    row["onnx_batchnorm_nodes"] = batchnorm_nodes(fp32)
    test = np.load(meta["eval"])
    x, y = test["x"].astype(np.float32), test["y"]
    with OrtRunner(fp32, threads, "fp32") as r:
        fp32_logits = predict(r, x)
    row["sources"]["synthetic"]["weight_layers"] = int8_weight_layers(run / "model_int8.onnx")
    if modelopt:
        with np.load(run / TRANSFER_SET, allow_pickle=False) as z:
            synth = z["x"][~z["holdout"].astype(bool)]
        calib = calibration_subset(synth, row["config"]["calib"]["samples"], seed)
        for name, data in (("modelopt-random", None), ("modelopt-synthetic", calib)):
            out = work / f"{meta['name']}-{seed}-{name}.onnx"
            rec = modelopt_quantize(modelopt, fp32, out, data)
            if "error" not in rec:
                rec.update(measure(out, x, y, fp32_logits, threads))
            row["sources"][name] = rec
    return row


def print_table(rows: list[dict]) -> None:
    """One line per model: mean ± std over the seeds of each source's int8 accuracy on the real test split."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        told = r.get("input_range_told")
        groups.setdefault(r["model"] + (f" (told --input-range {told})" if told else ""), []).append(r)
    cols = ("synthetic", "gaussian", "real", "modelopt-random", "modelopt-synthetic")
    print("| model | BatchNorm in the ONNX file | domain | seeds | fp32 | " + " | ".join(
        f"int8, {c}" for c in cols) + " | ModelOpt weight layers in int8 (random) | verdict |")
    print("|---|---|---|---|---|" + "---|" * len(cols) + "---|---|")
    for model, rs in groups.items():
        acc = [_ms([r["sources"].get(c, {}).get("accuracy") for r in rs]) for c in cols]
        wl = rs[0]["sources"].get("modelopt-random", {}).get("weight_layers") or {}
        print(f"| {model} | {rs[0]['onnx_batchnorm_nodes']} | {rs[0]['domain_source']} | {len(rs)} | "
              f"{_ms([r['fp32'] for r in rs])} | " + " | ".join(acc) + " | "
              + (f"{wl.get('int8')}/{wl.get('weight_layers')}" if wl else "-")
              + f" | {', '.join(sorted({r['verdict'] for r in rs}))} |")
    print(f"\ncommits: {', '.join(sorted({r['commit'] for r in rows}))}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="*", default=[], help="zoo names")
    ap.add_argument("--seeds", nargs="*", type=int, default=[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--modelopt-python", default=None, help="the python of a virtual environment with "
                    "nvidia-modelopt[onnx] installed")
    ap.add_argument("--input-range", default=None, help="LO,HI given to quantize (default: the domain is assumed)")
    ap.add_argument("--results", default=str(DEFAULT_RESULTS))
    ap.add_argument("--table", action="store_true", help="only print the table from --results")
    ap.add_argument("--cache", default=str(zoo.DEFAULT_CACHE))
    a = ap.parse_args(argv)
    results, cache = Path(a.results), Path(a.cache)
    if a.table:
        print_table(load(results))
        return
    torch.set_num_threads(a.threads)
    logging.getLogger().setLevel(logging.ERROR)
    done = {(r["model"], r["seed"], r.get("input_range_told")) for r in load(results)}
    work = Path(tempfile.mkdtemp(prefix="bn-free-"))
    try:
        for name in a.models:
            meta = model_meta(name, cache)
            for seed in a.seeds:
                if (name, seed, a.input_range) in done:
                    continue
                row = run_model(meta, seed, a.threads, work, a.modelopt_python, a.input_range)
                results.parent.mkdir(parents=True, exist_ok=True)
                with results.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(name, seed, {k: round(v["accuracy"], 4) if v.get("accuracy") is not None else v.get("error")
                                   for k, v in row["sources"].items()}, flush=True)
                shutil.rmtree(work / f"{name}-{seed}", ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_table(load(results))


if __name__ == "__main__":
    main()
