"""torchrun -m dfkd_edge convert: two gloo processes on this machine, against one process; and the
device / precision choices that the CPU can check."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from conftest import FAST
from dfkd_edge import compute as compute_mod
from dfkd_edge.compute import Compute, maybe_compile, resolve
from dfkd_edge.distributed import Dist, rank_seed
from dfkd_edge.errors import UserError
from dfkd_edge.config import ConvertConfig, validate_config
from dfkd_edge.synthesis import create_synthesizer
from dfkd_edge.teacher import load_teacher

#: big enough that the student's accuracy means something (about 0.93-0.95 on the digits test split)
QUALITY = ["--samples", "768", "--holdout", "64", "--iterations", "80", "--synth-batch", "64", "--epochs", "40",
           "--calib-samples", "64", "--latency-budget", "0.05", "--threads", "1", "--seed", "0"]


def _run(args, env_extra=None, timeout=300):
    env = {**os.environ, "PYTHONWARNINGS": "ignore", **(env_extra or {})}
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, env=env, timeout=timeout)


def _torchrun(*args, nproc=2):
    return _run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(nproc),
                 "-m", "dfkd_edge", *args])


def _report(out):
    return json.loads((out / "report.json").read_text())


@pytest.fixture(scope="module")
def one_and_two(tmp_path_factory, digits_teacher, digits_test):
    """The same convert in one process and in two gloo processes (torchrun)."""
    base = tmp_path_factory.mktemp("dist")
    one, two = base / "one", base / "two"
    # side by side (3 busy threads on this 2-core machine): the test checks results, not speed
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    p1 = subprocess.Popen([sys.executable, "-m", "dfkd_edge", "convert", digits_teacher, "--out", str(one),
                           "--eval-data", digits_test, *QUALITY], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=env)
    r2 = _torchrun("convert", digits_teacher, "--out", two, "--eval-data", digits_test, *QUALITY)
    out, err = p1.communicate(timeout=300)
    r1 = subprocess.CompletedProcess(p1.args, p1.returncode, out, err)
    return one, r1, two, r2


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_quality(one_and_two):
    one, r1, two, r2 = one_and_two
    assert r1.returncode == 0, r1.stderr[-2000:]
    assert r2.returncode == 0, r2.stderr[-2000:]
    a1, a2 = _report(one)["accuracy"], _report(two)["accuracy"]
    # two ranks draw other samples than one process (rank 1 has its own stream): at this small budget that
    # alone moves the student by several points (seen: 96.0% one process, 90.9% two, int8)
    assert a1["student_fp32"] >= 0.85 and a2["student_fp32"] >= 0.85, (a1, a2)
    assert abs(a2["student_fp32"] - a1["student_fp32"]) <= 0.07, (a1, a2)
    assert abs(a2["student_int8"] - a1["student_int8"]) <= 0.07, (a1, a2)
    d = _report(two)["distributed"]
    assert d["world_size"] == 2 and d["backend"] == "gloo"
    assert _report(one)["distributed"]["world_size"] == 1


@pytest.mark.slow
def test_two_processes_write_the_artifacts_once(one_and_two):
    one, r1, two, r2 = one_and_two
    files = lambda d: sorted(p.name for p in d.iterdir())  # noqa: E731
    assert files(two) == files(one)  # the same files, no per-rank copies, no .partial left behind
    assert r2.stdout.count("Stage times") == 1  # one report printed (rank 0); the follower prints nothing
    manifest = json.loads((two / "manifest.json").read_text())
    assert manifest["complete"] and manifest["distributed"]["world_size"] == 2
    for name, stage in manifest["stages"].items():
        for f, digest in stage["files"].items():
            assert (two / f).is_file(), (name, f)


@pytest.mark.slow
def test_each_rank_draws_its_own_batches_and_rank_0_keeps_the_single_process_stream(one_and_two):
    one, _, two, _ = one_and_two
    with np.load(one / "transfer_set.npz") as z1, np.load(two / "transfer_set.npz") as z2:
        x1, x2 = z1["x"], z2["x"]
        assert x1.shape == x2.shape == (768 + 64, 1, 8, 8)
        assert int(z2["holdout"].sum()) == 64
    np.testing.assert_array_equal(x2[:64], x1[:64])  # batch 0: rank 0, the single process's seed
    assert not np.allclose(x2[64:128], x1[64:128])  # batch 1: rank 1, its own stream
    np.testing.assert_array_equal(x2[128:192], x1[64:128])  # batch 2: rank 0's second batch


@pytest.mark.slow
def test_resume_under_torchrun_skips_the_finished_stages(one_and_two, digits_teacher, digits_test):
    _, _, two, r2 = one_and_two
    assert r2.returncode == 0
    r = _torchrun("convert", digits_teacher, "--out", two, "--eval-data", digits_test, *QUALITY, "--resume")
    assert r.returncode == 0, r.stderr[-2000:]
    stages = json.loads((two / "manifest.json").read_text())["stages"]
    assert stages["synthesize"].get("resumed") and stages["distill"].get("resumed")


def test_a_refused_method_stops_every_rank_with_rank_0s_message(tmp_path, digits_teacher):
    r = _torchrun("convert", digits_teacher, "--out", tmp_path / "o", "--method", "adversarial",
                  "--samples", "64", "--holdout", "16")
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error")]
    assert sorted(ln.split(":")[0] for ln in lines) == ["error", "error (rank 1)"], r.stderr[-2000:]
    assert all("trains the student during synthesis, which runs in one process" in ln for ln in lines)
    assert not (tmp_path / "o" / "report.json").exists()


def test_validate_config_refuses_what_does_not_scale_out():
    cfg = ConvertConfig(teacher="t.pt", out="o", method="adversarial")
    validate_config(cfg, Dist())  # one process: fine
    with pytest.raises(UserError, match="runs in one process"):
        validate_config(cfg, Dist(rank=0, world=2))
    multi = ConvertConfig(teacher="a.pt", more_teachers=("b.pt",), out="o")
    validate_config(multi, Dist(rank=1, world=2))  # their ensemble is inverted like one teacher: data-parallel
    for cdfkd in (ConvertConfig(teacher="a.pt", more_teachers=("b.pt",), out="o", method="cdfkd-mfs"),
                  ConvertConfig(teacher="a.pt", more_teachers=("b.pt",), out="o", few_shot_data="f.npz")):
        with pytest.raises(UserError, match="CDFKD-MFS .* runs in one process"):
            validate_config(cdfkd, Dist(rank=1, world=2))
    with pytest.raises(UserError, match="cdfkd-mfs trains the student during synthesis"):
        validate_config(ConvertConfig(teacher="t.pt", out="o", method="cdfkd-mfs"), Dist(rank=0, world=2))


def test_several_teachers_under_torchrun(tmp_path, digits_teacher, digits_test):
    """Several teachers' ensemble is synthesized and distilled on both ranks, like one teacher."""
    from dfkd_edge.models.teachers import DigitsCNN
    from dfkd_edge.teacher import save_torchscript

    torch.manual_seed(5)
    save_torchscript(DigitsCNN(width=8, hidden=16).eval(), tmp_path / "b.pt", (1, 8, 8))
    r = _torchrun("convert", digits_teacher, tmp_path / "b.pt", "--out", tmp_path / "o", "--eval-data", digits_test,
                  *FAST)
    assert r.returncode == 0, r.stderr[-2000:]
    rep = _report(tmp_path / "o")
    assert rep["distributed"]["world_size"] == 2 and rep["synthesis"]["method"] == "deepinversion"
    assert len(rep["multi_teacher"]["teachers"]) == 2 and rep["multi_teacher"]["student"]["accuracy"] is not None
    assert (tmp_path / "o" / "student_int8.onnx").is_file()


