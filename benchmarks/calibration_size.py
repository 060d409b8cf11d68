"""How much calibration a network needs: int8 test accuracy against the number of calibration samples and the
synthesis steps that made them, beside real calibration of the same sizes (and Gaussian noise), on models with
real labelled data: the trained 22-class MobileNetV2 at 128x128 (``photo22``, benchmarks/photo_task.py) and the
zoo's teachers (benchmarks/zoo.py names).

    python benchmarks/calibration_size.py --models photo22 --sizes 16 32 64 128 256 --steps 10 50 --subsets 3
    python benchmarks/calibration_size.py --table

For each model, quantize's own first stages (inspect, synthesize, export; ``--time-budget off``) synthesize one
pool of ``--pool`` samples at each number of steps. Each calibration then draws ``size`` samples from a pool
(seed = the subset) and calibrates the model's fp32 ONNX export in one fixed format (``--format``, quantize's
first; plain int8: no guardrail, so only the calibration set differs), and the int8 model is run on the real test
split. Real calibration draws from the model's training inputs (photo22: its 512 kept training samples), Gaussian
from N(0, 1) (quantize's ``gaussian`` source). The spread over subsets is real calibration's own: a difference
smaller than it is not one this benchmark can tell from chance. Rows (JSON lines, with the commit and the
configuration) go to ``--results``; a (model, source, size, subset) already there is not repeated.
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
from guardrail_criterion import PHOTO, model_options, synthesized  # noqa: E402
from quantize_bench import _ms, load  # noqa: E402

DEFAULT_RESULTS = HERE / "results" / "calibration-size.jsonl"


def real_inputs(name: str, cache: Path) -> np.ndarray:
    if name == "photo22":
        return np.load(PHOTO / "calib.npz")["x"].astype(np.float32)
    return np.load(zoo.build(zoo.BY_NAME[name], cache)["train"])["x"].astype(np.float32)


def pools(name: str, a, work: Path) -> tuple[dict[str, np.ndarray], Path, object, float]:
    """{source: samples to draw from}, the fp32 ONNX path, the calibration config, and per synthesis steps the
    seconds and the full configuration of the run that synthesized the pool."""
    model, options, _, _ = model_options(name, Path(a.cache))
    out, fp32, calib, synthesis = {}, None, None, {}
    for steps in a.steps:
        t0 = time.perf_counter()
        s, path, cfg = synthesized(model, {**options, "seed": 0, "threads": a.threads, "iterations": steps,
                                           "calib_samples": a.pool, "holdout": 16, "time_budget": "off"},
                                   work / f"run-{steps}")
        synthesis[steps] = {"seconds": round(time.perf_counter() - t0, 1), "config": cfg.to_dict()}
        out[f"synthetic-{steps}"] = np.asarray(s.x_train.take(np.arange(len(s.x_train))), np.float32)
        if fp32 is None:
            fp32, calib = work / "fp32.onnx", cfg.calib
            shutil.copy(path, fp32)
    out["real"] = real_inputs(name, Path(a.cache))
    return out, fp32, calib, synthesis


def draw(source: str, pool: np.ndarray | None, size: int, subset: int, shape) -> np.ndarray:
    from dfkd_edge.export.quantize import calibration_subset

    if source == "gaussian":
        return np.random.default_rng(subset).standard_normal((size, *shape)).astype(np.float32)
    return calibration_subset(pool, size, subset)


def run_model(name: str, a, work: Path, done: set, results: Path) -> None:
    from dataclasses import asdict, replace

    from dfkd_edge.backends import predict
    from dfkd_edge.backends.onnxruntime import OrtRunner
    from dfkd_edge.export.quantize import quantize_one

    wanted = [f"synthetic-{n}" for n in a.steps] + ["real", "gaussian"]
    if all((name, src, size, k) in done for src in wanted for size in a.sizes for k in range(a.subsets)):
        return  # nothing left to run: the pools are not synthesized again
    _, _, xt, yt = model_options(name, Path(a.cache))
    xt = np.ascontiguousarray(xt, dtype=np.float32)
    sources, fp32, calib, synthesis = pools(name, a, work)
    calib = replace(calib, formats=(a.format,), threads=a.threads)
    with OrtRunner(fp32, a.threads, "fp32") as r:
        f_test = predict(r, xt)
    fp32_acc = float((f_test.argmax(1) == yt).mean())
    for source in [*sources, "gaussian"]:
        pool = sources.get(source)
        for size in a.sizes:
            if pool is not None and size > len(pool):
                continue
            for k in range(a.subsets):
                if (name, source, size, k) in done:
                    continue
                t0 = time.perf_counter()
                path = work / "int8.onnx"
                quantize_one(fp32, path, draw(source, pool, size, k, xt.shape[1:]), a.format, calib)
                with OrtRunner(path, a.threads, "int8") as r:
                    top1 = predict(r, xt).argmax(1)
                steps = int(source.split("-")[1]) if source.startswith("synthetic") else None
                row = {"model": name, "source": source, "steps": steps, "size": size, "subset": k,
                       "pool": None if pool is None else len(pool), "format": a.format, "fp32": fp32_acc,
                       "accuracy": float((top1 == yt).mean()), "agreement": float((top1 == f_test.argmax(1)).mean()),
                       "test_samples": int(len(yt)), "input_shape": list(xt.shape[1:]),
                       "synthesis_s": synthesis.get(steps, {}).get("seconds"),
                       "synthesis_config": synthesis.get(steps, {}).get("config"),
                       "seconds": round(time.perf_counter() - t0, 1),
                       "commit": zoo.code_commit(), "config": {**asdict(calib), "formats": [a.format]}}
                with results.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(name, source, size, k, round(row["accuracy"] * 100, 2), flush=True)


def print_table(rows: list[dict]) -> None:
    """One line per (model, source): int8 accuracy (%) mean ± std over subsets at each size; the last line of each
    model gives fp32."""
    by: dict[tuple, list[dict]] = {}
    for r in rows:
        by.setdefault((r["model"], r["source"]), []).append(r)
    sizes = sorted({r["size"] for r in rows})
    print("| model (input, test samples) | calibration source | " + " | ".join(f"{n} samples" for n in sizes) + " |")
    print("|---|---|" + "---|" * len(sizes))
    order = lambda k: (k[0], {"real": 0, "gaussian": 9}.get(k[1], 1), k[1])  # noqa: E731
    for key in sorted(by, key=order):
        rs = by[key]
        cells = [_ms([r["accuracy"] for r in rs if r["size"] == n]) for n in sizes]
        shape = "x".join(map(str, rs[0]["input_shape"][-2:]))
        label = key[1] if key[1] in ("real", "gaussian") else f"synthetic, {rs[0]['steps']} steps"
        print(f"| {key[0]} ({shape}, {rs[0]['test_samples']}; fp32 {rs[0]['fp32'] * 100:.2f}) | {label} | "
              + " | ".join(cells) + " |")
    cells: dict[tuple, int] = {}
    for r in rows:
        cells[(r["model"], r["source"], r["size"])] = cells.get((r["model"], r["source"], r["size"]), 0) + 1
    print(f"\nformat {', '.join(sorted({r['format'] for r in rows}))}; subsets per cell: {max(cells.values())}; "
          f"commits: {', '.join(sorted({r['commit'] for r in rows}))}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="*", default=[], help="photo22 and/or zoo names")
    ap.add_argument("--sizes", nargs="*", type=int, default=[16, 32, 64, 128, 256])
    ap.add_argument("--steps", nargs="*", type=int, default=[10, 50], help="synthesis steps, one pool each")
    ap.add_argument("--pool", type=int, default=384, help="synthesized samples per pool")
    ap.add_argument("--subsets", type=int, default=3, help="draws per (source, size), seeds 0..N-1")
    ap.add_argument("--format", default="qdq-u8s8")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--results", default=str(DEFAULT_RESULTS))
    ap.add_argument("--table", action="store_true", help="only print the table from --results")
    ap.add_argument("--cache", default=str(zoo.DEFAULT_CACHE))
    a = ap.parse_args(argv)
    results = Path(a.results)
    if a.table:
        print_table(load(results))
        return
    torch.set_num_threads(a.threads)
    logging.getLogger().setLevel(logging.ERROR)
    done = {(r["model"], r["source"], r["size"], r["subset"]) for r in load(results)}
    results.parent.mkdir(parents=True, exist_ok=True)
    for name in a.models:
        work = Path(tempfile.mkdtemp(prefix="calibration-size-"))
        try:
            run_model(name, a, work, done, results)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    print_table(load(results))


if __name__ == "__main__":
    main()
