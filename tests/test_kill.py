"""Crash safety at every instant: a real ``convert`` is killed (SIGKILL) at 24 instants spread over
the whole run, each one resumed with --resume, and every result compared with an uninterrupted run.

An instant (dfkd_edge.killpoint) is a point where a kill leaves a different state on disk: before
and after each atomic rename, before and after each manifest write, each synthesis batch and
distillation epoch. The process kills itself at the N-th one (DFKD_EDGE_KILL_AT): no timing window,
the same instants on a loaded machine as on an idle one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch

INSTANTS = 24
# every stage (build too, for the TensorRT target); a fixed int8 format and domain: nothing depends on timings
ARGS = ["--input-shape", "1,40", "--input-mean", "0", "--input-std", "1", "--samples", "64", "--holdout", "16",
        "--synth-batch", "16", "--iterations", "5", "--epochs", "6", "--calib-samples", "16", "--int8-format",
        "qdq-u8s8", "--latency-budget", "0.02", "--threads", "1", "--seed", "1", "--target", "host-cpu",
        "--target", "jetson-orin-nano"]
# what differs between two runs of the same convert: measured times and what follows from them
TIMED = ("latency", "timings", "host", "recommended", "plan")  # the plan: probe times, planned against taken


def _convert(teacher: str, evald: str, out: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dfkd_edge.cli", "convert", teacher, *ARGS, "--eval-data", evald,
                           "--out", str(out), *extra], capture_output=True, text=True, timeout=600,
                          env={**os.environ, **(env or {})})


def _untimed(obj):
    """``obj`` without the measured times (p50 figures anywhere, the TIMED sections of a report)."""
    if isinstance(obj, dict):
        return {k: _untimed(v) for k, v in obj.items() if k not in TIMED and not k.startswith("p50")}
    if isinstance(obj, list):
        return [_untimed(v) for v in obj]
    return obj


def _same_as(out: Path, ref: Path) -> list[str]:
    """The differences between two run directories (nothing timed)."""
    diffs = []
    names = {p.name for p in ref.iterdir()}
    if {p.name for p in out.iterdir()} != names:
        diffs.append(f"files: {sorted({p.name for p in out.iterdir()} ^ names)}")
    for name in sorted(names & {p.name for p in out.iterdir()}):
        a, b = out / name, ref / name
        if name.endswith(".npz"):
            da, db = np.load(a), np.load(b)
            same = all(np.array_equal(da[k], db[k]) for k in db.files)
        elif name.endswith(".pt"):
            sa, sb = torch.load(a, weights_only=True), torch.load(b, weights_only=True)
            same = sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sb)
        elif name in ("manifest.json", "latency.json"):  # the stage times; the latency measured
            same = True
        elif name.endswith(".json"):
            same = _untimed(json.loads(a.read_text())) == _untimed(json.loads(b.read_text()))
        elif name.endswith((".onnx", ".sh", ".cache")):
            same = a.read_bytes() == b.read_bytes()
        else:  # report.md/html, plots, manifest: they carry the times
            same = True
        if not same:
            diffs.append(name)
    return diffs


@pytest.fixture(scope="module")
def reference(tmp_path_factory, toy_teachers):
    t = toy_teachers["signal"]
    out = tmp_path_factory.mktemp("ref") / "run"
    count = out.parent / "instants.txt"
    r = _convert(t["teacher"], t["eval"], out, env={"DFKD_EDGE_COUNT_INSTANTS": str(count)})
    assert r.returncode == 0, r.stderr[-3000:]
    return out, int(count.read_text())


def _kill_and_resume(t: dict, out: Path, instant: int) -> tuple[int, str]:
    killed = _convert(t["teacher"], t["eval"], out, env={"DFKD_EDGE_KILL_AT": str(instant)})
    if killed.returncode != -9:
        return instant, f"not killed at instant {instant}: exit {killed.returncode} {killed.stderr[-500:]}"
    resumed = _convert(t["teacher"], t["eval"], out, "--resume")
    if resumed.returncode != 0:
        return instant, f"resume after instant {instant}: exit {resumed.returncode} {resumed.stderr[-1000:]}"
    return instant, ""


@pytest.mark.slow
def test_killed_at_any_instant_then_resumed_gives_the_uninterrupted_result(tmp_path, toy_teachers, reference):
    ref, total = reference
    assert total >= 2 * INSTANTS, f"only {total} instants in a run"
    instants = sorted({int(round(i)) for i in np.linspace(1, total - 1, INSTANTS)})
    t = toy_teachers["signal"]
    with ThreadPoolExecutor(max_workers=2) as pool:  # the two cores; each process runs on one thread
        results = list(pool.map(lambda k: _kill_and_resume(t, tmp_path / f"k{k}", k), instants))
    failures = [msg for _, msg in results if msg]
    assert not failures, "\n".join(failures)
    for k in instants:
        out = tmp_path / f"k{k}"
        leftovers = [str(p) for p in out.rglob("*") if p.name.endswith(".tmp") or p.name == ".partial"]
        assert not leftovers, f"instant {k}: {leftovers}"
        diffs = _same_as(out, ref)
        assert not diffs, f"killed at instant {k} of {total}, resumed: differs in {diffs}"
        assert json.loads((out / "manifest.json").read_text())["complete"]


def test_a_resumed_run_removes_the_work_folders_and_temp_files_a_killed_stage_left(tmp_path):
    from dfkd_edge.runner import WORK_DIRS, clean_temporaries

    for prefix in WORK_DIRS:
        (tmp_path / f"{prefix}abc123").mkdir()
        (tmp_path / f"{prefix}abc123" / "pre.onnx").write_bytes(b"x")
    (tmp_path / ".report.json.x1.tmp").write_text("{}")
    (tmp_path / ".partial").mkdir()  # checkpoints a resumed stage continues from: kept
    (tmp_path / "calibration.json").write_text("{}")
    clean_temporaries(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".partial", "calibration.json"]
