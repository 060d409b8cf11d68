"""The stages one by one: each stage command on a directory made by the commands before it, each
one's exit-2 message when its inputs are missing or stale, the Python API, and distillation
continued from its per-epoch checkpoint with the result of an uninterrupted run."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from dfkd_edge.cli import main
from tests.conftest import read_json

# the 1-D signal teacher: a domain fit and a synthesis of seconds
SYNTH = ["--input-shape", "1,40", "--samples", "64", "--holdout", "16", "--synth-batch", "32", "--iterations", "5",
         "--epochs", "2", "--threads", "1", "--seed", "1"]


def _run(*args) -> int:
    try:
        main([str(a) for a in args])
        return 0
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 1


def _step(tmp_path_factory, before, command: str, *args):
    """A copy of the directory ``before`` with ``dfkd-edge COMMAND`` run on it."""
    out = tmp_path_factory.mktemp(command) / "run"
    shutil.copytree(before, out)
    assert _run(command, out, *args) == 0
    return out


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory, toy_teachers):
    out = tmp_path_factory.mktemp("synth") / "run"
    t = toy_teachers["signal"]
    assert _run("synthesize", t["teacher"], "--out", out, "--eval-data", t["eval"], *SYNTH) == 0
    return out


@pytest.fixture(scope="module")
def distilled(tmp_path_factory, synthesized):
    return _step(tmp_path_factory, synthesized, "distill")


@pytest.fixture(scope="module")
def exported(tmp_path_factory, distilled):
    return _step(tmp_path_factory, distilled, "export")


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory, exported):
    return _step(tmp_path_factory, exported, "calibrate", "--calib-samples", "16")


def test_synthesize_alone(synthesized):
    m = read_json(synthesized / "manifest.json")
    assert list(m["stages"]) == ["inspect", "synthesize"] and not m["complete"]
    ts = np.load(synthesized / "transfer_set.npz")
    assert ts["x"].shape == (80, 1, 40) and ts["holdout"].sum() == 16
    assert not (synthesized / "student.pt").exists() and not (synthesized / ".partial").exists()


def test_distill_alone(distilled):
    stages = read_json(distilled / "manifest.json")["stages"]
    assert "distill" in stages and stages["synthesize"].get("resumed")  # the transfer set was kept
    assert (distilled / "student.pt").is_file() and not (distilled / ".partial").exists()


def test_export_and_calibrate_alone(exported, calibrated):
    assert read_json(exported / "parity.json")["max_abs_diff"] >= 0
    assert (calibrated / "student_int8.onnx").is_file()
    cal = read_json(calibrated / "calibration.json")
    assert cal["samples"] == 16  # the option given to calibrate is the one used
    assert read_json(calibrated / "manifest.json")["config"]["calib"]["samples"] == 16


def test_build_alone(tmp_path_factory, calibrated):
    out = _step(tmp_path_factory, calibrated, "build", "--target", "jetson-orin-nano")
    assert (out / "build_jetson-orin-nano.sh").is_file() and (out / "student_trt_qdq.onnx").is_file()
    assert read_json(out / "manifest.json")["config"]["targets"] == ["jetson-orin-nano"]


def test_report_alone(tmp_path_factory, calibrated, capsys):
    out = _step(tmp_path_factory, calibrated, "report", "--latency-budget", "0.02")
    report = read_json(out / "report.json")
    assert report["quality"]["verdict"] in ("ok", "doubtful", "unreliable")
    assert report["accuracy"]["student_int8"] is not None  # the eval data given to synthesize
    assert read_json(out / "manifest.json")["complete"]
    assert "# dfkd-edge report" in capsys.readouterr().out


@pytest.mark.parametrize("command, before, first", [("distill", None, "synthesize"),
                                                    ("export", "synthesized", "distill"),
                                                    ("calibrate", "distilled", "export"),
                                                    ("build", "exported", "calibrate"),
                                                    ("report", "exported", "calibrate")])
def test_stage_refuses_without_its_inputs(cli, tmp_path, request, command, before, first):
    out = tmp_path / "run"
    if before is None:  # no run at all in the directory
        out.mkdir()
        code, _, err = cli(command, out)
        assert code == 2 and "holds no dfkd-edge run" in err and "dfkd-edge synthesize TEACHER --out" in err
        return
    shutil.copytree(request.getfixturevalue(before), out)
    code, _, err = cli(command, out, *(["--target", "jetson-orin-nano"] if command == "build" else []))
    assert code == 2 and f"run `dfkd-edge {first} {out}` first" in err, err


def _tree(root) -> dict:
    """Every file under ``root`` and its bytes' sha256."""
    import hashlib

    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("command, before, options", [
    ("distill", "synthesized-without-transfer-set", ["--width", "8", "--epochs", "2"]),
    ("export", "synthesized", ["--threads", "2"]),
    ("calibrate", "distilled", ["--calib-samples", "8", "--eval-data", "EVAL"]),
    ("build", "exported", ["--target", "jetson-orin-nano"]),
    ("report", "exported", ["--eval-data", "EVAL", "--latency-budget", "0.05"])])
