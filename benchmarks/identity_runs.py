"""Does a change leave results as they were? The same small runs (same options, seed 0) by this checkout's
dfkd_edge and by another copy of it, and every result compared: the arrays of each .npz, the tensors of each
student .pt, the bytes of each .onnx, and report.json's accuracy, fidelity, quality, parity, student, synthesis and
distillation sections. Timings and the files that hold them (latency, the int8 format chosen by speed) are not
compared; every run names its int8 format so that speed does not choose it.

    git archive REV dfkd_edge | tar -x -C /tmp/old      # the version to compare with
    python benchmarks/identity_runs.py --old /tmp/old                       # all runs (about 5 minutes here)
    python benchmarks/identity_runs.py --old /tmp/old --runs demo quantize-onnx
"""

from __future__ import annotations

import argparse
import warnings
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
SMALL = ["--samples", "128", "--holdout", "32", "--iterations", "10", "--synth-batch", "64", "--epochs", "3",
         "--calib-samples", "32", "--threads", "1", "--latency-budget", "0.1", "--int8-format", "qdq-u8s8",
         "--seed", "0"]
QUANT = ["--calib-samples", "64", "--holdout", "32", "--iterations", "10", "--threads", "1", "--latency-budget", "0.1",
         "--int8-format", "qdq-u8s8", "--seed", "0"]
SECTIONS = ("accuracy", "fidelity", "quality", "parity", "student", "synthesis", "distillation")
#: report fields measured in seconds or chosen by them
TIMED = {"seconds", "elapsed_s", "wall_s", "latency", "throughput", "ms", "p50_ms", "time_s", "duration_s"}

#: name -> (how it is started: "cli" or "torchrun", the arguments after the command's name)
RUNS = {
    "demo": ("cli", ["convert", "{digits}", *SMALL]),
    "quantize-pytorch": ("cli", ["quantize", "{digits}", *QUANT]),
    "quantize-onnx": ("cli", ["quantize", "{digits_onnx}", *QUANT]),
    "adversarial": ("cli", ["convert", "{digits}", "--method", "adversarial", *SMALL]),
    "cdfkd-mfs": ("cli", ["convert", "{digits}", "{digits_copy}", "--method", "cdfkd-mfs", *SMALL]),
    "kd+vkd": ("cli", ["convert", "{digits}", "--distill", "kd+vkd", "--vkd-epochs", "5", *SMALL]),
    "tensorrt-target": ("cli", ["convert", "{digits}", "--target", "jetson-orin-nano", *SMALL]),
    "torchrun-2": ("torchrun", ["convert", "{digits}", *SMALL]),
    "eval-data": ("cli", ["convert", "{digits}", "--eval-data", "{digits_test}", *SMALL]),
}


def inputs(tmp: Path) -> dict[str, str]:
    """The teacher files the runs read (the built-in digits teacher, a copy, its test set and its ONNX export)."""
    from dfkd_edge.data.digits import builtin_teacher_path, write_test_npz

    digits = builtin_teacher_path()
    onnx_path = tmp / "digits.onnx"
    model = torch.jit.load(str(digits)).eval()
    torch.onnx.export(model, (torch.zeros(2, 1, 8, 8),), str(onnx_path), dynamo=False, opset_version=17,
                      input_names=["x"], output_names=["logits"], dynamic_axes={"x": {0: "n"}, "logits": {0: "n"}})
    shutil.copy(digits, tmp / "digits_copy.pt")  # a second teacher file (CDFKD-MFS takes each file once)
    return {"digits": str(digits), "digits_copy": str(tmp / "digits_copy.pt"), "digits_onnx": str(onnx_path),
            "digits_test": str(write_test_npz(tmp / "digits_test.npz"))}


def run(name: str, package: str, out: Path, files: dict[str, str]) -> None:
    """One run by the package in folder ``package`` (started outside any checkout, so that no other copy is found
    first)."""
    how, args = RUNS[name]
    args = [a.format(**files) for a in args] + ["--out", str(out)]
    head = [sys.executable, "-m", "dfkd_edge"]
    if how == "torchrun":
        head = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                "-m", "dfkd_edge"]
    env = {**os.environ, "PYTHONPATH": package, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    r = subprocess.run(head + args, env=env, capture_output=True, text=True, cwd=out.parent)
    if r.returncode not in (0, 3):  # 3: finished with a doubtful verdict
        raise SystemExit(f"{name} ({package}) exited {r.returncode}:\n{r.stderr[-3000:]}")


def untimed(value):
    if isinstance(value, dict):
        return {k: untimed(v) for k, v in value.items() if k not in TIMED and not k.endswith(("_s", "_ms"))}
    if isinstance(value, list):
        return [untimed(v) for v in value]
    return value


def differences(a: Path, b: Path) -> list[str]:
    """What differs between two run folders (empty: identical where it is compared)."""
    out = []
    for fa in sorted(p for p in a.rglob("*") if p.is_file() and ".partial" not in p.parts):
        rel, fb = fa.relative_to(a), b / fa.relative_to(a)
        if not fb.exists():
            out.append(f"{rel}: only in this version")
        elif fa.suffix == ".npz":
            za, zb = np.load(fa), np.load(fb)
            for k in sorted(set(za.files) | set(zb.files)):
                if k not in za.files or k not in zb.files or za[k].shape != zb[k].shape or \
                        not np.array_equal(za[k], zb[k], equal_nan=za[k].dtype.kind in "fc"):
                    out.append(f"{rel}[{k}] differs")
        elif fa.suffix == ".onnx" and fa.read_bytes() != fb.read_bytes():
            out.append(f"{rel}: bytes differ")
        elif fa.suffix == ".pt" and fa.name.startswith("student"):
            sa, sb = torch.load(fa, weights_only=True), torch.load(fb, weights_only=True)
            sa, sb = (x.get("state_dict", x) if isinstance(x, dict) else x for x in (sa, sb))
            if set(sa) != set(sb) or any(not torch.equal(sa[k], sb[k]) for k in sa if torch.is_tensor(sa[k])):
                out.append(f"{rel}: tensors differ")
        elif fa.name == "report.json":
            ra, rb = json.loads(fa.read_text()), json.loads(fb.read_text())
            for s in SECTIONS:
                if untimed(ra.get(s)) != untimed(rb.get(s)):
                    out.append(f"report.json[{s}] differs")
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", required=True, help="a folder holding the other version's dfkd_edge package")
    ap.add_argument("--runs", nargs="+", choices=sorted(RUNS), default=list(RUNS))
    ap.add_argument("--keep", help="keep the run folders here")
    a = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    tmp = Path(a.keep or tempfile.mkdtemp(prefix="identity-runs-"))
    tmp.mkdir(parents=True, exist_ok=True)
    files = inputs(tmp)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=HERE, capture_output=True, text=True)
    print(f"this: {HERE.parent} at {commit.stdout.strip() or '?'}; other: {a.old}; options: {' '.join(SMALL)}")
    print("| run | differences |")
    print("|---|---|")
    for name in a.runs:
        for which, package in (("this", str(HERE.parent)), ("old", a.old)):
            shutil.rmtree(tmp / which / name, ignore_errors=True)
            (tmp / which).mkdir(exist_ok=True)
            run(name, package, tmp / which / name, files)
        diff = differences(tmp / "this" / name, tmp / "old" / name)
        print(f"| {name} | {'; '.join(diff) if diff else 'none'} |", flush=True)
    if not a.keep:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
