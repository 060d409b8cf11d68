"""Student accuracy on the real digits test split by transfer-set recipe (no real data in training).

Rows (``--rows`` picks by index): 0 Gaussian noise (baseline), 1 DeepInversion without mixup,
2 DeepInversion with online mixup (the default), 3 a cheaper DeepInversion (fewer steps, more
samples), 4-6 soft-target variants (mu, BN prior), 7 adversarial (student trained inside
synthesis), 8-10 soft-target sigma 0.5 / 3.0 and without the activation term. Each row: mean and std
over seeds of the student's fp32 accuracy, its fidelity on held-out synthetic samples, and the
seconds spent in synthesis and distillation. The teacher is the built-in digits teacher.

    python benchmarks/transfer_set.py [--seeds 0 1 2] [--threads 2] [--rows 0 1 2 3]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from dfkd_edge.data.digits import builtin_teacher_path, load_split
from dfkd_edge.distill import KDConfig, distill
from dfkd_edge.models import create_student
from dfkd_edge.synthesis import create_synthesizer
from dfkd_edge.teacher import load_teacher

ROWS = [
    ("gaussian noise", "gaussian", dict(samples=2048), dict(mixup=1.0)),
    ("deepinversion, no mixup", "deepinversion", dict(samples=2048, iterations=200), dict(mixup=0.0)),
    ("deepinversion + mixup (default)", "deepinversion", dict(samples=2048, iterations=200), dict(mixup=1.0)),
    ("deepinversion 80 steps, 4096 samples", "deepinversion", dict(samples=4096, iterations=80), dict(mixup=1.0)),
    ("soft-target (sigma 1.5, mu noise, act 0.05)", "soft-target", dict(samples=2048, iterations=200), dict(mixup=1.0)),
    ("soft-target, mu = 0", "soft-target", dict(samples=2048, iterations=200, mu="zero"), dict(mixup=1.0)),
    ("soft-target + BN prior (bn 1.0)", "soft-target", dict(samples=2048, iterations=200, bn_weight=1.0), dict(mixup=1.0)),
    ("adversarial, 300 generator steps", "adversarial", dict(samples=2048, iterations=300), dict()),
    ("soft-target, sigma 0.5", "soft-target", dict(samples=2048, iterations=200, sigma=0.5), dict(mixup=1.0)),
    ("soft-target, sigma 3.0", "soft-target", dict(samples=2048, iterations=200, sigma=3.0), dict(mixup=1.0)),
    ("soft-target, no activation term", "soft-target", dict(samples=2048, iterations=200, act_weight=0.0), dict(mixup=1.0)),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rows", type=int, nargs="+", default=[0, 1, 2, 3])
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    teacher = load_teacher(builtin_teacher_path())
    _, _, x_te, y_te = load_split()
    xt = torch.from_numpy(x_te)
    print(f"teacher accuracy {float((teacher.logits(xt).argmax(1).numpy() == y_te).mean()):.4f}; "
          f"seeds {a.seeds}; threads {a.threads}")
    print("| transfer set | student acc (mean ± std) | fidelity held-out | synth s | distill s |")
    print("|---|---|---|---|---|")
    for i in a.rows:
        label, method, sk, kk = ROWS[i]
        accs, fids, ts_s, kd_s = [], [], [], []
        for seed in a.seeds:
            t0 = time.perf_counter()
            extra = {k: v for k, v in sk.items() if k != "samples"}
            synth = create_synthesizer(method, teacher, seed=seed, **extra)
            torch.manual_seed(seed)
            student, _ = create_student("auto", (1, 8, 8), 10, teacher.spec.num_params)
            if synth.needs_student:  # synthesis and distillation interleave: all counted as synthesis
                ts = synth.train_student(student, sk["samples"], holdout=256)
                t1 = time.perf_counter()
            else:
                ts = synth.synthesize(sk["samples"], holdout=256)
                t1 = time.perf_counter()
                x, lg = ts.train
                distill(student, x, lg, KDConfig(seed=seed, **kk), teacher=teacher)
            t2 = time.perf_counter()
            with torch.no_grad():
                accs.append(float((student(xt).argmax(1).numpy() == y_te).mean()))
                hx, hl = ts.held_out
                fids.append(float((student(torch.from_numpy(hx)).argmax(1).numpy() == hl.argmax(1)).mean()))
            ts_s.append(t1 - t0)
            kd_s.append(t2 - t1)
        print(f"| {label} | {np.mean(accs):.4f} ± {np.std(accs):.4f} | {np.mean(fids):.4f} | "
              f"{np.mean(ts_s):.1f} | {np.mean(kd_s):.1f} |", flush=True)


if __name__ == "__main__":
    main()