def test_a_refused_command_changes_nothing_on_disk(cli, tmp_path, request, toy_teachers, command, before, options):
    out = tmp_path / "run"
    before, _, without = before.partition("-without-")
    shutil.copytree(request.getfixturevalue(before), out)
    if without:  # a file the command reads, gone
        (out / f"{without.replace('-', '_')}.npz").unlink()
    options = [toy_teachers["signal"]["eval"] if o == "EVAL" else o for o in options]
    was = _tree(out)
    code, _, err = cli(command, out, *options)
    assert code == 2 and "first" in err, err
    assert _tree(out) == was


def test_report_with_eval_data_evaluates_without_re_keying_calibration(cli, tmp_path, calibrated, toy_teachers):
    """The README's stage sequence ends with `report RUN --eval-data test.npz`: the eval data is read by the
    report, not by calibration (its check set is the held-out synthetic samples)."""
    out = tmp_path / "run"
    shutil.copytree(calibrated, out)
    other = tmp_path / "test.npz"
    shutil.copy(toy_teachers["signal"]["eval"], other)
    code, _, err = cli("report", out, "--eval-data", other, "--latency-budget", "0.05")
    assert code == 0, err
    stages = read_json(out / "manifest.json")["stages"]
    assert stages["calibrate"].get("resumed") and read_json(out / "report.json")["accuracy"]["student_int8"] is not None


def test_build_without_a_tensorrt_target_says_so(cli, calibrated):
    code, _, err = cli("build", calibrated)
    assert code == 2 and "have none: give one with --target" in err


def test_rerun_stage_makes_later_ones_stale(cli, tmp_path, calibrated):
    out = tmp_path / "run"
    shutil.copytree(calibrated, out)
    code, _, err = cli("distill", out, "--epochs", "3")
    assert code == 0, err
    stages = read_json(out / "manifest.json")["stages"]
    assert "distill ran again" in stages["export"]["stale"] and "stale" in stages["calibrate"]
    code, _, err = cli("report", out)
    assert code == 2 and "export stage is stale (distill ran again after it)" in err
    assert f"run `dfkd-edge export {out}` first" in err
    code, _, err = cli("export", out)
    assert code == 0 and "stale" not in read_json(out / "manifest.json")["stages"]["export"]
    code, _, err = cli("export", out)
    assert code == 0 and "export: up to date" in err


def test_python_api_convert_an_module_in_memory(tmp_path, toy_teachers):
    import dfkd_edge

    teacher = torch.jit.load(toy_teachers["signal"]["teacher"])
    r = dfkd_edge.convert(teacher, out=tmp_path / "o", input_shape=(1, 40), samples=64, holdout=16, synth_batch=32,
                          iterations=5, epochs=2, calib_samples=16, threads=1, latency_budget=0.02,
                          eval_data=toy_teachers["signal"]["eval"])
    assert r.verdict in ("ok", "doubtful", "unreliable") and r.report["accuracy"]["student_int8"] is not None
    assert r.artifacts["student_int8.onnx"].is_file() and r.artifacts["teacher_module.pt"].is_file()
    assert read_json(tmp_path / "o" / "manifest.json")["config"]["teacher"].endswith("teacher_module.pt")
    from dfkd_edge import api

    again = api.report(tmp_path / "o", latency_budget=0.02)
    assert again.report["accuracy"] == r.report["accuracy"]


