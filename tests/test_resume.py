"""Interrupted runs: a real convert process killed mid-synthesis or mid-distillation is completed
by --resume, and gives the same transfer set, student and quality as an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import read_json

# synthesis in 9 batches and distillation in 30 epochs: each is killed inside, at an instant read from the
# run directory (a batch file, a manifest entry), not from a clock
ARGS = ["--samples", "256", "--holdout", "32", "--synth-batch", "32", "--iterations", "40", "--epochs", "30",
        "--calib-samples", "64", "--threads", "1", "--seed", "3", "--latency-budget", "0.1"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory, digits_teacher):
    out = tmp_path_factory.mktemp("ref") / "run"
    r = subprocess.run([sys.executable, "-m", "dfkd_edge.cli", "convert", digits_teacher, *ARGS, "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return out


def _start(teacher, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dfkd_edge.cli", "convert", teacher, *ARGS, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    deadline = time.time() + timeout
    while not ready():
        assert proc.poll() is None, "convert finished before it could be interrupted"
        assert time.time() < deadline
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def _stages(out: Path) -> dict:
    try:
        return json.loads((out / "manifest.json").read_text())["stages"]
    except (OSError, ValueError):
        return {}


def _same_result(out: Path, ref: Path) -> None:
    a, b = np.load(out / "transfer_set.npz"), np.load(ref / "transfer_set.npz")
    for k in ("x", "logits", "holdout"):
        np.testing.assert_array_equal(a[k], b[k])
    sa = torch.load(out / "student.pt", weights_only=True)
    sb = torch.load(ref / "student.pt", weights_only=True)
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    ra, rb = read_json(out / "report.json"), read_json(ref / "report.json")
    assert ra["fidelity"] == rb["fidelity"] and ra["accuracy"] == rb["accuracy"]
    assert not list(out.glob("**/*.tmp")) and not (out / ".partial").exists()


@pytest.mark.slow
def test_kill_mid_synthesis_then_resume(cli, tmp_path, digits_teacher, reference):
    out = tmp_path / "run"
    proc = _start(digits_teacher, out)
    _kill_when(proc, lambda: len(list(out.glob(".partial/*/batch_*.npz"))) >= 2)
    assert "synthesize" not in _stages(out) and not (out / "transfer_set.npz").exists()
    code, _, err = cli("convert", digits_teacher, *ARGS, "--out", out)
    assert code == 2 and "--resume" in err  # an unfinished run is not silently overwritten
    code, _, err = cli("convert", digits_teacher, *ARGS, "--out", out, "--resume")
    assert code == 0, err
    _same_result(out, reference)


@pytest.mark.slow
def test_kill_mid_distillation_then_resume(cli, tmp_path, digits_teacher, reference):
    out = tmp_path / "run"
    proc = _start(digits_teacher, out)
    _kill_when(proc, lambda: "synthesize" in _stages(out))
    assert "distill" not in _stages(out)
    code, _, err = cli("convert", digits_teacher, *ARGS, "--out", out, "--resume")
    assert code == 0, err
    stages = read_json(out / "manifest.json")["stages"]
    assert stages["synthesize"].get("resumed") and not stages["distill"].get("resumed")
    _same_result(out, reference)


@pytest.mark.slow
def test_resume_reruns_only_what_changed(cli, tmp_path, digits_teacher, reference):
    import shutil

    out = tmp_path / "run"
    shutil.copytree(reference, out)
    # what a kill leaves at the worst instants: checkpoints after the stage's manifest entry, a write's temp
    (out / ".partial" / "synthesize-0").mkdir(parents=True)
    (out / ".partial" / "synthesize-0" / "batch_0.npz").write_bytes(b"x")
    (out / ".student.pt.k1ll3d.tmp").write_bytes(b"x")
    code, _, err = cli("convert", digits_teacher, *ARGS, "--out", out, "--resume")
    assert code == 0, err
    assert not (out / ".partial").exists() and not list(out.glob("**/*.tmp"))
    stages = read_json(out / "manifest.json")["stages"]
    assert all(stages[s].get("resumed") for s in ("synthesize", "distill", "export", "calibrate", "profile"))
    args = list(ARGS)
    args[args.index("--epochs") + 1] = "5"
    code, _, err = cli("convert", digits_teacher, *args, "--out", out, "--resume")
    assert code == 0, err
    stages = read_json(out / "manifest.json")["stages"]
    assert stages["synthesize"].get("resumed") and not stages["distill"].get("resumed")
    assert not stages["export"].get("resumed")  # its input, the student, changed
    # another start draws another transfer set: synthesis runs again
    code, _, err = cli("convert", digits_teacher, *args, "--synth-start", "noise", "--out", out, "--resume")
    assert code == 0, err
    assert not read_json(out / "manifest.json")["stages"]["synthesize"].get("resumed")
    assert read_json(out / "report.json")["synthesis"]["start"] == "noise"


def test_force_and_resume_contradict(cli, tmp_path, digits_teacher):
    code, _, err = cli("convert", digits_teacher, "--out", tmp_path / "o", "--force", "--resume")
    assert code == 2 and "contradict" in err


@pytest.mark.slow
def test_ctrl_c_mid_synthesis_exits_130_and_resumes(cli, tmp_path, digits_teacher, reference):
    out = tmp_path / "run"
    # As a terminal gives it: a run started in the background (CI's `cmd &`, nohup) inherits SIGINT
    # *ignored*, and Python then never raises KeyboardInterrupt; restore the default in the child.
    proc = subprocess.Popen([sys.executable, "-m", "dfkd_edge.cli", "convert", digits_teacher, *ARGS, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 300
    while len(list(out.glob(".partial/*/batch_*.npz"))) < 1:
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "--resume" in err, err[-2000:]
    assert not list(out.glob("**/*.tmp"))
    code, _, err = cli("convert", digits_teacher, *ARGS, "--out", out, "--resume")
    assert code == 0, err
    _same_result(out, reference)
