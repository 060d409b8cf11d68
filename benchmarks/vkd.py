"""Virtual knowledge distillation (VKD) next to KD, on the same transfer set; self-distillation and
collaborative learning on real digits.

Part 1 (data-free), per teacher and seed: one DeepInversion transfer set (the pipeline defaults:
2,048 + 256 held-out samples, 200 steps a batch), one virtual generator trained on the teacher's
logits over it (dfkd_edge.distill.vkd defaults, 200 epochs), then the auto-chosen student distilled
three ways from the same transfer set with the pipeline's KD defaults (T=4, 100 epochs, online
mixup for the KD term): ``kd``, ``vkd`` (the teacher is not run), ``kd+vkd`` (weights 0.5/0.5).
Alternatives (same transfer set): VKD with mixed inputs and mixed virtual targets; VKD with mixup
inside a class; VKD with mixup whose targets come from a generator that also learned the teacher's
outputs on mixed pairs, conditioned on the mixed label (the teacher runs while the generator trains,
not while the student does); kd+vkd at weight 0.25; generators trained without the adversarial term (fidelity
only) or without the fidelity term (adversarial only). int8 as in benchmarks/dfkd_methods.py.

Part 2 (real digits, 1,347 training / 450 test samples): the conv2d student (width 16) trained with
cross-entropy alone, with self-distillation via its own virtual generator, and two peers
(collaborative learning) -- the same optimiser, schedule, batches and seed.

    python benchmarks/vkd.py --seeds 0 1 2 --threads 1 [--teachers digits signal] [--part 1 2]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dfkd_methods import int8_accuracy, load_teachers, spec_line  # benchmarks/ sibling

from dfkd_edge.data.digits import load_split
from dfkd_edge.distill import KDConfig, distill
from dfkd_edge.distill.vkd import (SelfDistillConfig, VKDConfig, collaborate, fit_virtual_generator,
                                   generator_fidelity, self_distill, train_ce)
from dfkd_edge.models import create_model, create_student
from dfkd_edge.synthesis import create_synthesizer

#: label -> (KDConfig overrides, VKDConfig overrides or None for the default generator)
ROWS = {
    "KD (teacher soft targets, default)": ({"mode": "kd"}, None),
    "VKD alone (teacher not run)": ({"mode": "vkd"}, None),
    "KD+VKD (0.5/0.5)": ({"mode": "kd+vkd"}, None),
    "alt: VKD, mixup with mixed virtual targets": ({"mode": "vkd", "vkd_mix": "pair"}, None),
    "alt: VKD, mixup within a class": ({"mode": "vkd", "vkd_mix": "class"}, None),
    "alt: VKD, mixup, generator learned on mixed labels": ({"mode": "vkd", "vkd_mix": "pair"}, {"mixup": 1.0}),
    "alt: KD+VKD (0.75/0.25)": ({"mode": "kd+vkd", "vkd_weight": 0.25}, None),
    "alt: VKD, generator without adversarial term": ({"mode": "vkd"}, {"adv_weight": 0.0}),
    "alt: VKD, generator without fidelity term": ({"mode": "vkd"}, {"fidelity_weight": 0.0}),
}
MAIN = list(ROWS)[:3]


def accuracy(model, x, y) -> float:
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def part1(teachers, seeds, rows, workdir: Path) -> None:
    for name, (teacher, _, _, x_te, y_te) in teachers.items():
        spec = teacher.spec
        print(f"\n### {name}: teacher {accuracy(teacher, x_te, y_te):.4f} ({spec_line(teacher)}); seeds {seeds}\n")
        results = {r: [] for r in rows}
        fids = []
        for seed in seeds:
            t0 = time.perf_counter()
            ts = create_synthesizer("deepinversion", teacher, seed=seed).synthesize(2048, holdout=256)
            synth_s = time.perf_counter() - t0
            x, lg = ts.train
            gens = {}
            for label in rows:
                kd_over, gen_over = ROWS[label]
                gkey = tuple(sorted((gen_over or {}).items()))
                if kd_over["mode"] != "kd" and gkey not in gens:
                    t0 = time.perf_counter()
                    vk = fit_virtual_generator(lg, VKDConfig(seed=seed, **(gen_over or {})), x=x, teacher=teacher)
                    fid = generator_fidelity(vk.generator, ts.held_out[1], lg, seed=seed)
                    gens[gkey] = (vk.generator, time.perf_counter() - t0, fid)
                    if not gkey:
                        fids.append(fid)
                gen, gen_s, _ = gens.get(gkey, (None, 0.0, None))
                torch.manual_seed(seed)
                student, _ = create_student("auto", spec.input_shape, spec.num_classes, spec.num_params)
                t0 = time.perf_counter()
                distill(student, x, lg, KDConfig(seed=seed, **kd_over), teacher=teacher, virtual=gen)
                dist_s = time.perf_counter() - t0
                acc8 = int8_accuracy(student, spec.input_shape, x, x_te, y_te, workdir, seed)
                results[label].append((accuracy(student, x_te, y_te), acc8, synth_s, gen_s, dist_s))
        print("| row | student fp32 acc | student int8 acc | synthesis s | generator s | distillation s |")
        print("|---|---|---|---|---|---|")
        for label in rows:
            r = np.array(results[label])
            print(f"| {label} | {r[:, 0].mean():.4f} ± {r[:, 0].std():.4f} | {r[:, 1].mean():.4f} ± "
                  f"{r[:, 1].std():.4f} | {r[:, 2].mean():.1f} | {r[:, 3].mean():.1f} | {r[:, 4].mean():.1f} |")
        if fids:
            keys = ("class_kl", "sample_kl", "sample_kl_class_mean", "label_agreement", "entropy_teacher",
                    "entropy_generator")
            print("\nGenerator fidelity (default generator, 256 held-out synthetic samples x 16 draws): "
                  + ", ".join(f"{k} {np.mean([f[k] for f in fids]):.4f} ± {np.std([f[k] for f in fids]):.4f}"
                              for k in keys), flush=True)


def part2(seeds) -> None:
    x_tr, y_tr, x_te, y_te = load_split()
    print(f"\n### self-distillation and collaborative learning: digits, conv2d width 16, seeds {seeds}\n")

    def make(seed):
        torch.manual_seed(seed)
        return create_model("conv2d", input_shape=(1, 8, 8), num_classes=10, width=16)

    res = {"cross-entropy alone": [], "self-distillation (VKD)": [], "collaborative, 2 peers (VKD), mean of peers": []}
    for seed in seeds:
        cfg = SelfDistillConfig(seed=seed)
        m = make(seed)
        train_ce(m, x_tr, y_tr, cfg)
        res["cross-entropy alone"].append(accuracy(m, x_te, y_te))
        m = make(seed)
        self_distill(m, x_tr, y_tr, cfg)
        res["self-distillation (VKD)"].append(accuracy(m, x_te, y_te))
        peers = [make(seed), make(seed + 1000)]
        collaborate(peers, x_tr, y_tr, cfg)
        res["collaborative, 2 peers (VKD), mean of peers"].append(np.mean([accuracy(p, x_te, y_te) for p in peers]))
    print("| row | test accuracy | per seed |")
    print("|---|---|---|")
    for label, r in res.items():
        print(f"| {label} | {np.mean(r):.4f} ± {np.std(r):.4f} | {' '.join(f'{v:.4f}' for v in r)} |", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--teachers", nargs="+", default=["digits", "signal"], choices=["digits", "signal"])
    ap.add_argument("--part", type=int, nargs="+", default=[1, 2], choices=[1, 2])
    ap.add_argument("--rows", nargs="+", default=list(ROWS), help="row labels to run (part 1)")
    a = ap.parse_args()
    logging.getLogger().setLevel(logging.ERROR)
    torch.set_num_threads(a.threads)
    with tempfile.TemporaryDirectory() as d:
        if 1 in a.part:
            part1(load_teachers(a.teachers, Path(d)), a.seeds, a.rows, Path(d))
        if 2 in a.part:
            part2(a.seeds)


if __name__ == "__main__":
    main()