def test_python_api_checks_options_as_the_cli_does(tmp_path, toy_teachers):
    import dfkd_edge
    from dfkd_edge import api
    from dfkd_edge.errors import UserError

    t = toy_teachers["signal"]["teacher"]
    with pytest.raises(UserError, match="^temperature must be"):  # in Python's words (the CLI says --temperature)
        dfkd_edge.convert(t, out=tmp_path / "a", input_shape=(1, 40), temperature=0.0)
    with pytest.raises(TypeError, match="unknown option"):
        dfkd_edge.convert(t, out=tmp_path / "b", epoch=3)
    with pytest.raises(TypeError, match="unknown option"):
        api.export(tmp_path / "b", epochs=3)  # not an export option
    with pytest.raises(UserError, match="holds no dfkd-edge run"):
        api.export(tmp_path / "nothing")


def test_distillation_continues_from_its_epoch_checkpoint(tmp_path):
    """A crash after epoch 2 of 5, then the same call: the student an uninterrupted run gives."""
    from dfkd_edge.distill import KDConfig, distill
    from dfkd_edge.models.students import build_from_recipe
    from dfkd_edge.models import create_student

    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 1, 40, generator=g).numpy()
    logits = torch.randn(96, 4, generator=g).numpy()
    _, recipe = create_student("auto", (1, 40), 4, 10_000, None)
    cfg = KDConfig(epochs=5, batch_size=32, mixup=0.0, seed=2)

    def fresh():
        torch.manual_seed(0)
        return build_from_recipe(recipe)

    whole = fresh()
    h_whole = distill(whole, x, logits, cfg)

    class Crash(Exception):
        pass

    class CrashAfter:
        def __init__(self, n):
            self.n = n

        def task(self, *a, **k):
            import contextlib

            outer = self

            class T:
                def advance(self, n=1, **f):
                    outer.n -= n
                    if outer.n <= 0:
                        raise Crash

            return contextlib.nullcontext(T())

    ck = tmp_path / "ck"
    with pytest.raises(Crash):
        distill(fresh(), x, logits, cfg, progress=CrashAfter(2), checkpoint_dir=ck)
    torch.manual_seed(123)  # whatever the process did in between
    resumed = fresh()
    h_resumed = distill(resumed, x, logits, cfg, checkpoint_dir=ck)
    assert h_resumed["loss"] == h_whole["loss"]
    sw, sr = whole.state_dict(), resumed.state_dict()
    assert all(torch.equal(sw[k], sr[k]) for k in sw)


def test_synthesize_refuses_a_missing_teacher_and_another_teachers_run(cli, tmp_path, synthesized, toy_teachers):
    """Over a run of the same teacher, synthesize is a stage command like the others (kept when up to date);
    over another teacher's run it refuses and says how to go on."""
    code, _, err = cli("synthesize", tmp_path / "missing.pt", "--out", tmp_path / "o")
    assert code == 2 and "missing.pt" in err
    run = tmp_path / "run"
    shutil.copytree(synthesized, run)
    was = _tree(run)
    code, _, err = cli("synthesize", toy_teachers["vector"]["teacher"], "--input-shape", "30", "--out", run)
    assert code == 2 and "already holds a dfkd-edge run" in err and "--resume" in err
    assert _tree(run) == was
    t = toy_teachers["signal"]
    code, _, err = cli("synthesize", t["teacher"], "--out", run, "--eval-data", t["eval"], *SYNTH)
    assert code == 0 and "inspect: up to date" in err and "synthesize: up to date" in err, err
