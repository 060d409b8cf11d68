"""Each bad input exits with code 2 and one line that says what is wrong and what to do."""

import pickle

import numpy as np
import pytest
import torch
from torch import nn

from tests.conftest import FAST


def _assert_one_line_exit2(code, err, *needles):
    assert code == 2, err
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n.lower() in lines[0].lower(), lines[0]


def test_missing_teacher_file(cli, tmp_path):
    code, _, err = cli("convert", tmp_path / "nope.pt", "--out", tmp_path / "o")
    _assert_one_line_exit2(code, err, "does not exist")


def test_empty_teacher_file(cli, tmp_path):
    (tmp_path / "e.pt").write_bytes(b"")
    code, _, err = cli("convert", tmp_path / "e.pt", "--out", tmp_path / "o")
    _assert_one_line_exit2(code, err, "empty")


def test_file_that_is_not_a_model(cli, tmp_path):
    (tmp_path / "notes.pt").write_text("hello, not a model")
    code, _, err = cli("convert", tmp_path / "notes.pt", "--out", tmp_path / "o")
    _assert_one_line_exit2(code, err, "not a model file", "torchscript")


def test_truncated_torchscript(cli, tmp_path, digits_teacher):
    data = open(digits_teacher, "rb").read()
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    code, _, err = cli("convert", tmp_path / "cut.pt", "--out", tmp_path / "o")
    _assert_one_line_exit2(code, err)


class _Payload:
    def __reduce__(self):
        import os
        return (os.system, ("touch PWNED_BY_PICKLE",))


def test_pickled_module_is_refused_and_its_payload_never_runs(cli, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"model": _Payload()}, tmp_path / "evil.pt")
    code, _, err = cli("convert", tmp_path / "evil.pt", "--out", tmp_path / "o")
    _assert_one_line_exit2(code, err, "pickle")
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()
    # the same file given as a state_dict goes through weights_only=True and is refused too
    code, _, err = cli("convert", tmp_path / "evil.pt", "--factory", "dfkd_edge.models.teachers:digits_cnn",
                       "--input-shape", "1,8,8", "--out", tmp_path / "o")
    _assert_one_line_exit2(code, err, "weights_only")
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()


def test_plain_pickle_file_is_refused(cli, tmp_path):
    (tmp_path / "m.pkl").write_bytes(pickle.dumps({"a": 1}))
    code, _, err = cli("convert", tmp_path / "m.pkl", "--out", tmp_path / "o")
    _assert_one_line_exit2(code, err)


def test_input_shape_the_teacher_rejects(cli, tmp_path, toy_teachers):
    code, _, err = cli("convert", toy_teachers["signal"]["teacher"], "--input-shape", "3,40", "--out", tmp_path / "o")
    _assert_one_line_exit2(code, err, "rejected", "--input-shape")


@pytest.mark.parametrize("shape", ["a,b", "1,2,3,4", "0"])
def test_malformed_input_shape(cli, tmp_path, toy_teachers, shape):
    code, _, err = cli("convert", toy_teachers["signal"]["teacher"], "--input-shape", shape, "--out", tmp_path / "o")
    _assert_one_line_exit2(code, err, "--input-shape")


def test_missing_input_shape(cli, tmp_path, toy_teachers):
    code, _, err = cli("convert", toy_teachers["vector"]["teacher"], "--out", tmp_path / "o")
    _assert_one_line_exit2(code, err, "--input-shape")


class _NotAClassifier(nn.Module):
    def forward(self, x):
        return x.mean(1)  # (N, L): fine rank but it is the input, so (N, 40) for 1x40 -> ok; use 3-D below


class _ThreeD(nn.Module):
    def forward(self, x):
        return x * 2.0  # (N, 1, 40): not (N, classes)


class _Scalarish(nn.Module):
    def forward(self, x):
        return x.sum(dim=(1, 2))  # (N,)


@pytest.mark.parametrize("module", [_ThreeD(), _Scalarish()])
def test_teacher_output_not_n_by_classes(cli, tmp_path, module):
    p = tmp_path / "bad.pt"
    torch.jit.save(torch.jit.script(module), str(p))
    code, _, err = cli("convert", p, "--input-shape", "1,40", "--out", tmp_path / "o")
    _assert_one_line_exit2(code, err, "(N, classes)")


