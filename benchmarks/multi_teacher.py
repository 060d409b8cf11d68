"""Several teachers into one student (CDFKD-MFS) on digits, next to one student per teacher.

Three digits teachers of different widths and depths are trained here (seed 0, the demo teacher's
recipe): A = DigitsCNN width 16 / hidden 64 (3 convs + FC), B = DigitsCNN width 32 / hidden 128,
C = the zoo's conv2d at width 32 (4 convs, global pooling). Rows, per seed:

* each teacher and the teachers' ensemble (mean logits) on the real test split;
* one student distilled from each single teacher with the default method (``--method auto`` =
  DeepInversion, 2,048 + 256 samples, 200 steps a batch, KD T=4 100 epochs, the auto student);
* the multi-header student, data-free (dfkd_edge.distill.multi defaults, 200 generator steps as
  ``--iterations`` gives, batch 256), its headers averaged;
* the same student with attention aggregation trained on 10 labelled training samples per class
  (``train_attention``: kept only when it beats the mean on held-out halves of those samples).

int8: each student's ONNX quantized with ONNX Runtime (Q/DQ U8S8, per-channel, MinMax) on 256 of
its own synthetic samples, as benchmarks/dfkd_methods.py does (no guardrail).

    python benchmarks/multi_teacher.py --seeds 0 --threads 1 --json s0.json   # one process per seed
    python benchmarks/multi_teacher.py --combine s0.json s1.json s2.json     # the table
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dfkd_methods import int8_accuracy  # benchmarks/ sibling

from dfkd_edge.data.digits import load_split, train_teacher
from dfkd_edge.distill import KDConfig, distill
from dfkd_edge.distill.multi import multi_student_width, train_attention
from dfkd_edge.ensemble import Ensemble
from dfkd_edge.models import create_model, create_student
from dfkd_edge.models.teachers import DigitsCNN
from dfkd_edge.synthesis import AUTO_METHOD, create_synthesizer
from dfkd_edge.synthesis.cdfkd_mfs import MultiTeacherConfig, MultiTeacherSynthesizer
from dfkd_edge.teacher import load_teacher, save_torchscript

TEACHERS = {
    "A: DigitsCNN w16/h64": lambda: DigitsCNN(width=16, hidden=64),
    "B: DigitsCNN w32/h128": lambda: DigitsCNN(width=32, hidden=128),
    "C: conv2d w32": lambda: create_model("conv2d", input_shape=(1, 8, 8), num_classes=10, width=32),
}


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def few_shot(x, y, per_class: int, seed: int):
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.choice(np.where(y == k)[0], per_class, replace=False) for k in np.unique(y)])
    return x[idx], y[idx]


def run_seed(seed: int, workdir: Path) -> dict:
    x_tr, y_tr, x_te, y_te = load_split()
    teachers = []
    res = {"seed": seed, "rows": {}}
    for i, (name, make) in enumerate(TEACHERS.items()):
        torch.manual_seed(i)
        m, acc = train_teacher(seed=i, model=make())
        save_torchscript(m, workdir / f"t{i}.pt", (1, 8, 8))
        teachers.append(load_teacher(workdir / f"t{i}.pt"))
        res["rows"][f"teacher {name} ({teachers[-1].spec.num_params:,} params)"] = [acc, None, 0.0]
    ens = Ensemble(teachers)
    res["rows"]["teachers' ensemble (mean logits)"] = [accuracy(ens, x_te, y_te), None, 0.0]
    for name, t in zip(TEACHERS, teachers):
        t0 = time.perf_counter()
        torch.manual_seed(seed)
        student, recipe = create_student("auto", (1, 8, 8), 10, t.spec.num_params)
        ts = create_synthesizer(AUTO_METHOD, t, seed=seed).synthesize(2048, holdout=256)
        distill(student, ts.train[0], ts.train[1], KDConfig(seed=seed), teacher=t)
        res["rows"][f"student from teacher {name[0]} alone ({AUTO_METHOD} + KD, width {recipe['width']})"] = [
            accuracy(student, x_te, y_te), int8_accuracy(student, (1, 8, 8), ts.train[0], x_te, y_te, workdir, seed),
            time.perf_counter() - t0]
    t0 = time.perf_counter()
    width = multi_student_width((1, 8, 8), 10, [t.spec.num_params for t in teachers], len(teachers))
    torch.manual_seed(seed)
    student = create_model("multihead", input_shape=(1, 8, 8), num_classes=10, width=width, headers=3)
    synth = MultiTeacherSynthesizer(ens, MultiTeacherConfig(iterations=200, seed=seed))
    ts = synth.train_student(student, 2048, holdout=256)
    secs = time.perf_counter() - t0
    params = sum(p.numel() for p in student.parameters())
    res["rows"][f"multi-teacher student, data-free, mean of 3 headers (width {width}, {params:,} params)"] = [
        accuracy(student, x_te, y_te), int8_accuracy(student, (1, 8, 8), ts.train[0], x_te, y_te, workdir, seed), secs]
    with torch.no_grad():
        heads = student.header_outputs(torch.from_numpy(x_te))[0]
    res["headers"] = [float((h.argmax(1).numpy() == y_te).mean()) for h in heads]
    att = create_model("multihead", input_shape=(1, 8, 8), num_classes=10, width=width, headers=3,
                       aggregation="attention")
    att.load_state_dict(student.state_dict(), strict=False)
    fx, fy = few_shot(x_tr, y_tr, 10, seed)
    t0 = time.perf_counter()
    res["attention"] = {k: v for k, v in train_attention(att, fx, fy, seed=seed).items() if k != "loss"}
    res["rows"]["multi-teacher student + attention on 10 labelled samples per class"] = [
        accuracy(att, x_te, y_te), int8_accuracy(att, (1, 8, 8), ts.train[0], x_te, y_te, workdir, seed),
        time.perf_counter() - t0]
    return res


def table(results: list[dict]) -> None:
    seeds = [r["seed"] for r in results]
    print(f"\n### digits, three teachers; seeds {seeds}\n")
    print("| row | fp32 acc | int8 acc | seconds |")
    print("|---|---|---|---|")
    for label in results[0]["rows"]:
        v = np.array([r["rows"][label] for r in results], dtype=object)
        fp = np.array(v[:, 0], float)
        i8 = "-" if v[0, 1] is None else f"{np.mean(np.array(v[:, 1], float)):.4f} ± {np.std(np.array(v[:, 1], float)):.4f}"
        print(f"| {label} | {fp.mean():.4f} ± {fp.std():.4f} | {i8} | {np.mean(np.array(v[:, 2], float)):.1f} |")
    h = np.array([r["headers"] for r in results])
    print("\nHeaders of the data-free student (fp32, learning teacher A, B, C): "
          + ", ".join(f"{m:.4f} ± {s:.4f}" for m, s in zip(h.mean(0), h.std(0))))
    print("Attention kept after its held-out check on the few-shot samples (else uniform = the mean): "
          + ", ".join(f"seed {r['seed']}: {r['attention']['kept']} (held-out NLL attention "
                      f"{r['attention'].get('held_out_nll_attention', float('nan')):.4f} vs mean "
                      f"{r['attention'].get('held_out_nll_mean', float('nan')):.4f})" for r in results))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="write the per-seed results here")
    ap.add_argument("--combine", nargs="+", help="print the table of earlier --json files")
    a = ap.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    if a.combine:
        table([r for f in a.combine for r in json.loads(Path(f).read_text())])
        return
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as d:
        results = [run_seed(s, Path(d)) for s in a.seeds]
    if a.json:
        Path(a.json).write_text(json.dumps(results))
    table(results)


if __name__ == "__main__":
    main()
