"""Do two versions of the package invert the same samples from a teacher? For each zoo teacher: the domain read
and 64 samples inverted (20 steps, seed 0) by this checkout's dfkd_edge and by another copy of it, and the largest
difference between the two sets. 0.0 says a change leaves that teacher's synthesis, and so its student, as it was.

    git archive REV dfkd_edge | tar -x -C /tmp/old      # the version to compare with
    python benchmarks/compare_versions.py --old /tmp/old --teachers digits01-seq signal10z-cnn
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def invert(out: str, teachers: list[str], cache: str) -> None:
    """(in the child process) the samples of each teacher, saved to ``out``."""
    import torch

    sys.path.insert(0, str(HERE))
    import zoo
    from dfkd_edge.domain import infer_domain
    from dfkd_edge.synthesis import create_synthesizer
    from dfkd_edge.teacher import load_teacher

    torch.set_num_threads(1)
    samples = {}
    for name in teachers:
        meta = zoo.build(zoo.BY_NAME[name], Path(cache))
        t = load_teacher(meta["teacher"], tuple(meta["input_shape"]), meta.get("factory"))
        t.domain = infer_domain(t)
        samples[name] = create_synthesizer("deepinversion", t, seed=0, iterations=20, batch_size=64).sample(64).numpy()
    np.savez(out, **samples)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--old", required=True, help="a folder holding the other version's dfkd_edge package")
    ap.add_argument("--teachers", nargs="+", required=True)
    ap.add_argument("--cache", default=str(HERE / ".zoo"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        invert(a.child, a.teachers, a.cache)
        return
    tmp = Path(tempfile.mkdtemp(prefix="compare-versions-"))
    files = {}
    for which, path in (("this", str(HERE.parent)), ("old", a.old)):
        files[which] = tmp / f"{which}.npz"
        subprocess.run([sys.executable, __file__, "--old", a.old, "--cache", a.cache, "--child", str(files[which]),
                        "--teachers", *a.teachers], env={**os.environ, "PYTHONPATH": path}, check=True)
    this, old = np.load(files["this"]), np.load(files["old"])
    print("| teacher | largest difference of the inverted samples |")
    print("|---|---|")
    for name in a.teachers:
        print(f"| {name} | {float(np.abs(this[name] - old[name]).max()):.3g} |")


if __name__ == "__main__":
    main()
