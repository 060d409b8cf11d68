"""Synthesis throughput: samples per second, 1 vs 2 processes (torchrun, gloo) and on a GPU when
there is one; and seconds to a target fidelity on the digits teacher.

    python benchmarks/synthesis_throughput.py --part throughput
    python benchmarks/synthesis_throughput.py --part fidelity [--target 0.95]
    python benchmarks/synthesis_throughput.py --part cpu-options

Throughput: each row is a fresh process group (``torchrun --standalone``, or one plain process)
timing ``Synthesizer.synthesize`` alone (the teacher is loaded before the clock starts; the gather
to rank 0 and the teacher's labelling are inside it). Teachers: the built-in digits CNN (1x8x8) and a
CIFAR-sized ResNet-34 (3x32x32, 21.3M parameters, random weights: throughput does not depend on
what the weights learned). The ResNet rows use few iterations per batch (``--resnet-iterations``)
so that a 2-core CPU finishes in minutes; samples/s scale with 1/iterations for DeepInversion.

Fidelity: the whole ``dfkd-edge convert`` (default recipe: 2048 + 256 samples, 200 iterations,
100 epochs of KD) per row; seconds are the synthesize stage's; fidelity is the student's top-1
agreement with the teacher on the real digits test split (accuracy beside it). A row reaches the
target when its fidelity is at least ``--target``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()


def worker(a) -> None:
    """One rank of a throughput row (run by torchrun, or alone)."""
    import torch

    from dfkd_edge import distributed
    from dfkd_edge.compute import Compute, resolve
    from dfkd_edge.synthesis import create_synthesizer
    from dfkd_edge.teacher import load_teacher

    dist = distributed.from_env()
    comp = resolve(device=a.device, precision=a.precision, local_rank=dist.local_rank) if a.device != "cpu" \
        else Compute()
    distributed.init(dist, cuda=comp.is_cuda)
    torch.set_num_threads(a.threads)
    teacher = load_teacher(a.teacher).to(comp)
    synth = create_synthesizer(a.method, teacher, batch_size=a.batch, iterations=a.iterations, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        if dist.enabled:
            torch.distributed.barrier()
        if comp.is_cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        ts = synth.synthesize(a.samples, checkpoint_dir=Path(tmp) / "ckpt" if dist.enabled else None, dist=dist,
                              compute=comp)
        if comp.is_cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
    if dist.is_leader:
        print(json.dumps({"samples": int(len(ts.x)), "seconds": seconds}))
    distributed.shutdown(dist)


def run_row(teacher: str, method: str, procs: int, threads: int, samples: int, batch: int, iterations: int,
            device: str = "cpu", precision: str = "fp32") -> dict:
    args = ["--worker", "--teacher", teacher, "--method", method, "--threads", str(threads), "--samples",
            str(samples), "--batch", str(batch), "--iterations", str(iterations), "--device", device,
            "--precision", precision]
    cmd = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs),
            str(HERE)] if procs > 1 else [sys.executable, str(HERE)]) + args
    r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if r.returncode:
        raise SystemExit(f"row failed: {' '.join(cmd)}\n{r.stderr[-3000:]}")
    doc = json.loads([ln for ln in r.stdout.splitlines() if ln.startswith("{")][-1])
    return {**doc, "samples_per_s": doc["samples"] / doc["seconds"]}


def resnet_teacher(tmp: Path) -> str:
    import torch

    from dfkd_edge.models import create_model
    from dfkd_edge.teacher import save_torchscript

    torch.manual_seed(0)
    m = create_model("resnet34_cifar").eval()
    path = tmp / "resnet34_cifar.pt"
    save_torchscript(m, path, (3, 32, 32))
    return str(path)


def throughput(a) -> None:
    import torch

    from dfkd_edge.data.digits import builtin_teacher_path

    tmp = Path(tempfile.mkdtemp(prefix="dfkd-bench-"))
    teachers = [("digits CNN (1x8x8)", str(builtin_teacher_path()), a.digits_samples, 64, 200),
                ("ResNet-34 (3x32x32)", resnet_teacher(tmp), a.resnet_samples, 16, a.resnet_iterations)]
    rows = []
    for name, path, n, batch, iters in teachers:
        for method in a.methods:
            base = None
            layouts = [(1, 1), (1, 2), (2, 1)]
            for procs, threads in layouts:
                r = run_row(path, method, procs, threads, n, batch, iters)
                base = base or r["samples_per_s"]
                rows.append((name, method, f"CPU, {procs} process{'es' if procs > 1 else ''} x {threads} thread"
                             f"{'s' if threads > 1 else ''}", n, batch, iters, r["seconds"], r["samples_per_s"],
                             r["samples_per_s"] / base))
                print(rows[-1], file=sys.stderr, flush=True)
            if torch.cuda.is_available():
                gpu = torch.cuda.get_device_name(0)
                for prec in ("fp32", "bf16"):
                    r = run_row(path, method, 1, 1, n, batch, iters, device="cuda", precision=prec)
                    rows.append((name, method, f"GPU {gpu}, {prec}", n, batch, iters, r["seconds"],
                                 r["samples_per_s"], r["samples_per_s"] / base))
    print("| teacher | method | where | samples | batch | iterations | seconds | samples/s | vs 1 process x 1 thread |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, method, where, n, batch, iters, sec, sps, ratio in rows:
        print(f"| {name} | {method} | {where} | {n} | {batch} | {iters} | {sec:.1f} | {sps:.2f} | {ratio:.2f}x |")
    if not torch.cuda.is_available():
        print("\nNo GPU here: GPU rows not measured.")


def fidelity(a) -> None:
    import numpy as np
    import torch

    from dfkd_edge.data.digits import builtin_teacher_path, write_test_npz
    from dfkd_edge.stages.common import load_student
    from dfkd_edge.teacher import load_teacher

    tmp = Path(tempfile.mkdtemp(prefix="dfkd-bench-"))
    test = write_test_npz(tmp / "digits_test.npz")
    teacher_path = str(builtin_teacher_path())
    with np.load(test) as z:
        x, y = torch.from_numpy(z["x"]), z["y"]
    t_top1 = load_teacher(teacher_path).logits(x).argmax(1).numpy()
    named = {"di-1": ("deepinversion", 1, []), "di-2": ("deepinversion", 2, []), "rg-1": ("reused-generator", 1, []),
             "rg500-1": ("reused-generator", 1, ["--iterations", "500"])}
    rows = []
    for (method, procs, extra), seed in [(named[r], s) for s in a.seeds for r in a.recipes]:
        extra = [*extra, "--seed", str(seed)]
        out = tmp / f"{method}-{procs}-{len(rows)}"
        args = ["-m", "dfkd_edge", "convert", teacher_path, "--out", str(out), "--method", method,
                "--eval-data", str(test), "--latency-budget", "0.05", *extra]
        cmd = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs)]
               + args[1:] if procs > 1 else [sys.executable, *args, "--threads", "1"])
        r = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        if r.returncode:
            raise SystemExit(f"row failed: {' '.join(cmd)}\n{r.stderr[-3000:]}")
        rep = json.loads((out / "report.json").read_text())
        with torch.no_grad():
            s_top1 = load_student(out)(x).argmax(1).numpy()
        fid, acc = float((s_top1 == t_top1).mean()), float((s_top1 == y).mean())
        iters = extra[1] if extra[0] == "--iterations" else "200"
        label = method + (f" (warm-up {iters}, then {int(iters) // 10} per batch)" if method == "reused-generator"
                          else f" ({iters} per batch)")
        rows.append((label, procs, seed, rep["timings"]["synthesize"], fid, acc, rep["accuracy"]["student_int8"]))
        print(rows[-1], file=sys.stderr, flush=True)
    print(f"| recipe | processes | seed | synthesis s | fidelity (real test) | accuracy fp32 | accuracy int8 | "
          f"reaches {a.target} |")
    print("|---|---|---|---|---|---|---|---|")
    for label, procs, seed, sec, fid, acc, acc8 in rows:
        print(f"| {label} | {procs} | {seed} | {sec:.1f} | {fid:.4f} | {acc:.4f} | {acc8:.4f} | "
              f"{'yes, in ' + format(sec, '.1f') + ' s' if fid >= a.target else 'no'} |")


def cpu_options(a) -> None:
    """Distillation and synthesis on the CPU with each --channels-last / --compile choice: what the
    ``auto`` defaults for the CPU rest on. Same transfer set, seed and recipe per row; 1 thread."""
    import torch

    from dfkd_edge.compute import Compute
    from dfkd_edge.data.digits import builtin_teacher_path
    from dfkd_edge.distill import KDConfig, distill
    from dfkd_edge.models import create_student
    from dfkd_edge.models.students import build_from_recipe
    from dfkd_edge.synthesis import create_synthesizer
    from dfkd_edge.teacher import load_teacher

    os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="inductor-")  # the first compile is cold
    torch.set_num_threads(1)
    teacher = load_teacher(str(builtin_teacher_path()))
    synth = create_synthesizer("deepinversion", teacher, batch_size=256, iterations=50, seed=0)
    ts = synth.synthesize(1024)
    _, recipe = create_student("auto", teacher.spec.input_shape, teacher.spec.num_classes, teacher.spec.num_params)
    rows = []
    for label, comp in (("eager, NCHW", Compute()), ("eager, channels-last", Compute(channels_last=True)),
                        ("torch.compile, NCHW", Compute(compile=True))):
        times = []
        for rep in range(a.repeats):
            torch.manual_seed(0)
            student = build_from_recipe(recipe)
            t0 = time.perf_counter()
            distill(student, ts.x, ts.logits, KDConfig(epochs=a.epochs), teacher=teacher, compute=comp)
            times.append(time.perf_counter() - t0)
        synth_s = None  # compile applies to the student's training forward only
        if not comp.compile:
            s = create_synthesizer("deepinversion", teacher, batch_size=256, iterations=50, seed=0)
            t0 = time.perf_counter()
            s.synthesize(256, compute=comp)
            synth_s = time.perf_counter() - t0
        rows.append((label, times[0], sorted(times)[len(times) // 2], synth_s))
        print(rows[-1], file=sys.stderr, flush=True)
    base_first, base = rows[0][1], rows[0][2]
    print(f"| student training forward | distill {a.epochs} epochs x 8 steps: first run | vs eager | median of "
          f"{a.repeats} runs | vs eager | synthesize 256 samples x 50 iterations |")
    print("|---|---|---|---|---|---|")
    for label, first, med, synth_s in rows:
        print(f"| {label} | {first:.2f} s | {base_first / first:.2f}x | {med:.2f} s | {base / med:.2f}x | "
              f"{'-' if synth_s is None else format(synth_s, '.2f') + ' s'} |")
    print("\nThe first run of the compiled row includes compiling (cold cache); later runs reuse the compiled "
          "kernels.")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--part", choices=["throughput", "fidelity", "cpu-options"], default="throughput")
    p.add_argument("--epochs", type=int, default=20, help="cpu-options: distillation epochs per row")
    p.add_argument("--repeats", type=int, default=3, help="cpu-options: runs per row (the median is shown)")
    p.add_argument("--methods", nargs="+", default=["deepinversion", "reused-generator"])
    p.add_argument("--digits-samples", type=int, default=1024)
    p.add_argument("--resnet-samples", type=int, default=64)
    p.add_argument("--resnet-iterations", type=int, default=20)
    p.add_argument("--target", type=float, default=0.95)
    p.add_argument("--recipes", nargs="+", default=["di-1", "di-2", "rg-1", "rg500-1"],
                   choices=["di-1", "di-2", "rg-1", "rg500-1"],
                   help="fidelity: deepinversion or reused-generator (500: --iterations 500), 1 or 2 processes")
    p.add_argument("--seeds", nargs="+", type=int, default=[0], help="fidelity: --seed of each convert")
    # worker mode (one rank of a throughput row)
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--teacher")
    p.add_argument("--method", default="deepinversion")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--samples", type=int)
    p.add_argument("--batch", type=int)
    p.add_argument("--iterations", type=int)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="fp32")
    a = p.parse_args()
    if a.worker:
        worker(a)
    elif a.part == "throughput":
        throughput(a)
    elif a.part == "cpu-options":
        cpu_options(a)
    else:
        fidelity(a)


if __name__ == "__main__":
    main()