def test_teacher_with_nan_weights(cli, tmp_path):
    lin = nn.Linear(30, 3)
    with torch.no_grad():
        lin.weight[0, 0] = float("nan")
    p = tmp_path / "nan.pt"
    torch.jit.save(torch.jit.script(lin), str(p))
    code, _, err = cli("convert", p, "--input-shape", "30", "--out", tmp_path / "o")
    _assert_one_line_exit2(code, err, "NaN", "weight")


class _NanOut(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(30, 3)

    def forward(self, x):
        return torch.sqrt(self.fc(x) - 1e6)  # finite weights, NaN outputs


def test_teacher_with_nan_output(cli, tmp_path):
    p = tmp_path / "nan_out.pt"
    torch.jit.save(torch.jit.script(_NanOut()), str(p))
    code, _, err = cli("convert", p, "--input-shape", "30", "--out", tmp_path / "o")
    _assert_one_line_exit2(code, err, "NaN", "outputs")


@pytest.mark.parametrize("arrays,needle", [
    ({"x": np.zeros((5, 1, 9, 9), np.float32), "y": np.zeros(5, np.int64)}, "shape"),
    ({"x": np.zeros((5, 1, 8, 8), np.float32), "y": np.zeros(4, np.int64)}, "one label per x"),
    ({"inputs": np.zeros((5, 1, 8, 8), np.float32), "y": np.zeros(5, np.int64)}, "lacks"),
    ({"x": np.zeros((5, 1, 8, 8), np.float32), "y": np.full(5, 10, np.int64)}, "classes"),
    ({"x": np.zeros((5, 1, 8, 8), np.float32), "y": np.full(5, 0.5)}, "integers"),
])
def test_eval_data_that_does_not_fit(cli, tmp_path, digits_teacher, arrays, needle):
    p = tmp_path / "eval.npz"
    np.savez(p, **arrays)
    code, _, err = cli("convert", digits_teacher, "--eval-data", p, "--out", tmp_path / "o")
    _assert_one_line_exit2(code, err, needle)


def test_eval_data_not_an_npz(cli, tmp_path, digits_teacher):
    (tmp_path / "eval.npz").write_text("x,y\n1,2\n")
    code, _, err = cli("convert", digits_teacher, "--eval-data", tmp_path / "eval.npz", "--out", tmp_path / "o")
    _assert_one_line_exit2(code, err, "npz")


def test_output_directory_that_cannot_be_written(cli, tmp_path, digits_teacher):
    (tmp_path / "afile").write_text("x")
    code, _, err = cli("convert", digits_teacher, "--out", tmp_path / "afile" / "sub")
    _assert_one_line_exit2(code, err, "--out")
    code, _, err = cli("convert", digits_teacher, "--out", tmp_path / "afile")
    _assert_one_line_exit2(code, err, "--out")


def test_unknown_method_target_and_student(cli, tmp_path, digits_teacher):
    code, _, err = cli("convert", digits_teacher, "--method", "magic", "--out", tmp_path / "o")
    _assert_one_line_exit2(code, err, "--method", "deepinversion")
    code, _, err = cli("convert", digits_teacher, "--target", "toaster", "--out", tmp_path / "o")
    _assert_one_line_exit2(code, err, "--target", "host-cpu")
    code, _, err = cli("convert", digits_teacher, "--student", "resnet999", *FAST, "--out", tmp_path / "o2")
    _assert_one_line_exit2(code, err, "--student")


def test_synth_start_unknown_or_not_for_this_teacher(cli, tmp_path, digits_teacher, toy_teachers):
    code, _, err = cli("convert", digits_teacher, *FAST, "--synth-start", "clouds", "--out", tmp_path / "o")
    _assert_one_line_exit2(code, err, "--synth-start", "dead-leaves")
    assert not (tmp_path / "o").exists()
    vector = toy_teachers["vector"]["teacher"]
    code, _, err = cli("convert", vector, "--input-shape", "30", *FAST, "--synth-start", "dead-leaves",
                       "--out", tmp_path / "o2")
    _assert_one_line_exit2(code, err, "--synth-start dead-leaves", "use auto or noise")


@pytest.mark.parametrize("flag,value,needle", [
    ("--threads", "-1", "0 (min(4, cores)) or a positive count"), ("--temperature", "0", "positive"),
    ("--temperature", "nan", "positive"), ("--mixup", "-1", "0 (off) or positive"),
    ("--width", "0", "positive channel count"), ("--batch-size", "0", "positive"), ("--iterations", "0", "positive")])
def test_numbers_out_of_range_are_exit_2_before_any_work(cli, tmp_path, digits_teacher, flag, value, needle):
    code, _, err = cli("convert", digits_teacher, *FAST, flag, value, "--out", tmp_path / "o")
    _assert_one_line_exit2(code, err, flag, needle)
    assert not (tmp_path / "o").exists()


def test_wrong_student_family_for_rank(cli, tmp_path, digits_teacher):
    code, _, err = cli("convert", digits_teacher, "--student", "mlp", *FAST, "--out", tmp_path / "o")
    _assert_one_line_exit2(code, err, "conv2d")


def test_debug_shows_the_traceback(cli, tmp_path):
    code, _, err = cli("--debug", "convert", tmp_path / "nope.pt", "--out", tmp_path / "o")
    assert code == 2 and "Traceback" in err and "does not exist" in err


def test_bad_input_writes_nothing_outside_the_output_directory(cli, tmp_path, monkeypatch, toy_teachers):
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    bad = tmp_path / "eval.npz"
    np.savez(bad, x=np.zeros((5, 3, 40), np.float32), y=np.zeros(5, np.int64))
    code, _, err = cli("convert", toy_teachers["signal"]["teacher"], "--input-shape", "1,40", "--eval-data", bad,
                       "--out", work / "o")
    _assert_one_line_exit2(code, err, "shape")
    written = [p for p in work.rglob("*") if p.is_file()]
    assert written == [], written  # the run failed before writing anything, and left no temp file


def test_batch_that_does_not_fit_in_memory(tmp_path, digits_teacher):
    """A real allocation failure becomes exit 2 and advice. The address space is capped at 256 MiB over what the
    synthesis batch may hold (``plan.SAVED_BYTES``): torch alone maps more than that, so the full batch cannot
    fit on any machine, while starting up does; one epoch keeps a run that did fit short, so it fails on the exit
    code rather than running on."""
    import resource
    import subprocess
    import sys

    from dfkd_edge.plan import SAVED_BYTES

    limit = SAVED_BYTES + 2**28
    assert limit >= 2**30

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    r = subprocess.run([sys.executable, "-m", "dfkd_edge.cli", "convert", digits_teacher, "--out", str(tmp_path / "o"),
                        "--samples", "20000", "--synth-batch", "20000", "--iterations", "2", "--epochs", "1",
                        "--threads", "1"],
                       capture_output=True, text=True, preexec_fn=cap, timeout=300)
    assert r.returncode == 2, r.stderr
    last = r.stderr.strip().splitlines()[-1]
    assert "does not fit in memory" in last and "--synth-batch" in last and "Traceback" not in r.stderr


def test_target_given_twice(cli, tmp_path, digits_teacher):
    code, _, err = cli("convert", digits_teacher, "--target", "jetson-orin-nano", "--target", "jetson-orin-nano",
                       "--out", tmp_path / "o")
    _assert_one_line_exit2(code, err, "--target given twice", "jetson-orin-nano")


def test_profile_bad_input(cli, tmp_path):
    code, _, err = cli("profile")
    _assert_one_line_exit2(code, err, "give the MODEL")
    code, _, err = cli("profile", tmp_path / "nope.onnx")
    _assert_one_line_exit2(code, err, "does not exist")
    (tmp_path / "m.bin").write_bytes(b"x")
    code, _, err = cli("profile", tmp_path / "m.bin")
    _assert_one_line_exit2(code, err, "expected .onnx")
    log = tmp_path / "failed.log"
    log.write_text("&&&& FAILED TensorRT.trtexec [TensorRT v100300]\n")
    code, _, err = cli("profile", "--trtexec-log", log, "--target", "jetson-orin-nano")
    _assert_one_line_exit2(code, err, "Performance summary")
