"""Methods x teachers on the benchmark zoo (benchmarks/zoo.py): the student's real test accuracy
(fp32 and int8) against the same student distilled on the real training split (real-data KD, the
upper bound) and on Gaussian noise in the teacher's input domain (noise KD, the lower bound), and
the data-free quality verdict of every run.

    python benchmarks/zoo_bench.py                       # default method, every zoo teacher, seed 0
    python benchmarks/zoo_bench.py --methods auto soft-target adversarial reused-generator vkd \\
        --teachers digits01-seq signal10z-cnn --seeds 0 1 2
    python benchmarks/zoo_bench.py --multi --methods auto cdfkd-mfs   # the multi-teacher sets
    python benchmarks/zoo_bench.py --table               # print the tables from the results so far

Every run is one in-process ``dfkd_edge.pipeline.convert`` with the CLI's defaults (only the
latency budget is cut to 0.05 s: latency is not what this measures) and ``--eval-data`` the zoo
entry's real test split. Results are appended to ``--results`` (JSON lines; a run already there
is not repeated), so an interrupted benchmark continues where it stopped. They live in
``benchmarks/results/``, tracked by git (the teachers and run folders in ``benchmarks/.zoo`` are not):
a fresh checkout keeps every measured row for ``--table``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import zoo  # noqa: E402

DEFAULT_RESULTS = HERE / "results" / "results.jsonl"
METHOD_ARGS = {  # benchmark name -> convert options
    "auto": {}, "deepinversion": {"method": "deepinversion"}, "soft-target": {"method": "soft-target"},
    "auto-noise-start": {"synth_start": "noise"},  # the default, images started from noise (before session 9)
    "auto-half-start": {"synth_start": "half"},  # half of each batch started as dead leaves, half as noise
    "soft-target-noise-start": {"method": "soft-target", "synth_start": "noise"},
    "auto-4k": {"samples": 4096}, "auto-it400": {"iterations": 400},  # budgets (session 10)
    "auto-kd200": {"kd_epochs": 200}, "auto-4k-kd50": {"samples": 4096, "kd_epochs": 50},
    "auto-4k-it100": {"samples": 4096, "iterations": 100, "kd_epochs": 50},  # the same cost as the default
    "auto-8k-it50": {"samples": 8192, "iterations": 50, "kd_epochs": 25},
    "auto-4k-kd200": {"samples": 4096, "kd_epochs": 200},
    "auto-jitter": {"synth_jitter": True},  # session 11: the teacher sees moved copies during inversion
    "auto-bnstd": {"synth_bn_units": "standardised"},  # session 11: the inversion's BN distance in each layer's units
    "auto-8k": {"samples": 8192}, "auto-8k-kd25": {"samples": 8192, "kd_epochs": 25},
    "adversarial": {"method": "adversarial"}, "reused-generator": {"method": "reused-generator"},
    "gaussian": {"method": "gaussian"}, "vkd": {"kd_mode": "vkd"},  # session 5's vkd rows: the virtual set
    "vkd-inverted": {"kd_mode": "vkd", "vkd_transfer": "inverted"},  # the VKD student on the inverted set
    "vkd-virtual": {"kd_mode": "vkd", "vkd_transfer": "virtual"},  # on a set synthesized for its targets
    "cdfkd-mfs": {"method": "cdfkd-mfs"},  # several teachers (--multi): the multi-header student
}


def _config(meta: dict, out: Path, seed: int, teachers: list[dict] | None = None, **opts):
    from dfkd_edge.config import ConvertConfig
    from dfkd_edge.distill import KDConfig
    from dfkd_edge.distill.vkd import VKDConfig

    teachers = teachers or [meta]
    kd = KDConfig(mode=opts.pop("kd_mode", "kd"), epochs=opts.pop("kd_epochs", KDConfig.epochs))
    opts["vkd"] = VKDConfig(transfer=opts.pop("vkd_transfer", VKDConfig.transfer))
    return ConvertConfig(teacher=teachers[0]["teacher"], more_teachers=tuple(t["teacher"] for t in teachers[1:]),
                         out=str(out), input_shape=tuple(meta["input_shape"]), factory=meta.get("factory"),
                         eval_data=meta["eval"], seed=seed, kd=kd, latency_budget_s=0.05, force=True, **opts)


def run_convert(meta: dict, method: str, seed: int, work: Path, teachers=None, **compute) -> dict:
    from dfkd_edge.flows import convert

    out = work / f"{meta['name']}-{method}-{seed}"
    t0 = time.perf_counter()
    cfg = _config(meta, out, seed, teachers, **METHOD_ARGS[method], **compute)
    report = convert(cfg)
    row = {"teacher": meta["name"], "method": method, "seed": seed, "seconds": round(time.perf_counter() - t0, 1),
           "fp32": report["accuracy"]["student_fp32"], "int8": report["accuracy"]["student_int8"],
           "teacher_acc": report["accuracy"]["teacher"], "quality": report.get("quality"),
           "samples": report["synthesis"]["train"], "kd_epochs": cfg.kd.epochs,
           "domain": report.get("teacher", {}).get("input_domain"), "auto": report["synthesis"].get("auto"),
           "compute": {k: report.get("compute", {}).get(k) for k in ("device", "precision", "applies_to")},
           "config": cfg.to_dict()}
    from domain_fit import channel_stats

    if (out / "transfer_set.npz").exists():  # the synthesized inputs' colour against the real inputs'
        with np.load(out / "transfer_set.npz") as z:
            row["channels"] = {"synthetic": channel_stats(z["x"][:2048]),
                               "real": channel_stats(np.load(meta["train"])["x"][:2048])}
    if "multi_teacher" in report:
        row["multi"] = {k: report["multi_teacher"][k] for k in ("teachers", "ensemble")}
    else:
        from dfkd_edge.domain import InputDomain
        from dfkd_edge.teacher import load_teacher

        teacher = load_teacher(meta["teacher"], tuple(meta["input_shape"]), meta.get("factory"))
        row["probes"] = prior_probes(meta, _onnx_student(out / "student_fp32.onnx"), teacher,
                                     InputDomain.from_dict(row["domain"]), seed)
    shutil.rmtree(out, ignore_errors=True)
    return row


def _onnx_student(path: Path):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: np.ascontiguousarray(x, dtype=np.float32)})[0]


def prior_probes(meta: dict, student, teacher, domain, seed: int, n: int = 256) -> dict:
    """Top-1 agreement of ``student`` (a function of a float32 array) with ``teacher`` on samples no data
    set gave: dead-leaves images (images only) and the noise of ``domain`` (the InputDomain the student was
    built for); and on the real test split (for analysis: needs the data). Explores verdict signals
    (session 11)."""
    from dfkd_edge.synthesis.start import dead_leaves

    shape = tuple(meta["input_shape"])
    gen = torch.Generator().manual_seed(1000 + seed)
    draws = {"noise": domain.noise(n, shape, gen)}
    if len(shape) == 3:
        draws["dead_leaves"] = dead_leaves(n, shape, gen)
    out = {}
    for k, u in draws.items():
        x = domain.to_input(u)
        out[k] = float((student(x.numpy()).argmax(1) == teacher.logits(x).numpy().argmax(1)).mean())
    te = np.load(meta["eval"])["x"].astype(np.float32)[:1000]
    out["real_test"] = float((student(te).argmax(1) == teacher.logits(torch.from_numpy(te)).numpy().argmax(1)).mean())
    return {k: round(v, 4) for k, v in out.items()}


def real_kd_student(meta: dict, seed: int, teachers: list[dict] | None = None, epochs: int | None = None,
                    compute=None):
    """(student, teacher): the same student and KD recipe as convert's defaults, trained on the real
    training split. With several ``teachers`` (a multi-teacher set): the student convert builds for
    them, distilled from their ensemble."""
    from dfkd_edge.distill import KDConfig, distill
    from dfkd_edge.domain import infer_domain
    from dfkd_edge.ensemble import Ensemble
    from dfkd_edge.models import create_student
    from dfkd_edge.teacher import load_teacher

    loaded = [load_teacher(m["teacher"], tuple(m["input_shape"]), m.get("factory")) for m in (teachers or [meta])]
    teacher = Ensemble(loaded) if len(loaded) > 1 else loaded[0]
    torch.manual_seed(seed)
    np.random.seed(seed)
    # the student convert builds (an MLP normalises its inputs); kept on the teacher, as convert does
    teacher.domain = domain = infer_domain(teacher, None, seed=seed)
    torch.manual_seed(seed)
    params = max(t.spec.num_params for t in loaded)
    student, _ = create_student("auto", teacher.spec.input_shape, teacher.spec.num_classes, params, domain=domain)
    x = np.load(meta["train"])["x"].astype(np.float32)
    if compute is not None:
        teacher.to(compute)  # KD's moved copies are labelled by the teacher where the student trains
    distill(student, x, teacher.logits(torch.from_numpy(x)).numpy(), KDConfig(seed=seed, epochs=epochs or KDConfig.epochs),
            teacher=teacher, compute=compute)
    return student.eval(), teacher


def run_real_kd(meta: dict, seed: int, teachers: list[dict] | None, epochs: int, compute=None) -> dict:
    """Real-data KD's test accuracy after ``epochs`` (the upper bound of the zoo tables); ``compute``
    (dfkd_edge.compute.Compute): where it trains, the CPU by default."""
    from dfkd_edge.distill import KDConfig

    t0 = time.perf_counter()
    student, teacher = real_kd_student(meta, seed, teachers, epochs, compute)
    te = np.load(meta["eval"])
    with torch.no_grad():
        acc = float((student(torch.from_numpy(te["x"])).argmax(1).numpy() == te["y"]).mean())
    row = {"teacher": meta["name"], "method": "real-kd", "seed": seed, "fp32": acc, "int8": None, "kd_epochs": epochs,
           "seconds": round(time.perf_counter() - t0, 1),
           "compute": {"device": compute.device if compute else "cpu", "precision": compute.precision if compute
                       else "fp32", "applies_to": "distillation"},
           "config": {"kd": KDConfig(seed=seed, epochs=epochs or KDConfig.epochs).to_dict(), "student": "auto",
                      "data": "the real training split"}}
    if not teachers:
        def run(x):
            with torch.no_grad():
                return student(torch.from_numpy(x)).numpy()
        row["probes"] = prior_probes(meta, run, teacher, teacher.domain, seed)
    return row


def load_results(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _ms(vals: list[float]) -> str:
    vals = [v for v in vals if v is not None]
    if not vals:
        return "-"
    if len(vals) == 1:
        return f"{100 * vals[0]:.1f}"
    return f"{100 * statistics.mean(vals):.1f} ± {100 * statistics.stdev(vals):.1f}"


def _where(row: dict) -> str:
    """" (bf16, GPU)" where the run trained on a GPU (its precision), else ""."""
    c = row.get("compute") or {}
    gpu = str(c.get("device", "")).startswith("cuda") and not str(c.get("applies_to", "")).startswith("nothing")
    return f" ({c.get('precision')}, GPU)" if gpu else ""


OLD_SAMPLES = 2048  # the transfer-set size of every run that did not record one (sessions 1-10)
OLD_KD_EPOCHS = 100  # the distillation epochs of every run that did not record them (sessions 1-11)
BUDGETS = {"samples", "kd_epochs"}


def label(row: dict) -> str:
    """A run's column: its method (a variant of auto's budgets alone is auto), the transfer-set size and
    KD epochs where they are not convert's defaults (and the method does not set them), and the device and
    precision where it trained on a GPU."""
    from dfkd_edge.config import ConvertConfig
    from dfkd_edge.distill import KDConfig

    method, args = row["method"], METHOD_ARGS.get(row["method"], {})
    samples = row.get("samples", args.get("samples", OLD_SAMPLES))
    epochs = row.get("kd_epochs", args.get("kd_epochs", OLD_KD_EPOCHS))
    if method.startswith("auto") and set(args) <= BUDGETS:
        method, args = "auto", {}  # a budget variant: auto, labelled by its budget where it is not the default
    sized = method == "real-kd" or "samples" in args or samples == ConvertConfig.samples
    trained = "kd_epochs" in args or epochs == KDConfig.epochs
    return (method + ("" if sized else f" ({samples:,} samples)") + ("" if trained else f" ({epochs} KD epochs)")
            + _where(row))


def _real_kd(column: str) -> bool:
    """A real-data KD column at the default KD epochs, on the CPU or a GPU."""
    return column.startswith("real-kd") and "KD epochs" not in column


def print_tables(rows: list[dict], verdict_runs: list[str] | None = None) -> None:
    rows = [{**r, "method": label(r)} for r in rows if r["teacher"] not in zoo.MULTI]  # print_multi's
    teachers = list(dict.fromkeys(r["teacher"] for r in rows))
    methods = [m for m in METHOD_ARGS if any(r["method"] == m for r in rows)]
    methods += sorted(m for m in {r["method"] for r in rows} - set(methods) if not m.startswith("real-kd"))
    print("Student test accuracy, % (fp32 / int8), mean ± std over seeds; real-KD: the same student on the real "
          "training split; verdict counts in brackets")
    print("| teacher | teacher acc. | real-data KD | " + " | ".join(methods) + " |")
    print("|---|---|---|" + "---|" * len(methods))
    for t in teachers:
        mine = [r for r in rows if r["teacher"] == t]
        tacc = next((r["teacher_acc"] for r in mine if r.get("teacher_acc") is not None), None)
        cells = []
        for m in methods:
            rs = [r for r in mine if r["method"] == m]
            if not rs:
                cells.append("")
                continue
            cells.append(f"{_ms([r['fp32'] for r in rs])} / {_ms([r['int8'] for r in rs])} [{_verdict_counts(rs)}] "
                         f"({statistics.mean(r['seconds'] for r in rs):.0f} s)")
        real = [r["fp32"] for r in mine if _real_kd(r["method"])]
        print(f"| {t} | {_ms([tacc]) if tacc is not None else '-'} | {_ms(real)} | " + " | ".join(cells) + " |")
    verdict_table(rows, verdict_runs)


def print_multi(rows: list[dict]) -> None:
    """The multi-teacher sets: each member's test accuracy, their ensemble's, real-data KD from the
    ensemble, the best member's single-teacher default (its mean over seeds) and each method's student."""
    rows = [{**r, "method": label(r)} for r in rows]
    multi = [r for r in rows if r["teacher"] in zoo.MULTI]
    if not multi:
        return
    methods = list(dict.fromkeys(r["method"] for r in multi if r["method"] != "real-kd"))
    print("\nSeveral teachers into one student, test accuracy %, mean ± std over seeds (int8 [verdicts])")
    print("| set | teachers | ensemble | real-data KD from the ensemble | best single-teacher default | "
          + " | ".join(methods) + " |")
    print("|---|---|---|---|---|" + "---|" * len(methods))
    for name, members in zoo.MULTI.items():
        mine = [r for r in multi if r["teacher"] == name]
        if not mine:
            continue
        m = next((r["multi"] for r in mine if r.get("multi")), {})
        accs = ", ".join(_ms([t.get("accuracy")]) for t in m.get("teachers", []))
        ens = (m.get("ensemble") or {}).get("accuracy")
        real = [r["fp32"] for r in mine if r["method"] == "real-kd"]
        singles = {t: [r["int8"] for r in rows if r["teacher"] == t and r["method"] == "auto"] for t in members}
        best = max((t for t in singles if singles[t]), key=lambda t: statistics.mean(singles[t]), default=None)
        cells = []
        for meth in methods:
            rs = [r for r in mine if r["method"] == meth]
            cells.append(f"{_ms([r['int8'] for r in rs])} [{_verdict_counts(rs)}] "
                         f"({statistics.mean(r['seconds'] for r in rs):.0f} s)"
                         if rs else "")
        print(f"| {name} | {accs} | {_ms([ens])} | {_ms(real)} | "
              f"{_ms(singles[best]) + ' (' + best + ')' if best else '-'} | " + " | ".join(cells) + " |")


def colour_table(rows: list[dict]) -> None:
    """Runs that recorded the colour of their transfer set (images of several channels): each channel's
    spread and the channels' correlation, synthesized against real, and the first BatchNorm's mismatch the
    input domain left (``fit_mismatch``; for runs before it was recorded, the last figure of the domain's
    detail)."""
    from domain_fit import colour_gap

    runs = [r for r in rows if (r.get("channels") or {}).get("synthetic")]
    if not runs:
        return
    print("\nThe transfer set's colour against the real inputs' (per seed: largest error of a channel's spread, "
          "relative; largest error of a channel correlation; the domain fit's mismatch)")
    print("| teacher | run | seed | spread, synthetic / real | correlation, synthetic / real | spread error | "
          "correlation error | domain fit |")
    print("|---|---|---|---|---|---|---|---|")
    for r in sorted(runs, key=lambda r: (r["teacher"], r["method"], r["seed"])):
        c = r["channels"]
        rel, corr = colour_gap(c["synthetic"], c["real"])
        fit = (r.get("domain") or {}).get("fit_mismatch")
        print(f"| {r['teacher']} | {r['method']} | {r['seed']} | "
              f"{'/'.join(f'{v:.3g}' for v in c['synthetic']['std'])} / {'/'.join(f'{v:.3g}' for v in c['real']['std'])} | "
              f"{'/'.join(f'{v:.2f}' for v in c['synthetic']['corr'])} / {'/'.join(f'{v:.2f}' for v in c['real']['corr'])} | "
              f"{100 * rel:.1f}% | {corr:.3f} | {fit} |")


def _verdict_counts(rows: list[dict]) -> str:
    """The runs' verdicts counted, e.g. ``d1,o2``."""
    verdicts = [_verdict(r) for r in rows]
    return ",".join(f"{v[0]}{verdicts.count(v)}" for v in sorted(set(verdicts)))


