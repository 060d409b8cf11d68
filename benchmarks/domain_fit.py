"""What the input-domain fit reads from each zoo teacher against what its real training data has.

    python benchmarks/domain_fit.py [--teachers NAME ...] [--cache DIR]

For every zoo teacher with an observable BatchNorm: the per-channel mean, the spread inside a sample
(``std``; for vectors, per feature) and the spread of each sample's own level (``level_std``, images and signals) that
``dfkd_edge.domain.infer_domain`` reads from the teacher alone, next to the same statistics of the
real training split (never shown to the fit), averaged over channels, and the fit's seconds; for inputs of
several channels (colour images) each channel's whole spread and the channels' correlation in draws from the
read domain against the real inputs', and the first BatchNorm's mismatch left by the fit.
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


def channel_stats(x: np.ndarray) -> dict | None:
    """Images and signals of several channels: each channel's spread over every sample and position (its
    level included) and the channels' correlation at one position (upper triangle, row by row); None for
    one channel or vectors."""
    if x.ndim < 3 or x.shape[1] < 2:
        return None
    flat = np.moveaxis(np.asarray(x, np.float64), 1, 0).reshape(x.shape[1], -1)
    corr = np.corrcoef(flat)
    iu = np.triu_indices(len(corr), 1)
    return {"std": [round(float(v), 4) for v in flat.std(1)], "corr": [round(float(v), 4) for v in corr[iu]]}


def colour_gap(synth: dict, real: dict) -> tuple[float, float]:
    """(largest relative error of a channel's spread, largest error of a channel correlation)."""
    rel = max(abs(a / b - 1) for a, b in zip(synth["std"], real["std"]))
    return rel, max(abs(a - b) for a, b in zip(synth["corr"], real["corr"]))


def _fmt(v: list[float]) -> str:
    return "/".join(f"{x:.2f}" for x in v)


def main(argv=None) -> None:
    from dfkd_edge.domain import infer_domain
    from dfkd_edge.teacher import load_teacher

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teachers", nargs="*", default=[e.name for e in zoo.ENTRIES])
    ap.add_argument("--cache", default=str(zoo.DEFAULT_CACHE))
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    print("| teacher | input | mean read / real | std inside a sample read / real | level spread read / real "
          "| per-channel spread, drawn / real | channel correlation, drawn / real | fit mismatch | seconds | each read's "
          "mismatch |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in a.teachers:
        meta = zoo.build(zoo.BY_NAME[name], Path(a.cache))
        teacher = load_teacher(meta["teacher"], tuple(meta["input_shape"]), meta.get("factory"))
        t0 = time.perf_counter()
        d = infer_domain(teacher)
        secs = time.perf_counter() - t0
        if d.source != "teacher-bn":
            print(f"| {name} | {meta['domain']} | ({d.source}) | | | {secs:.1f} |")
            continue
        x = np.load(meta["train"])["x"]
        m, s, lv = real_stats(x)
        read_lv = f"{np.mean(d.level_std):.3g}" if d.level_std is not None else "-"
        real_lv = "-" if np.isnan(lv) else f"{lv:.3g}"
        real_c = channel_stats(x)
        drawn_c = channel_stats(d.draw(2048, tuple(meta["input_shape"]), torch.Generator().manual_seed(0)).numpy())
        colour = (f"{_fmt(drawn_c['std'])} / {_fmt(real_c['std'])} | {_fmt(drawn_c['corr'])} / {_fmt(real_c['corr'])}"
                  if real_c else "- | -")
        steps = d.detail.split("(", 1)[-1].rstrip(")")
        print(f"| {name} | {meta['domain']} | {np.mean(d.mean):.3g} / {m:.3g} | {np.mean(d.std):.3g} / {s:.3g} "
              f"| {read_lv} / {real_lv} | {colour} | {d.fit_mismatch} | {secs:.1f} | {steps} |", flush=True)


if __name__ == "__main__":
    main()
