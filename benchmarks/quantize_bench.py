"""int8 calibration without private data, model by model: ``dfkd-edge quantize`` on the zoo's teachers
(benchmarks/zoo.py, ENTRIES + EXTRA) and its deeper 32x32 image models (DEEP, ``python benchmarks/zoo.py
--deep``): each model's real test accuracy in fp32 and in int8 calibrated on three sources, side by
side in one run (the calibration set synthesized from the model, what ships; the model's real training
split; Gaussian N(0, 1) noise), the layers the guardrail left in float for each, the data-free verdict,
the seconds, and the shipped int8 model's batch-1 speed-up over fp32 on this CPU.

    python benchmarks/quantize_bench.py --seeds 0 1 2                # every cached zoo model
    python benchmarks/quantize_bench.py --models shapes32z-r18 --seeds 0 --iterations 50
    python benchmarks/quantize_bench.py --onnx --seeds 0             # each model as its ONNX export alone
    python benchmarks/quantize_bench.py --calib-samples 64 --holdout 64 --iterations 10   # the --time-budget floors
    python benchmarks/quantize_bench.py --table                      # the table from the results so far

Every run is one in-process ``dfkd_edge.flows.quantize`` with the CLI's defaults (``--iterations``
overrides the synthesis steps), ``--eval-data`` the entry's test split and ``--calib-data`` its
training split; the seed draws the synthesized set and the real and Gaussian subsets. Results are
appended to ``--results`` (JSON lines; a run already there is not repeated).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import zoo  # noqa: E402

DEFAULT_RESULTS = HERE / "results" / "quantize.jsonl"


def onnx_export(meta: dict, work: Path) -> Path:
    """The zoo model as a user's ONNX export would be (torch.onnx, BatchNorms folded where it folds them)."""
    from dfkd_edge.export.onnx_export import export_onnx
    from dfkd_edge.stages.export import shipped_module
    from dfkd_edge.teacher import load_teacher

    t = load_teacher(meta["teacher"], tuple(meta["input_shape"]), meta.get("factory"))
    return export_onnx(shipped_module(t), t.spec.input_shape, work / f"{meta['name']}.onnx")


def run_one(meta: dict, seed: int, iterations: int | None, threads: int, work: Path, variant: str = "pytorch",
            sizes: dict | None = None) -> dict:
    from dfkd_edge.flows import quantize
    from dfkd_edge.options import config as options_config

    o = {"out": str(work / f"{meta['name']}-{seed}"), "force": True, "seed": seed,
         "threads": threads, "input_shape": ",".join(map(str, meta["input_shape"])), "factory": meta.get("factory"),
         "eval_data": meta["eval"], "calib_data": meta["train"]}
    model = meta["teacher"]
    if variant == "onnx":  # the ONNX file alone: synthesized from its graph run in PyTorch
        model, o["factory"], o["input_shape"] = str(onnx_export(meta, work)), None, None
    if iterations:
        o["iterations"] = iterations
    o.update({k: v for k, v in (sizes or {}).items() if v})
    cfg = options_config("quantize", model, o)
    t0 = time.perf_counter()
    r = quantize(cfg)
    sources = {c["source"]: c for c in r["calibration_sources"]}
    host = {(x["precision"], x["batch"]): x["p50_ms"] for x in r["latency"]
            if x["device"] == "host-cpu" and x["backend"] == "onnxruntime-cpu"}
    return {"model": meta["name"], "variant": variant, "seed": seed, "iterations": cfg.iterations, "samples": cfg.samples,
            "holdout": cfg.holdout,
            "bn_layers": len(r["model"]["bn_layers"]), "domain_source": r["model"]["input_domain"]["source"],
            "seconds": round(time.perf_counter() - t0, 1), "stage_seconds": r["timings"],
            "fp32": r["accuracy"]["model_fp32"], "format": r["calibration"]["chosen_format"],
            "sources": {k: {"accuracy": c["accuracy"], "agreement": c["agreement_with_fp32"],
                            "kl": c.get("output_kl_to_fp32"),
                            "float_layers": len(c["float_layers"]), "held": c["guardrail_held"]}
                        for k, c in sources.items()},
            "verdict": r["quality"]["verdict"], "reasons": r["quality"]["reasons"], "signals": r["quality"]["signals"],
            "p50_ms_b1": {"fp32": host.get(("fp32", 1)), "int8": host.get(("int8", 1))},
            "recommended_host": next(x["file"] for x in r["recommended"] if x["target"] == "host-cpu"),
            "commit": zoo.code_commit(), "config": cfg.to_dict()}


