"""Is the student --max-latency-ms chooses at least as accurate as the plain default student at the same device
latency? On zoo image teachers (benchmarks/zoo.py): the plain default student (``--student auto``, sized by
parameters) is exported and its int8 batch-1 p50 estimated on the device target; a second convert is given
``--scale`` times that estimate as ``--max-latency-ms``; both students' int8 accuracy on the teacher's real test
split is recorded, with the chosen family, width, multiply-accumulates and estimate, per seed. At ``--scale 1``
the script first says which student the limit chooses: where it is the plain one, the two runs would be one
run twice, and it skips them.

    python benchmarks/student_latency.py --teachers digits01-seq shapes01-mbv shapesz-res photoz-res --seeds 0 1

Rows go to benchmarks/results/student-latency.jsonl with the commit and each run's full configuration; the
table prints mean +- std over seeds and the difference chosen - plain.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import zoo  # noqa: E402
from quantize_bench import _ms  # noqa: E402
from zoo_bench import _config  # noqa: E402

from dfkd_edge.export.onnx_export import export_onnx  # noqa: E402
from dfkd_edge.flows import convert  # noqa: E402
from dfkd_edge.models import create_student  # noqa: E402
from dfkd_edge.student_choice import choose_for_latency  # noqa: E402
from dfkd_edge.targets.estimate import at_width, estimate_ms, layer_costs  # noqa: E402
from dfkd_edge.targets.profile import load_profile  # noqa: E402
from dfkd_edge.teacher import load_teacher  # noqa: E402

RESULTS = HERE / "results" / "student-latency.jsonl"


def plain_latency(meta: dict, target: str) -> tuple[dict, float]:
    """The plain default student's recipe and its estimated int8 batch-1 p50 on ``target``."""
    teacher = load_teacher(meta["teacher"], tuple(meta["input_shape"]), meta.get("factory"))
    model, recipe = create_student("auto", tuple(meta["input_shape"]), meta["classes"], teacher.spec.num_params)
    with tempfile.TemporaryDirectory() as d:
        f = export_onnx(model.eval(), tuple(meta["input_shape"]), Path(d) / "plain.onnx")
        ms = estimate_ms(at_width(layer_costs(f, 1, "fp32"), "int8"), load_profile(target), "int8")["ms"]
    return recipe, ms


def run(meta: dict, seed: int, target: str, limit: float | None, work: Path) -> dict:
    out = work / f"{meta['name']}-{'chosen' if limit else 'plain'}-{seed}-{limit}"
    opts = {"targets": (target, "host-cpu")}
    if limit:
        opts["max_latency_ms"] = limit
    cfg = _config(meta, out, seed, **opts)
    t0 = time.perf_counter()
    report = convert(cfg)
    s = report["student"]
    return {"teacher": meta["name"], "student": "chosen" if limit else "plain", "seed": seed, "target": target,
            "max_latency_ms": limit, "family": s["name"], "width": s["width"], "num_params": s["num_params"],
            "chosen_for": {k: v for k, v in (s.get("chosen_for") or {}).items() if k != "candidates"} or None,
            "int8": report["accuracy"]["student_int8"], "fp32": report["accuracy"]["student_fp32"],
            "teacher_acc": report["accuracy"]["teacher"], "seconds": round(time.perf_counter() - t0, 1),
            "config": cfg.to_dict()}


def table(rows: list[dict]) -> None:
    print("| teacher | plain student | --max-latency-ms | chosen student | plain int8 % | chosen int8 % "
          "| chosen - plain |")
    print("|---|---|---|---|---|---|---|")
    for t in dict.fromkeys(r["teacher"] for r in rows):
        p = [r for r in rows if r["teacher"] == t and r["student"] == "plain"]
        c = [r for r in rows if r["teacher"] == t and r["student"] == "chosen"]
        if not p or not c:
            continue
        pi, ci = [r["int8"] for r in p], [r["int8"] for r in c]
        print(f"| {t} | {p[0]['family']} w{p[0]['width']} | {c[0]['max_latency_ms']:.3g} ms | "
              f"{', '.join(sorted({r['family'] + ' w' + str(r['width']) for r in c}))} | {_ms(pi)} | {_ms(ci)} | "
              f"{100 * (statistics.mean(ci) - statistics.mean(pi)):+.2f} |")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--teachers", nargs="+", default=["digits01-seq", "shapes01-mbv", "shapesz-res", "photoz-res"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    ap.add_argument("--target", default="jetson-orin-nano")
    ap.add_argument("--scale", type=float, default=1.0, help="--max-latency-ms = scale x the plain student's estimate")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--results", default=str(RESULTS))
    ap.add_argument("--table", action="store_true", help="only print the table of --results")
    a = ap.parse_args(argv)
    results = Path(a.results)
    done = [json.loads(line) for line in results.read_text().splitlines()] if results.exists() else []
    if a.table:
        table(done)
        return
    torch.set_num_threads(a.threads)
    results.parent.mkdir(parents=True, exist_ok=True)
    work = Path(zoo.DEFAULT_CACHE) / "runs"
    have = {(r["teacher"], r["student"], r["seed"], r.get("scale")) for r in done}
    for name in a.teachers:
        meta = zoo.build(zoo.BY_NAME[name])
        recipe, plain_ms = plain_latency(meta, a.target)
        limit = a.scale * plain_ms
        chosen = choose_for_latency(tuple(meta["input_shape"]), meta["classes"], load_profile(a.target),
                                    limit)["chosen"]
        print(f"{name}: plain {recipe['name']} w{recipe['width']} {plain_ms:.4g} ms; at {limit:.4g} ms the choice is "
              f"{chosen['family']} w{chosen['width']}", flush=True)
        if (chosen["family"], chosen["width"]) == (recipe["name"], recipe["width"]):
            continue  # the same student: equal by construction
        for seed in a.seeds:
            for lim in (None, limit):
                key = (name, "chosen" if lim else "plain", seed, a.scale if lim else None)
                if key in have or (lim is None and (name, "plain", seed, None) in have):
                    continue
                row = {**run(meta, seed, a.target, lim, work), "scale": a.scale if lim else None,
                       "plain_ms": plain_ms, "commit": zoo.code_commit(),
                       "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
                with results.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                done.append(row)
                print(f"{name} {key[1]} seed {seed}: {row['family']} w{row['width']} int8 {row['int8']}", flush=True)
    table(done)


if __name__ == "__main__":
    main()