def test_rank_seeds_differ_and_rank_0_keeps_the_seed():
    assert rank_seed(7, 0) == 7
    assert len({rank_seed(7, r) for r in range(8)}) == 8
    assert rank_seed(7, 1) != rank_seed(8, 1)


def test_device_choices_this_machine_can_and_cannot_give(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    c = resolve()
    assert c == Compute("cpu", "fp32", False, False)
    assert resolve(precision="bf16").precision == "bf16"
    assert resolve(channels_last="on").channels_last and not resolve(channels_last="on", four_d=False).channels_last
    with pytest.raises(UserError, match="no CUDA GPU"):
        resolve(device="cuda")
    with pytest.raises(UserError, match="fp16 needs a GPU"):
        resolve(precision="fp16")
    with pytest.raises(UserError, match="unknown --device"):
        resolve(device="tpu")


def test_cli_device_cuda_without_a_gpu_is_exit_2(cli, tmp_path, digits_teacher, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    code, _, err = cli("convert", digits_teacher, "--out", tmp_path / "o", "--device", "cuda")
    assert code == 2 and "no CUDA GPU" in err


@pytest.mark.parametrize("precision,channels_last", [("fp32", False), ("bf16", True)])
def test_inversion_reaches_its_labels_under_each_precision(digits_teacher, precision, channels_last):
    """The autocast path (bf16 here: what a GPU uses) still optimises the inputs to the requested labels."""
    teacher = load_teacher(digits_teacher)
    comp = Compute("cpu", precision, channels_last, False)
    teacher.to(comp)
    synth = create_synthesizer("deepinversion", teacher, batch_size=40, iterations=40, seed=0)
    synth.compute = comp
    x = synth.sample(40)
    teacher.to(Compute())
    assert x.dtype == torch.float32 and x.device.type == "cpu" and x.is_contiguous()
    top1 = teacher.logits(x).argmax(1)
    # the labels come from the same generator state: redraw them to compare
    synth.generator.manual_seed(0)
    y = synth.batch_context(40)
    assert (top1 == y).float().mean() >= 0.9


def test_a_failing_compile_falls_back_to_eager(monkeypatch, caplog):
    class Broken:
        def __call__(self, x):
            raise RuntimeError("inductor is not available")

    monkeypatch.setattr(compute_mod.torch, "compile", lambda m: Broken())
    model = torch.nn.Linear(3, 2)
    fwd = maybe_compile(model, Compute(compile=True))
    x = torch.randn(4, 3)
    with caplog.at_level(logging.WARNING, logger="dfkd_edge.compute"):
        out = fwd(x)
        fwd(x)
    assert torch.equal(out, model(x))
    assert sum("torch.compile failed" in r.message for r in caplog.records) == 1
    assert maybe_compile(model, Compute()) is model


def test_a_failure_on_rank_0_alone_stops_the_follower_too(tmp_path, digits_teacher):
    """Only rank 0 reads the eval data: its error reaches rank 1, which stops instead of waiting."""
    r = _torchrun("convert", digits_teacher, "--out", tmp_path / "o", "--eval-data", tmp_path / "missing.npz",
                  "--samples", "64", "--holdout", "16")
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error")]
    assert any(ln.startswith("error: ") and "missing.npz" in ln for ln in lines), r.stderr[-2000:]
    assert any(ln.startswith("error (rank 1): rank 0 stopped:") for ln in lines), r.stderr[-2000:]


SMALL = ["--samples", "160", "--holdout", "32", "--synth-batch", "32", "--iterations", "40", "--epochs", "2",
         "--calib-samples", "32", "--latency-budget", "0.05", "--seed", "5"]


@pytest.mark.slow
def test_a_killed_torchrun_job_resumes_from_each_ranks_checkpoints(tmp_path, digits_teacher):
    """Every process of the job SIGKILLed mid-synthesis (as a lost node would); --resume finishes it,
    and the batches each rank had checkpointed are in the transfer set as they were, not redrawn.
    (That a resumed stream continues exactly where it stopped is pinned in one process by
    tests/test_resume.py; each rank resumes with the same code.)"""
    import signal
    import time

    out = tmp_path / "run"
    job = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                            "-m", "dfkd_edge", "convert", digits_teacher, "--out", str(out), *SMALL],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 120
    while not (list(out.glob(".partial/*/rank-0/batch_*.npz")) and list(out.glob(".partial/*/rank-1/batch_*.npz"))):
        assert job.poll() is None, "the job finished before it could be interrupted"
        assert time.time() < deadline
        time.sleep(0.02)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait()
    assert not (out / "transfer_set.npz").exists()
    saved = {}
    for f in out.glob(".partial/*/rank-*/batch_*.npz"):
        try:
            with np.load(f) as z:
                saved[int(f.stem.split("_")[1])] = z["x"]
        except (OSError, ValueError):
            pass  # a file the kill cut short is redrawn; so is anything after it
    assert {0, 1} <= set(saved)
    r = _torchrun("convert", digits_teacher, "--out", out, *SMALL, "--resume")
    assert r.returncode == 0, r.stderr[-2000:]
    with np.load(out / "transfer_set.npz") as z:
        x = z["x"]
    assert x.shape[0] == 160 + 32
    for i, xb in saved.items():
        np.testing.assert_array_equal(x[i * 32:(i + 1) * 32], xb)
    assert not (out / ".partial").exists() and _report(out)["distributed"]["world_size"] == 2


def test_distillation_under_bf16_autocast_learns_like_fp32_and_returns_a_cpu_fp32_student(digits_teacher):
    """The autocast path of distill() (what a GPU runs), checked on the CPU: the teacher's soft
    targets on the real digits training inputs, 15 epochs each way."""
    from dfkd_edge.data.digits import load_split
    from dfkd_edge.distill import KDConfig, distill
    from dfkd_edge.models import create_student
    from dfkd_edge.models.students import build_from_recipe

    teacher = load_teacher(digits_teacher)
    x_tr, _, x_te, y_te = load_split()
    logits = teacher.logits(torch.from_numpy(x_tr)).numpy()
    _, recipe = create_student("auto", teacher.spec.input_shape, 10, teacher.spec.num_params)
    preds = []
    for comp in (Compute(), Compute(precision="bf16", channels_last=True)):
        torch.manual_seed(0)
        student = build_from_recipe(recipe)
        distill(student, x_tr, logits, KDConfig(epochs=15, mixup=0.0), compute=comp)
        assert not student.training
        assert all(p.dtype == torch.float32 and p.device.type == "cpu" and p.is_contiguous()
                   for p in student.parameters())
        with torch.no_grad():
            preds.append(student(torch.from_numpy(x_te)).argmax(1).numpy())
    acc = [float((p == y_te).mean()) for p in preds]
    assert min(acc) >= 0.9 and abs(acc[0] - acc[1]) <= 0.03, acc


def _from_leader_rank(rank: int, store: str, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    d = Dist(rank=rank, world=2)
    got = {"value": d.from_leader(lambda: {"made_on": rank})}
    try:
        d.from_leader(lambda: (_ for _ in ()).throw(UserError("no student fits 1 ms")))
    except UserError as e:
        got["error"] = str(e)
    with open(f"{out}.{rank}", "w") as f:
        json.dump(got, f)
    torch.distributed.destroy_process_group()


def test_from_leader_gives_every_rank_the_leaders_value_and_its_failure(tmp_path):
    """--max-latency-ms's choice (measured on a device, perhaps) is made once, on rank 0, and every rank gets it."""
    ctx = torch.multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_from_leader_rank, args=(r, str(tmp_path / "store"), str(tmp_path / "got")))
             for r in (0, 1)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    got = [json.loads((tmp_path / f"got.{r}").read_text()) for r in (0, 1)]
    assert [g["value"] for g in got] == [{"made_on": 0}, {"made_on": 0}]
    assert got[0]["error"] == "no student fits 1 ms" and got[1]["error"] == "rank 0 stopped: no student fits 1 ms"
