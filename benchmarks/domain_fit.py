"""What the input-domain fit reads from each zoo teacher against what its real training data has.

    python benchmarks/domain_fit.py [--teachers NAME ...] [--cache DIR]

For every zoo teacher with an observable BatchNorm: the per-channel mean, the spread inside a sample
(``std``; for vectors, per feature) and the spread of each sample's own level (``level_std``, images and signals) that
``dfkd_edge.domain.infer_domain`` reads from the teacher alone, next to the same statistics of the
real training split (never shown to the fit), averaged over channels, and the fit's seconds.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import zoo  # noqa: E402


def real_stats(x: np.ndarray) -> tuple[float, float, float]:
    """(mean, spread inside a sample, spread of a sample's level), each averaged over channels."""
    if x.ndim == 2:
        return float(x.mean(0).mean()), float(x.std(0).mean()), float("nan")
    axes = tuple(range(2, x.ndim))
    return (float(x.mean((0, *axes)).mean()), float(np.sqrt(x.var(axes).mean(0)).mean()),
            float(x.mean(axes).std(0).mean()))


def main(argv=None) -> None:
    from dfkd_edge.domain import infer_domain
    from dfkd_edge.teacher import load_teacher

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teachers", nargs="*", default=[e.name for e in zoo.ENTRIES])
    ap.add_argument("--cache", default=str(zoo.DEFAULT_CACHE))
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    print("| teacher | input | mean read / real | std inside a sample read / real | level spread read / real "
          "| seconds |")
    print("|---|---|---|---|---|---|")
    for name in a.teachers:
        meta = zoo.build(zoo.BY_NAME[name], Path(a.cache))
        teacher = load_teacher(meta["teacher"], tuple(meta["input_shape"]), meta.get("factory"))
        t0 = time.perf_counter()
        d = infer_domain(teacher)
        secs = time.perf_counter() - t0
        if d.source != "teacher-bn":
            print(f"| {name} | {meta['domain']} | ({d.source}) | | | {secs:.1f} |")
            continue
        m, s, lv = real_stats(np.load(meta["train"])["x"])
        read_lv = f"{np.mean(d.level_std):.3g}" if d.level_std is not None else "-"
        real_lv = "-" if np.isnan(lv) else f"{lv:.3g}"
        print(f"| {name} | {meta['domain']} | {np.mean(d.mean):.3g} / {m:.3g} | {np.mean(d.std):.3g} / {s:.3g} "
              f"| {read_lv} / {real_lv} | {secs:.1f} |", flush=True)


if __name__ == "__main__":
    main()
