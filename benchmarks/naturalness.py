"""Are the inverted samples inputs of the teacher's task? A diagnostic over the teacher zoo.

For each zoo teacher: 256 samples synthesized with convert's defaults (``--method auto``), and the
real-data KD student (zoo_bench's upper bound: the same student and KD recipe on the real training
split). Printed per teacher, mean ± std over seeds:

* ``real student on real``: top-1 agreement of the real-data KD student with the teacher on the real
  test split (how well it learnt the teacher where the task's inputs are);
* ``real student on synthetic``: the same student's agreement with the teacher on the synthetic
  samples. A model that learnt the task from its own inputs agrees with the teacher on inputs of that
  task; where it does not, the teacher's labels on the synthetic samples rest on something the task's
  inputs do not carry, and a student distilled from them learns that instead;
* ``teacher kept under a move`` (images and signals): the share of samples whose teacher top-1 survives
  the move KD applies to every mixed sample (``dfkd_edge.moves.shift_samples``), on the synthetic samples
  and on the real test split.

Needs the real data, so it is a benchmark, not a signal the tool can compute. ``--default-gap`` takes
the default's int8 minus real-data KD per teacher (docs/benchmarks.md) to print the rank correlation.

    python benchmarks/naturalness.py --teachers shapes01-mbv digits01-seq --seeds 0
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import zoo  # noqa: E402
from zoo_bench import _ms, _spearman, real_kd_student  # noqa: E402

from dfkd_edge.quality import agreement  # noqa: E402


def synthetic(meta: dict, seed: int, n: int = 256) -> np.ndarray:
    from dfkd_edge import api

    with tempfile.TemporaryDirectory() as out:
        api.synthesize(meta["teacher"], out=out, input_shape=",".join(map(str, meta["input_shape"])),
                       factory=meta.get("factory"), samples=n, holdout=16, seed=seed, threads=1, force=True)
        with np.load(Path(out) / "transfer_set.npz") as z:
            return z["x"][:n].astype(np.float32)


def kept_under_move(teacher, x: torch.Tensor, t_logits: np.ndarray, seed: int) -> float | None:
    """The share of ``x`` whose teacher top-1 (``t_logits``) survives KD's move; None for vectors."""
    from dfkd_edge.moves import shift_samples

    if x.dim() < 3:
        return None
    return agreement(teacher.logits(shift_samples(x, torch.Generator().manual_seed(seed))).numpy(), t_logits)


def measure(meta: dict, seed: int) -> dict:
    student, teacher = real_kd_student(meta, seed)
    row = {}
    for name, x in (("real", np.load(meta["eval"])["x"].astype(np.float32)), ("synthetic", synthetic(meta, seed))):
        xt = torch.from_numpy(x)
        t_logits = teacher.logits(xt).numpy()  # once per set: both measures compare with it
        with torch.no_grad():
            row[f"real_on_{name}"] = agreement(student(xt).numpy(), t_logits)
        row[f"move_{name}"] = kept_under_move(teacher, xt, t_logits, seed)
    return row


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teachers", nargs="*", default=[e.name for e in zoo.ENTRIES])
    ap.add_argument("--seeds", nargs="*", type=int, default=[0])
    ap.add_argument("--cache", default=str(zoo.DEFAULT_CACHE))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--default-gap", default=None, help="JSON {teacher: default int8 - real-data KD, points}")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    print("| teacher | real student on real | real student on synthetic | teacher kept under a move: synthetic "
          "/ real |\n|---|---|---|---|", flush=True)
    rows = {}
    for name in a.teachers:
        meta = zoo.build(zoo.BY_NAME[name], Path(a.cache))
        runs = [measure(meta, s) for s in a.seeds]
        rows[name] = float(np.mean([r["real_on_synthetic"] for r in runs]))
        print(f"| {name} | {_ms([r['real_on_real'] for r in runs])} | {_ms([r['real_on_synthetic'] for r in runs])} | "
              f"{_ms([r['move_synthetic'] for r in runs])} / {_ms([r['move_real'] for r in runs])} |", flush=True)
    if a.default_gap:
        gap = json.loads(a.default_gap)
        names = [n for n in rows if n in gap]
        rho = _spearman([rows[n] for n in names], [gap[n] for n in names])
        print(f"\nSpearman (real student on synthetic, default's gap) over {len(names)} teachers: {rho:.2f}")


if __name__ == "__main__":
    main()