def load(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _ms(vals: list[float], scale: float = 100.0, fmt: str = ".2f") -> str:
    vals = [v for v in vals if v is not None]
    if not vals:
        return "-"
    m = statistics.mean(vals) * scale
    return f"{m:{fmt}}" + (f" ± {statistics.stdev(vals) * scale:{fmt}}" if len(vals) > 1 else "")


def print_table(rows: list[dict]) -> None:
    """One line per (model, iterations): mean ± std over the seeds run."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r.get("variant", "pytorch"), r["iterations"], r.get("samples", 256),
                           r.get("holdout", 256)), []).append(r)
    print("| model | given as | steps | samples (calibration / held out) | seeds | fp32 | int8, real calibration | int8, synthetic (ships) | int8, Gaussian noise "
          "| synthetic - real | synthetic - fp32 | layers in float (real / synthetic / Gaussian) | verdicts "
          "| int8 speed-up, batch 1 | seconds | output KL to fp32, 10^-3 nats (real / synthetic / Gaussian) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (model, variant, steps, samples, holdout), rs in groups.items():
        acc = {s: [r["sources"].get(s, {}).get("accuracy") for r in rs] for s in ("real", "synthetic", "gaussian")}
        diff_real = [r["sources"]["synthetic"]["accuracy"] - r["sources"]["real"]["accuracy"] for r in rs]
        diff_fp32 = [r["sources"]["synthetic"]["accuracy"] - r["fp32"] for r in rs]
        floats = " / ".join(_ms([r["sources"][s]["float_layers"] for r in rs], 1, ".0f")
                            for s in ("real", "synthetic", "gaussian"))
        verdicts = ", ".join(f"{v[0]}{sum(r['verdict'] == v for r in rs)}" for v in ("ok", "doubtful", "unreliable")
                             if any(r["verdict"] == v for r in rs))
        kls = " / ".join(_ms([r["sources"][s].get("kl") for r in rs], 1000, ".2f")
                         for s in ("real", "synthetic", "gaussian"))
        speed = [r["p50_ms_b1"]["fp32"] / r["p50_ms_b1"]["int8"] for r in rs if r["p50_ms_b1"]["int8"]]
        given = "PyTorch" if variant == "pytorch" else f"ONNX alone ({rs[0]['bn_layers']} BN, domain {rs[0]['domain_source']})"
        print(f"| {model} | {given} | {steps} | {samples} / {holdout} | {len(rs)} | {_ms([r['fp32'] for r in rs])} | {_ms(acc['real'])} | "
              f"{_ms(acc['synthetic'])} | {_ms(acc['gaussian'])} | {_ms(diff_real)} | {_ms(diff_fp32)} | {floats} | "
              f"{verdicts} | {_ms(speed, 1)}x | {_ms([r['seconds'] for r in rs], 1, '.0f')} | {kls} |")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="*", help="zoo names (default: every entry cached, deep ones included)")
    ap.add_argument("--seeds", nargs="*", type=int, default=[0])
    ap.add_argument("--iterations", type=int, default=None, help="synthesis steps (default: quantize's own)")
    ap.add_argument("--calib-samples", type=int, default=None, help="calibration samples (default: quantize's own); "
                    "the real and Gaussian sources use as many")
    ap.add_argument("--holdout", type=int, default=None, help="held-out check samples (default: quantize's own)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--results", default=str(DEFAULT_RESULTS))
    ap.add_argument("--onnx", action="store_true", help="give each model as its ONNX export alone (no --source)")
    ap.add_argument("--table", action="store_true", help="only print the table from --results")
    ap.add_argument("--cache", default=str(zoo.DEFAULT_CACHE))
    a = ap.parse_args(argv)
    results, cache = Path(a.results), Path(a.cache)
    if a.table:
        print_table(load(results))
        return
    torch.set_num_threads(a.threads)
    logging.getLogger().setLevel(logging.ERROR)  # onnxruntime.quantization's per-weight warnings
    names = a.models or [e.name for e in zoo.ENTRIES + zoo.PHOTOS + zoo.EXTRA + zoo.DEEP
                         if (cache / f"{e.name}.json").exists()]
    variant = "onnx" if a.onnx else "pytorch"
    from dfkd_edge.options import defaults as options_defaults

    d = options_defaults("quantize")
    steps = a.iterations or d["iterations"]
    size = (a.calib_samples or d["calib_samples"], a.holdout or d["holdout"])
    done = {(r["model"], r.get("variant", "pytorch"), r["seed"], r["iterations"], r.get("samples", 256),
             r.get("holdout", 256)) for r in load(results)}
    work = Path(tempfile.mkdtemp(prefix="quantize-bench-"))
    try:
        for name in names:
            meta = zoo.build(zoo.BY_NAME[name], cache)
            for seed in a.seeds:
                if (name, variant, seed, steps, *size) in done:
                    continue
                row = run_one(meta, seed, a.iterations, a.threads, work, variant,
                              {"calib_samples": a.calib_samples, "holdout": a.holdout})
                results.parent.mkdir(parents=True, exist_ok=True)
                with results.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                s = row["sources"]
                print(f"{name} seed {seed}: fp32 {row['fp32']:.4f}, int8 real {s['real']['accuracy']:.4f}, synthetic "
                      f"{s['synthetic']['accuracy']:.4f}, gaussian {s['gaussian']['accuracy']:.4f} "
                      f"[{row['verdict']}] {row['seconds']} s", flush=True)
                shutil.rmtree(work / f"{name}-{seed}", ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print_table(load(results))


if __name__ == "__main__":
    main()
