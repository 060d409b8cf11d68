"""Which measure on synthesized check samples tells when int8 harms a model? Plain int8 (no layer left in float),
each ONNX Runtime format, calibrated on the samples quantize synthesizes, against fp32, three ways on those samples:

- top-1 agreement: the share of samples whose int8 top-1 is fp32's;
- weighted agreement on every sample: 1 - mean(p[fp32's top-1] - p[int8's top-1]) under fp32's own probabilities
  p, each disagreement counted by how much likelier fp32 found its class than int8's;
- the same on the samples fp32 is sure of (top-1 probability >= 0.9): what the guardrail holds
  (dfkd_edge.export.quantize.weighted_agreement);

and on the model's real test split: the accuracy int8 lost to fp32, and top-1 agreement. A measure serves the
guardrail when it stays at or above the threshold (the guardrail's, 99%) on every model whose real accuracy int8
kept, and falls below it where int8 lost accuracy.

    python benchmarks/guardrail_criterion.py --models digits255-res tab5-bnfirst --seeds 0 1
    python benchmarks/guardrail_criterion.py --models photo22 --seeds 0
    python benchmarks/guardrail_criterion.py --table
    python benchmarks/guardrail_criterion.py --remeasure    # the kept outputs measured again, the table

Zoo names are benchmarks/zoo.py's (trained and cached on first use); ``photo22`` is benchmarks/photo_task.py's
MobileNetV2 (train it first). Each run synthesizes with quantize's defaults (``--iterations`` overrides the steps)
and uses its calibration and held-out sizes. Rows are appended to ``--results`` (JSON lines, with the commit and
the configuration); a run already there is not repeated.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import zoo  # noqa: E402
from quantize_bench import _ms, load  # noqa: E402

DEFAULT_RESULTS = HERE / "results" / "guardrail-criterion.jsonl"
PHOTO = HERE / ".refmodels" / "photo22"
OUTPUTS = zoo.DEFAULT_CACHE / "guardrail-criterion"


def model_options(name: str, cache: Path) -> tuple[str, dict, np.ndarray, np.ndarray]:
    """(model file, quantize options, real test x, y)."""
    if name == "photo22":
        doc = json.loads((PHOTO / "photo22.json").read_text())
        test = np.load(PHOTO / "test.npz")
        return (str(PHOTO / "mobilenet_v2-22.pt"), {"input_shape": ",".join(map(str, doc["input_shape"]))},
                test["x"], test["y"])
    meta = zoo.build(zoo.BY_NAME[name], cache)
    test = np.load(meta["eval"])
    return (meta["teacher"], {"input_shape": ",".join(map(str, meta["input_shape"])), "factory": meta.get("factory")},
            test["x"], test["y"])


def synthesized(model: str, options: dict, work: Path):
    """quantize's first stages on ``model``: (state with x_train / x_hold, fp32 ONNX path, config)."""
    from dfkd_edge.config import settle
    from dfkd_edge.distributed import Dist
    from dfkd_edge.flows import _state
    from dfkd_edge.options import config as options_config
    from dfkd_edge.runfiles import MODEL_FILES
    from dfkd_edge.runner import Run, prepare_out_dir, run_stages
    from dfkd_edge.stages.export import ExportModel
    from dfkd_edge.stages.inspect import InspectModel
    from dfkd_edge.stages.synthesize import Synthesize

    cfg = options_config("quantize", model, {**options, "out": str(work), "force": True})
    prepare_out_dir(work, True, False)
    settle(cfg)
    run = Run(cfg, None)
    run.manifest["flow"] = "quantize"
    s = _state(cfg, run, Dist(), MODEL_FILES)
    run_stages(run, s, [InspectModel(), Synthesize(), ExportModel()])
    return s, run.path(s.files.onnx_fp32), cfg


def measures(fp32_logits: np.ndarray, int8_top1: np.ndarray) -> dict:
    """Top-1 agreement and weighted agreement on every sample; the guardrail's measure (weighted, on the samples
    fp32 is sure of) and the share of those."""
    from dfkd_edge.export.quantize import probabilities, sure, weighted_agreement

    p = probabilities(fp32_logits)
    rows = np.arange(len(p))
    return {"agreement": float((p.argmax(1) == int8_top1).mean()),
            "weighted_all": float(1.0 - (p[rows, p.argmax(1)] - p[rows, int8_top1]).mean()),
            "guardrail": weighted_agreement(p, int8_top1), "sure_share": float(sure(p).mean())}


