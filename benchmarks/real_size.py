"""Stage seconds and peak memory at real size: ``dfkd-edge inspect`` and ``dfkd-edge quantize`` (or ``convert``) on
the reference models of benchmarks/refmodels.py at 224x224, one process at a time, with the plan each run printed
set against what each stage took.

    python benchmarks/refmodels.py                       # once: writes benchmarks/.refmodels/
    python benchmarks/real_size.py --command inspect --results benchmarks/results/real-size.jsonl
    python benchmarks/real_size.py --command quantize --models mobilenet_v2 resnet18 \\
        --options "--holdout 32 --calib-samples 64 --iterations 10" --results benchmarks/results/real-size.jsonl
    python benchmarks/real_size.py --command quantize --models photo22 --results benchmarks/results/real-size.jsonl
    python benchmarks/real_size.py --table --results benchmarks/results/real-size.jsonl

``photo22`` is the trained MobileNetV2 of benchmarks/photo_task.py (128x128, 22 classes): quantize is given its
test split (``--eval-data``) and 512 of its training inputs as the real calibration source (``--calib-data``),
and the row adds what the report says of int8 against fp32 and how many weight layers compute in int8.

Each row records the commit, the command line, the model, the threads, wall seconds, peak resident memory (the
process's ru_maxrss), each stage's seconds and the plan's, from the run's report.json. Time things alone: a
second job on the cores is measured too.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import refmodels  # noqa: E402

MODELS = list(refmodels.FACTORIES)
HANG_GUARD_S = 4 * 3600  # a run that hangs is stopped (not a timing window: the slowest run here takes minutes)


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=HERE,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


#: the trained reference model (benchmarks/photo_task.py): its file, input shape, and the labelled data a
#: quantize run is given (eval data, and real inputs as a calibration source to compare with)
TRAINED = "photo22"


def model_args(model: str, command: str, formats: str) -> list[str]:
    if model == TRAINED:
        d = HERE / ".refmodels" / "photo22"
        path = d / f"mobilenet_v2-22.{formats}"
        if not path.exists():
            raise SystemExit(f"{path} is missing: run `python benchmarks/photo_task.py` first")
        data = [] if command == "inspect" else ["--eval-data", str(d / "test.npz")] + (
            ["--calib-data", str(d / "calib.npz")] if command == "quantize" else [])
        return [str(path), "--input-shape", f"3,{photo_size()},{photo_size()}", *data]
    path = Path(refmodels_dir()) / f"{model}-1000.{formats}"
    if not path.exists():
        raise SystemExit(f"{path} is missing: run `python benchmarks/refmodels.py` first")
    return [str(path), "--input-shape", "3,224,224"]


def photo_size() -> int:
    return json.loads((HERE / ".refmodels" / "photo22" / "photo22.json").read_text())["input_shape"][-1]


def int8_weight_layers(onnx_path: Path) -> dict | None:
    """How many of the int8 file's weight layers (Conv, Gemm, MatMul with a constant weight) compute in int8:
    their weight comes from a DequantizeLinear, or the node is an integer one."""
    if not onnx_path.is_file():
        return None
    import onnx
    g = onnx.load(str(onnx_path), load_external_data=False).graph
    producer = {o: n for n in g.node for o in n.output}
    inits = {i.name for i in g.initializer}
    integer = {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger"}
    total = int8 = 0
    for n in g.node:
        if n.op_type in integer:
            total, int8 = total + 1, int8 + 1
        elif n.op_type in ("Conv", "Gemm", "MatMul") and len(n.input) > 1:
            w = producer.get(n.input[1])
            if w is not None and w.op_type == "DequantizeLinear":
                total, int8 = total + 1, int8 + 1
            elif n.input[1] in inits:
                total += 1
    return {"weight_layers": total, "int8": int8}


def quality(doc: dict, run: Path) -> dict:
    """What a quantize run's report says of int8 against fp32: accuracies, each calibration source, the layers
    left in float, batch-1 latency of fp32 and the shipped int8 model on this host."""
    rows = [r for r in doc.get("latency") or [] if r.get("kind") == "measured" and r.get("batch") == 1]
    p50 = {r["precision"]: r["p50_ms"] for r in rows if r.get("backend", "").startswith("onnxruntime")}
    return {"accuracy": doc.get("accuracy"), "fidelity": doc.get("fidelity"),
            "sources": [{k: s.get(k) for k in ("source", "samples", "accuracy", "agreement_with_fp32",
                                               "output_kl_to_fp32", "guardrail_held")}
                        | {"float_layers": len(s.get("float_layers") or [])}
                        for s in doc.get("calibration_sources") or []],
            "int8_weight_layers": int8_weight_layers(run / "model_int8.onnx"), "batch1_p50_ms": p50,
            "guardrail": guardrail_summary(run / "calibration.json"),
            "calibration_seconds": (json.loads((run / "calibration.json").read_text()).get("timings")
                                    if (run / "calibration.json").is_file() else None),
            "verdict": (doc.get("quality") or {}).get("verdict")}


def guardrail_summary(path: Path) -> dict | None:
    """The shipped calibration's guardrail: whether it triggered, its route, agreement before and after on the
    check set, the nodes it left in float, and whether the time budget cut it."""
    if not path.is_file():
        return None
    g = json.loads(path.read_text()).get("guardrail") or {}
    return {"measure": g.get("measure", "top-1 agreement"), "triggered": g.get("triggered"), "route": g.get("route"),
            "held": g.get("held"),
            "agreement_before": g.get("agreement_before"), "agreement": g.get("agreement"),
            "checked_on": g.get("checked_on"), "sure_samples": g.get("sure_samples"), "threshold": g.get("threshold"),
            "threshold_asked": g.get("threshold_asked"), "excluded": len(g.get("excluded") or []),
            "cut_by_budget": g.get("cut_by_budget")}


#: the plan's acceptance is judged on the stages that take longer than this
ACCEPT_STAGE_S = 30.0


def run_one(model: str, command: str, options: str, threads: int, formats: str) -> dict:
    out = Path(tempfile.mkdtemp(prefix=f"real-size-{model}-"))
    argv = ["dfkd-edge", command, *model_args(model, command, formats)]
    if command != "inspect":
        argv += ["--out", str(out / "run"), "--threads", str(threads), *shlex.split(options)]
    rev = commit()  # the code the run starts with (HEAD may move while it runs)
    rss = out / "maxrss"
    timer = ["/usr/bin/time", "-f", "%M", "-o", str(rss)] if Path("/usr/bin/time").exists() else []
    t0 = time.perf_counter()
    proc = subprocess.run([*timer, sys.executable, "-m", "dfkd_edge", *argv[1:]], capture_output=True, text=True,
                          timeout=HANG_GUARD_S, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    wall = time.perf_counter() - t0
    peak = int(rss.read_text().split()[-1]) if rss.is_file() and rss.read_text().strip() else None
    row = {"commit": rev, "model": model, "format": formats, "command": " ".join(argv[:1] + argv[1:2] + argv[3:]),
           "threads": threads, "exit": proc.returncode, "wall_s": round(wall, 1),
           "peak_rss_mb": round(peak / 1024) if peak else None}
    report = out / "run" / "report.json"
    if report.is_file():
        doc = json.loads(report.read_text())
        row["timings"] = doc.get("timings")
        row["plan"] = doc.get("plan")
        if command == "quantize":
            row["quality"] = quality(doc, out / "run")
        if command == "convert":
            row["outcome"] = {"files": sorted(p.name for p in (out / "run").iterdir()),
                              "verdict": (doc.get("quality") or {}).get("verdict"),
                              "reasons": (doc.get("quality") or {}).get("reasons"),
                              "fidelity": doc.get("fidelity"), "student": doc.get("student")}
        row["out"] = str(out / "run")
    if proc.returncode != 0:
        row["error"] = proc.stderr.strip().splitlines()[-1:] if proc.stderr.strip() else []
    return row


def refmodels_dir() -> str:
    return str(HERE / ".refmodels")


def table(pattern: str) -> None:
    """Every row of ``pattern``'s files: wall, peak, the whole run against its plan, the stages over
    ``ACCEPT_STAGE_S`` against theirs, and for quantize the weight layers in int8 and batch-1 latency. A row
    marked ``disturbed`` (something else shared the cores) is listed with the reason and no figures."""
    rows = [json.loads(line) for f in sorted(glob.glob(pattern)) for line in open(f) if line.strip()]
    print("| model | command | commit | wall s | peak MB | took / planned | stages over 30 s: took / planned s "
          "| weight layers in int8 | batch 1 fp32 / int8 ms |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        head = f"| {r['model']} | `{' '.join(r['command'].split()[:2])}` | {r['commit']} |"
        if r.get("disturbed"):
            print(f"{head} disturbed: {r['disturbed']} | | | | | |")
            continue
        p = r.get("plan") or {}
        whole = f"{p['actual_over_planned']:.2f}" if p.get("actual_over_planned") else "-"
        long = ", ".join(f"{s['stage']} {s['actual_s']:.0f} / {s['planned_s']:.0f}" for s in p.get("stages") or []
                         if max(s["actual_s"], s["planned_s"]) > ACCEPT_STAGE_S) or "-"
        q = r.get("quality") or {}
        layers = q.get("int8_weight_layers") or {}
        ms = q.get("batch1_p50_ms") or {}
        wall = f"{r['wall_s']}" + (f" (exit {r['exit']})" if r.get("exit") else "")
        print(f"{head} {wall} | {r['peak_rss_mb']} | {whole} | {long} | "
              + (f"{layers['int8']} of {layers['weight_layers']}" if layers else "-") + " | "
              + (f"{ms.get('fp32', 0):.1f} / {ms.get('int8', 0):.1f}" if ms else "-") + " |")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--command", choices=["inspect", "quantize", "convert"], default="inspect")
    ap.add_argument("--models", nargs="+", default=MODELS, choices=MODELS + [TRAINED],
                    help=f"reference models; {TRAINED}: the trained one, with its test split and real calibration")
    ap.add_argument("--format", default="pt", choices=["pt", "pt2"], help="the teacher file format")
    ap.add_argument("--options", default="", help="more options for quantize / convert, one string")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--results", default=None, help="JSONL file the rows are appended to")
    ap.add_argument("--table", action="store_true", help="print the table of --results (a glob) and stop")
    a = ap.parse_args(argv)
    if a.table:
        return table(a.results or str(HERE / "results" / "real-size*.jsonl"))
    for model in a.models:
        row = run_one(model, a.command, a.options, a.threads, a.format)
        print(json.dumps(row), flush=True)
        if a.results:
            with open(a.results, "a") as f:
                f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
