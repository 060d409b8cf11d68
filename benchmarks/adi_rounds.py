"""Adaptive DeepInversion's competition term (Yin et al., CVPR 2020), in two rounds, against the default
recipe on zoo teachers (benchmarks/zoo.py). An experiment, not in the package (research/notebook.md).

    python benchmarks/adi_rounds.py --teachers digits01-dw signal10z-cnn --seeds 0 --weights 0 0.2 1.0

weight 0: the default's transfer set (DeepInversion, 2,048 samples), one student. weight w > 0: 1,024
DeepInversion samples, a student distilled from them, then 1,024 more samples optimised with
``w x (1 - JS(teacher, student))`` added (T = 3: inputs where that student and the teacher part), and a
fresh student distilled from all 2,048. KD as convert's default; fp32 test accuracy of the final student
(and the first-round student's), one JSON line per run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import zoo  # noqa: E402

from dfkd_edge.distill import KDConfig, distill  # noqa: E402
from dfkd_edge.domain import infer_domain  # noqa: E402
from dfkd_edge.models import create_student  # noqa: E402
from dfkd_edge.synthesis.deepinversion import DeepInversionSynthesizer  # noqa: E402
from dfkd_edge.teacher import load_teacher  # noqa: E402


class Competing(DeepInversionSynthesizer):
    """DeepInversion plus the competition term against a fixed ``student`` (none: plain DeepInversion)."""

    name = "adi-experiment"

    def __init__(self, teacher, student=None, weight: float = 0.0, **kw) -> None:
        super().__init__(teacher, **kw)
        self.student, self.weight = student, weight

    def loss(self, x, logits, rec, y):
        loss, fields = super().loss(x, logits, rec, y)
        if self.student is None:
            return loss, fields
        p_t, p_s = F.softmax(logits / 3.0, 1), F.softmax(self.student(x) / 3.0, 1)
        m = (0.5 * (p_t + p_s)).log()
        js = 0.5 * (F.kl_div(m, p_t, reduction="batchmean") + F.kl_div(m, p_s, reduction="batchmean"))
        fields["compete"] = 1.0 - js.clamp(0, 1)
        return loss + self.weight * fields["compete"], fields


def _student(teacher, domain, seed: int):
    torch.manual_seed(seed)
    return create_student("auto", teacher.spec.input_shape, teacher.spec.num_classes, teacher.spec.num_params,
                          domain=domain)[0]


def _distilled(teacher, domain, x, logits, seed: int):
    student = _student(teacher, domain, seed)
    torch.manual_seed(seed)
    distill(student, x, logits, KDConfig(seed=seed), teacher=teacher)
    return student.eval()


def _acc(model, te) -> float:
    with torch.no_grad():
        return float((model(torch.from_numpy(te["x"])).argmax(1).numpy() == te["y"]).mean())


def run(name: str, seed: int, weight: float, cache: Path) -> dict:
    meta = zoo.build(zoo.BY_NAME[name], cache)
    teacher = load_teacher(meta["teacher"], tuple(meta["input_shape"]), meta.get("factory"))
    torch.manual_seed(seed)
    np.random.seed(seed)
    domain = infer_domain(teacher, None, seed=seed)
    teacher.domain = domain
    te = np.load(meta["eval"])
    t0 = time.perf_counter()
    kw = {"batch_size": 256, "iterations": 200}
    row = {"teacher": name, "seed": seed, "weight": weight}
    if weight == 0:
        x, logits = Competing(teacher, seed=seed, **kw).synthesize(2048).train
    else:
        x1, l1 = Competing(teacher, seed=seed, **kw).synthesize(1024).train
        first = _distilled(teacher, domain, x1, l1, seed)
        row["round1"] = _acc(first, te)
        for p in first.parameters():
            p.requires_grad_(False)
        x2, l2 = Competing(teacher, first, weight, seed=seed + 1000, **kw).synthesize(1024).train
        x, logits = np.concatenate([x1, x2]), np.concatenate([l1, l2])
    row["acc"] = _acc(_distilled(teacher, domain, x, logits, seed), te)
    row["seconds"] = round(time.perf_counter() - t0, 1)
    return row


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teachers", nargs="+", default=["digits01-dw", "digits01-seq", "signal10z-cnn", "signal10z-dw"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--weights", nargs="+", type=float, default=[0.0, 0.2, 1.0])
    ap.add_argument("--cache", default=str(zoo.DEFAULT_CACHE))
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    for t in a.teachers:
        for s in a.seeds:
            for w in a.weights:
                print(json.dumps(run(t, s, w, Path(a.cache))), flush=True)


if __name__ == "__main__":
    main()