def run_one(name: str, seed: int, iterations: int | None, threads: int, work: Path, cache: Path) -> list[dict]:
    from dfkd_edge.backends import predict
    from dfkd_edge.backends.onnxruntime import OrtRunner
    from dfkd_edge.export.quantize import CANDIDATES, RANGE_CACHE, calibration_subset, quantize_one

    model, options, xt, yt = model_options(name, cache)
    options = {**options, "seed": seed, "threads": threads, **({"iterations": iterations} if iterations else {})}
    t0 = time.perf_counter()
    s, fp32_path, cfg = synthesized(model, options, work / "run")
    calib_x = calibration_subset(s.x_train, cfg.calib.samples, cfg.seed)
    xt = np.ascontiguousarray(xt, dtype=np.float32)
    with OrtRunner(fp32_path, threads, "fp32") as r:
        f_hold, f_test = predict(r, s.x_hold), predict(r, xt)
    rows, kept = [], {"fp32_hold": f_hold, "fp32_test": f_test, "y_test": yt}
    for fmt in CANDIDATES:
        path = work / f"{fmt}.onnx"
        quantize_one(fp32_path, path, calib_x, fmt, cfg.calib, ranges=work / RANGE_CACHE)
        with OrtRunner(path, threads, "int8") as r:
            kept[f"{fmt}_hold"], kept[f"{fmt}_test"] = predict(r, s.x_hold), predict(r, xt)
        q_hold, q_test = kept[f"{fmt}_hold"].argmax(1), kept[f"{fmt}_test"].argmax(1)
        rows.append({"model": name, "seed": seed, "format": fmt, "iterations": cfg.iterations,
                     "samples": cfg.calib.samples, "holdout": len(s.x_hold),
                     "synthetic": measures(f_hold, q_hold), "real": measures(f_test, q_test),
                     "real_fp32": float((f_test.argmax(1) == yt).mean()), "real_int8": float((q_test == yt).mean()),
                     "seconds": round(time.perf_counter() - t0, 1), "commit": zoo.code_commit(),
                     "config": cfg.to_dict()})
    OUTPUTS.mkdir(parents=True, exist_ok=True)  # the outputs, to measure them other ways without running again
    np.savez_compressed(OUTPUTS / f"{name}-{seed}-{cfg.iterations}.npz", **kept)
    return rows


def remeasure(row: dict) -> dict:
    """``row`` measured again from its kept outputs (as it is where they are gone)."""
    f = OUTPUTS / f"{row['model']}-{row['seed']}-{row['iterations']}.npz"
    if not f.exists():
        return row
    d = np.load(f)
    return {**row, "synthetic": measures(d["fp32_hold"], d[f"{row['format']}_hold"].argmax(1)),
            "real": measures(d["fp32_test"], d[f"{row['format']}_test"].argmax(1))}


def print_table(rows: list[dict], threshold: float | None = None) -> None:
    """One line per (model, format, steps): mean ± std over the seeds; the last column says on how many seeds each
    measure on the synthetic samples would have held ``threshold``."""
    from dfkd_edge.export.quantize import CalibConfig

    threshold = threshold or CalibConfig().min_agreement
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["format"], r["iterations"]), []).append(r)
    keys = ("agreement", "weighted_all", "guardrail")
    print("| model | int8 format | steps | seeds | fp32 real accuracy | int8 - fp32, real | top-1 agreement, real "
          "| synthetic: top-1 agreement | weighted, every sample | weighted, samples fp32 is sure of (the guardrail) "
          f"| share fp32 is sure of (synthetic / real) | holds {100 * threshold:g}% (the three) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for (model, fmt, steps), rs in groups.items():
        holds = " / ".join(f"{sum(r['synthetic'][k] >= threshold for r in rs)}/{len(rs)}" for k in keys)
        syn = " | ".join(_ms([r["synthetic"][k] for r in rs]) for k in keys)
        print(f"| {model} | {fmt} | {steps} | {len(rs)} | {_ms([r['real_fp32'] for r in rs])} "
              f"| {_ms([r['real_int8'] - r['real_fp32'] for r in rs])} | {_ms([r['real']['agreement'] for r in rs])} "
              f"| {syn} | {_ms([r['synthetic']['sure_share'] for r in rs])} / "
              f"{_ms([r['real']['sure_share'] for r in rs])} | {holds} |")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="*", help="zoo names and/or photo22 (default: every cached zoo model)")
    ap.add_argument("--seeds", nargs="*", type=int, default=[0])
    ap.add_argument("--iterations", type=int, default=None, help="synthesis steps (default: quantize's own)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--results", default=str(DEFAULT_RESULTS))
    ap.add_argument("--table", action="store_true", help="only print the table from --results")
    ap.add_argument("--remeasure", action="store_true", help="measure the kept outputs again (after a change to "
                    "``measures``), rewrite --results and print the table")
    ap.add_argument("--cache", default=str(zoo.DEFAULT_CACHE))
    a = ap.parse_args(argv)
    results, cache = Path(a.results), Path(a.cache)
    if a.table or a.remeasure:
        rows = load(results)
        if a.remeasure:
            rows = [remeasure(r) for r in rows]
            results.write_text("".join(json.dumps(r) + "\n" for r in rows))
        print_table(rows)
        return
    torch.set_num_threads(a.threads)
    logging.getLogger().setLevel(logging.ERROR)
    names = a.models or [e.name for e in zoo.ENTRIES + zoo.PHOTOS + zoo.EXTRA + zoo.DEEP
                         if (cache / f"{e.name}.json").exists()]
    from dfkd_edge.options import defaults as options_defaults

    steps = a.iterations or options_defaults("quantize")["iterations"]
    done = {(r["model"], r["seed"], r["iterations"]) for r in load(results)}
    for name in names:
        for seed in a.seeds:
            if (name, seed, steps) in done:
                continue
            work = Path(tempfile.mkdtemp(prefix="guard-crit-"))
            try:
                rows = run_one(name, seed, a.iterations, a.threads, work, cache)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            results.parent.mkdir(parents=True, exist_ok=True)
            with results.open("a") as f:
                f.writelines(json.dumps(r) + "\n" for r in rows)
            for r in rows:
                print(f"{name} seed {seed} {r['format']}: real int8-fp32 {r['real_int8'] - r['real_fp32']:+.4f}; "
                      f"synthetic agreement {r['synthetic']['agreement']:.4f}, "
                      f"the guardrail's measure {r['synthetic']['guardrail']:.4f}",
                      flush=True)
    print_table(load(results))


if __name__ == "__main__":
    main()
