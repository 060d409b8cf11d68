"""Transfer-set methods side by side: student accuracy on real test data, fp32 and int8.

Teachers: the built-in digits CNN (1x8x8) and a 1-D-signal CNN (1x40) trained here
(dfkd_edge.data.toy, seed 0). Rows:

* real CE        -- the student trained with cross-entropy on the teacher's real training data
* real KD        -- KD from the teacher on its real training data (the upper bound)
* noise KD       -- KD on Gaussian noise (the lower bound)
* bn-inversion   -- DeepInversion (BN statistics + CE to sampled labels)
* soft-target    -- Wang 2021 (multivariate normal over the classifier's input features)
* soft-target+BN -- the same with DeepInversion's BN prior added (bn_weight 1.0)
* adversarial    -- DFAD-style generator against the student, BN prior 0.1 (300 generator steps)
* default        -- what ``--method auto`` resolves to (same runs as that row, not re-run)

Every KD row uses the pipeline's defaults (2,048 + 256 held-out samples, 200 steps a batch,
T=4, 100 epochs, online mixup) and the auto-chosen student. int8: the student's ONNX quantized
with ONNX Runtime (Q/DQ U8S8, per-channel, MinMax) on 256 samples of the row's own training
inputs (synthetic for data-free rows). Mean ± std over seeds; seconds are per run.

    python benchmarks/dfkd_methods.py --seeds 0 1 2 --threads 1 [--teachers digits signal]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dfkd_edge.backends import predict
from dfkd_edge.backends.onnxruntime import OrtRunner
from dfkd_edge.data import toy
from dfkd_edge.data.digits import builtin_teacher_path, load_split
from dfkd_edge.distill import KDConfig, distill
from dfkd_edge.export.onnx_export import export_onnx
from dfkd_edge.export.quantize import CalibConfig, calibration_subset, quantize_one
from dfkd_edge.models import create_student
from dfkd_edge.synthesis import AUTO_METHOD, create_synthesizer
from dfkd_edge.teacher import load_teacher

#: label -> (kind, synthesis method or None, synthesizer kwargs)
ROWS = {
    "real CE": ("real-ce", None, {}),
    "real KD (upper bound)": ("real-kd", None, {}),
    "noise KD (lower bound)": ("synth", "gaussian", {}),
    "bn-inversion": ("synth", "deepinversion", {}),
    "soft-target": ("synth", "soft-target", {}),
    "soft-target + BN prior": ("synth", "soft-target", {"bn_weight": 1.0}),
    "adversarial": ("synth", "adversarial", {"iterations": 300}),
}
DEFAULT_ROW = {"deepinversion": "bn-inversion"}[AUTO_METHOD]


def load_teachers(names, workdir: Path):
    out = {}
    if "digits" in names:
        x_tr, y_tr, x_te, y_te = load_split()
        out["digits (1x8x8)"] = (load_teacher(builtin_teacher_path()), x_tr, y_tr, x_te, y_te)
    if "signal" in names:
        m, (x_te, y_te), _ = toy.train_signal_teacher(seed=0)
        x_tr, y_tr = toy.signal_dataset(2000, seed=0)  # the teacher's own training data
        torch.jit.save(torch.jit.script(m), str(workdir / "signal.pt"))
        out["signal (1x40)"] = (load_teacher(workdir / "signal.pt", (1, 40)), x_tr, y_tr, x_te, y_te)
    return out


def train_ce(student, x, y, cfg: KDConfig) -> None:
    """Cross-entropy on real labels, with the KD trainer's optimiser and schedule."""
    torch.manual_seed(cfg.seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    steps = cfg.epochs * ((len(xt) + cfg.batch_size - 1) // cfg.batch_size)
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.15)
    for _ in range(cfg.epochs):
        student.train()
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            loss = F.cross_entropy(student(xt[idx]), yt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    student.eval()


def int8_accuracy(student, shape, calib_x, x_te, y_te, workdir: Path, seed: int) -> float:
    fp32 = export_onnx(student, shape, workdir / "s.onnx")
    quantize_one(fp32, workdir / "s8.onnx", calibration_subset(calib_x, 256, seed), "qdq-u8s8", CalibConfig())
    with OrtRunner(workdir / "s8.onnx", threads=1) as r:
        return float((predict(r, x_te).argmax(1) == y_te).mean())


def run_row(kind, method, kw, teacher, x_tr, y_tr, x_te, y_te, seed, workdir):
    shape, spec = teacher.spec.input_shape, teacher.spec
    torch.manual_seed(seed)
    student, _ = create_student("auto", shape, spec.num_classes, spec.num_params)
    cfg = KDConfig(seed=seed)
    t0 = time.perf_counter()
    if kind == "real-ce":
        train_ce(student, x_tr, y_tr, cfg)
        t1 = t0
        calib = x_tr
    elif kind == "real-kd":
        t1 = t0
        distill(student, x_tr, teacher.logits(torch.from_numpy(x_tr)).numpy(), cfg, teacher=teacher)
        calib = x_tr
    else:
        synth = create_synthesizer(method, teacher, seed=seed, **kw)
        if synth.needs_student:
            ts = synth.train_student(student, 2048, holdout=256)
            t1 = time.perf_counter()
        else:
            ts = synth.synthesize(2048, holdout=256)
            t1 = time.perf_counter()
            x, lg = ts.train
            distill(student, x, lg, cfg, teacher=teacher)
        calib = ts.train[0]
    t2 = time.perf_counter()
    with torch.no_grad():
        acc = float((student(torch.from_numpy(x_te)).argmax(1).numpy() == y_te).mean())
    acc8 = int8_accuracy(student, shape, calib, x_te, y_te, workdir, seed)
    return acc, acc8, t1 - t0, t2 - t1


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--teachers", nargs="+", default=["digits", "signal"], choices=["digits", "signal"])
    ap.add_argument("--rows", nargs="+", default=list(ROWS), help="row labels to run")
    a = ap.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as d:
        workdir = Path(d)
        for name, (teacher, x_tr, y_tr, x_te, y_te) in load_teachers(a.teachers, workdir).items():
            t_acc = float((teacher.logits(torch.from_numpy(x_te)).argmax(1).numpy() == y_te).mean())
            print(f"\n### {name}: teacher accuracy {t_acc:.4f} ({spec_line(teacher)}); seeds {a.seeds}; "
                  f"threads {a.threads}\n")
            print("| row | student fp32 acc | student int8 acc | synthesis s | distillation s | total s |")
            print("|---|---|---|---|---|---|")
            results = {}
            for label in a.rows:
                kind, method, kw = ROWS[label]
                runs = [run_row(kind, method, kw, teacher, x_tr, y_tr, x_te, y_te, s, workdir) for s in a.seeds]
                results[label] = r = np.array(runs)
                print(row_line(label, r), flush=True)
            if DEFAULT_ROW in results:
                print(row_line(f"default (auto = {AUTO_METHOD}, same runs)", results[DEFAULT_ROW]), flush=True)


def spec_line(teacher) -> str:
    s = teacher.spec
    return f"{s.num_params:,} parameters, {s.num_classes} classes"


def row_line(label: str, r: np.ndarray) -> str:
    return (f"| {label} | {r[:, 0].mean():.4f} ± {r[:, 0].std():.4f} | {r[:, 1].mean():.4f} ± {r[:, 1].std():.4f} | "
            f"{r[:, 2].mean():.1f} | {r[:, 3].mean():.1f} | {(r[:, 2] + r[:, 3]).mean():.1f} |")


if __name__ == "__main__":
    main()