def _verdict(row: dict) -> str:
    """The verdict of a run's stored signals under the current bounds (dfkd_edge.quality.BOUNDS)."""
    from dfkd_edge.quality import verdict

    q = row.get("quality")
    return verdict(signals(row))[0] if q else "?"


def signals(row: dict) -> dict:
    """A run's stored verdict signals; ``domain_fit`` for runs from before it was recorded: the last
    mismatch figure of the domain's detail (the read that was kept), None without one."""
    import re

    s = dict(row["quality"]["signals"])
    if "domain_fit" not in s:
        found = re.findall(r"mismatch ([0-9.e-]+)|; ([0-9.e-]+) with", (row.get("domain") or {}).get("detail", ""))
        s["domain_fit"] = float(found[-1][0] or found[-1][1]) if found else None
    return s


def verdict_table(rows: list[dict], labels: list[str] | None = None) -> None:
    """The verdict against the int8 student's gap to real-data KD, and rank correlations; ``labels``: only
    the runs of those columns. Runs more than 5 points under that the verdict calls ok, and runs within 1
    point it does not, are listed."""
    real = {}
    for r in rows:
        if _real_kd(r["method"]):
            real.setdefault(r["teacher"], []).append(r["fp32"])
    runs = [r for r in rows if r.get("quality") and r["teacher"] in real and r.get("int8") is not None
            and (labels is None or r["method"] in labels)]
    if not runs:
        return
    print(f"\nVerdict vs. real accuracy (int8 student vs. the mean real-data KD of its teacher), {len(runs)} runs"
          + (f" of {'; '.join(labels)}" if labels else ""))
    print("| verdict | within 1 pt | 1-2 pts below | 2-5 pts below | more than 5 pts below |")
    print("|---|---|---|---|---|")
    for v in ("ok", "doubtful", "unreliable"):
        gaps = [statistics.mean(real[r["teacher"]]) - r["int8"] for r in runs if _verdict(r) == v]
        cells = [sum(g <= 0.01 for g in gaps), sum(0.01 < g <= 0.02 for g in gaps), sum(0.02 < g <= 0.05 for g in gaps),
                 sum(g > 0.05 for g in gaps)]
        print(f"| {v} | " + " | ".join(map(str, cells)) + " |")
    from dfkd_edge.quality import verdict

    for r in runs:
        gap, v = statistics.mean(real[r["teacher"]]) - r["int8"], _verdict(r)
        if (gap > 0.05 and v == "ok") or (gap <= 0.01 and v != "ok"):
            print(f"- {r['teacher']} {r['method']} seed {r['seed']}: {100 * gap:.1f} points under, {v}: "
                  + "; ".join(verdict(signals(r))[1]))
    sigs = sorted({k for r in runs for k, v in signals(r).items()
                   if isinstance(v, (int, float)) and k != "classes"})
    print("\nSpearman rank correlation of each signal with the int8 gap to real-data KD (negative: a higher "
          "signal, a smaller gap)")
    print("| signal | runs | rho |")
    print("|---|---|---|")
    for s in sigs:
        pairs = [(signals(r)[s], statistics.mean(real[r["teacher"]]) - r["int8"]) for r in runs
                 if isinstance(signals(r).get(s), (int, float))]
        if len(pairs) >= 4:
            print(f"| {s} | {len(pairs)} | {_spearman(*zip(*pairs)):+.2f} |")


def _spearman(a, b) -> float:
    def ranks(v):
        order = np.argsort(np.argsort(v, kind="stable"), kind="stable").astype(float)
        return order
    ra, rb = ranks(np.array(a)), ranks(np.array(b))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Methods x zoo teachers (see the module docstring).")
    ap.add_argument("--teachers", nargs="*", default=[e.name for e in zoo.ENTRIES + zoo.PHOTOS])
    ap.add_argument("--methods", nargs="*", default=["auto"], choices=list(METHOD_ARGS) + ["real-kd"],
                    help="convert methods; real-kd: only the real-data KD baseline (with --no-baselines)")
    ap.add_argument("--seeds", nargs="*", type=int, default=[0])
    ap.add_argument("--multi", action="store_true",
                    help="run the multi-teacher sets instead (methods auto, cdfkd-mfs; baseline: real-data KD)")
    ap.add_argument("--sets", nargs="*", default=list(zoo.MULTI), help="with --multi: which sets")
    ap.add_argument("--no-baselines", action="store_true", help="skip real-data KD and noise KD")
    ap.add_argument("--table", action="store_true", help="only print the tables of --results")
    ap.add_argument("--verdict-runs", default=None,
                    help="with --table: the verdict table over these columns only, separated by ';' "
                         "(e.g. 'auto;auto (bf16, GPU)')")
    ap.add_argument("--results", default=str(DEFAULT_RESULTS))
    ap.add_argument("--cache", default=str(zoo.DEFAULT_CACHE))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--kd-epochs", type=int, default=None,
                    help="real-data KD's epochs (default: KD's default; the table compares runs of the same)")
    ap.add_argument("--device", default="auto", help="convert's --device (auto: CUDA where PyTorch sees a GPU)")
    ap.add_argument("--precision", default="auto", help="convert's --precision")
    ap.add_argument("--compile", default="auto", help="convert's --compile (auto: on a GPU)")
    a = ap.parse_args(argv)
    results = Path(a.results)
    if a.table:  # every results*.jsonl beside --results (runs split over processes write one each), or the
        # files --results names with a wildcard ('benchmarks/results/results-session9*.jsonl': one session's)
        rows = {}  # a run repeated later replaces the earlier one (the newer code's); "when" orders them
        pattern = results.name if any(c in results.name for c in "*?[") else "results*.jsonl"
        found = [r for f in sorted(results.parent.glob(pattern)) for r in load_results(f)]
        for r in sorted(found, key=lambda r: r.get("when", "")):
            rows[(r["teacher"], label(r), r["seed"])] = r
        print_tables(list(rows.values()), a.verdict_runs.split(";") if a.verdict_runs else None)
        print_multi(list(rows.values()))
        colour_table([{**r, "method": label(r)} for r in rows.values()])
        return
    torch.set_num_threads(a.threads)
    results.parent.mkdir(parents=True, exist_ok=True)
    work = Path(a.cache) / "runs"
    compute = {"device": a.device, "precision": a.precision, "threads": a.threads, "compile": a.compile}
    from dfkd_edge.compute import resolve as resolve_compute

    real_compute = resolve_compute(a.device, a.precision, "auto", a.compile)
    done = {(r["teacher"], label(r), r["seed"]) for r in load_results(results)}
    from dfkd_edge.config import ConvertConfig
    from dfkd_edge.distill import KDConfig

    real_epochs = a.kd_epochs or KDConfig.epochs

    def planned(m: str) -> str:  # the column a run of ``m`` will land in
        args = METHOD_ARGS.get(m, {})
        epochs = real_epochs if m == "real-kd" else args.get("kd_epochs", KDConfig.epochs)
        return label({"method": m, "samples": args.get("samples", ConvertConfig.samples), "kd_epochs": epochs})

    def record(row):
        row = {**row, "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "commit": zoo.code_commit()}
        with results.open("a") as f:
            f.write(json.dumps(row) + "\n")
        done.add((row["teacher"], label(row), row["seed"]))
        q = (row.get("quality") or {}).get("verdict", "")
        print(f"{row['teacher']:16s} {row['method']:17s} seed {row['seed']}: fp32 {row['fp32']}, int8 {row['int8']} "
              f"{q} ({row['seconds']} s)", flush=True)

    if a.multi:
        for name in a.sets:
            members = zoo.MULTI[name]
            metas = [zoo.build(zoo.BY_NAME[m], Path(a.cache)) for m in members]
            meta = {**metas[0], "name": name}
            for seed in a.seeds:
                for m in ([] if a.no_baselines else ["real-kd"]) + a.methods:
                    if (name, planned(m), seed) not in done:
                        record(run_real_kd(meta, seed, metas, real_epochs, real_compute) if m == "real-kd"
                               else run_convert(meta, m, seed, work, teachers=metas, **compute))
        return
    plan = [(t, m, s) for t in a.teachers for s in a.seeds
            for m in ([] if a.no_baselines else ["real-kd", "gaussian"]) + a.methods]
    for t, m, s in plan:
        if (t, planned(m), s) in done:
            continue
        meta = zoo.build(zoo.BY_NAME[t], Path(a.cache))
        record(run_real_kd(meta, s, None, real_epochs, real_compute) if m == "real-kd"
               else run_convert(meta, m, s, work, **compute))


if __name__ == "__main__":
    main()
