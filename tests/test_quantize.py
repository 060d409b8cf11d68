"""dfkd-edge quantize: the user's own model in int8, calibrated on samples synthesized from it, with
the calibration sources side by side; its contract, its errors, resume, and its separation from convert."""

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from dfkd_edge.backends import predict
from dfkd_edge.backends.onnxruntime import OrtRunner
from dfkd_edge.io import sha256
from dfkd_edge.teacher import load_teacher
from tests.conftest import read_json

#: a quantize configuration small enough for contract tests
QFAST = ["--holdout", "32", "--iterations", "10", "--synth-batch", "64", "--calib-samples", "32", "--threads", "1",
         "--latency-budget", "0.1"]
FILES = {"teacher.json", "transfer_set.npz", "model_fp32.onnx", "model_int8.onnx", "calibration.json",
         "calibration_sources.json", "parity.json", "latency.json", "manifest.json", "report.json", "report.md",
         "report.html"}


def _real_inputs(tmp_path: Path, digits_test: str, n: int = 64) -> Path:
    """Inputs without labels, as a user's --calib-data may be."""
    path = tmp_path / "real.npz"
    np.savez(path, x=np.load(digits_test)["x"][:n])
    return path


def test_quantize_writes_its_contract(cli, tmp_path, digits_teacher, digits_test):
    out = tmp_path / "q"
    code, stdout, err = cli("quantize", digits_teacher, "--out", out, "--eval-data", digits_test, "--calib-data",
                            _real_inputs(tmp_path, digits_test), "--target", "host-cpu", "--target",
                            "jetson-orin-nano", *QFAST)
    assert code == 0, err
    names = {p.name for p in out.iterdir()}
    assert FILES <= names and not any(n.startswith("student") for n in names)
    assert {"model_trt_qdq.onnx", "model_fp16.onnx", "build_jetson-orin-nano.sh"} <= names
    r = read_json(out / "report.json")
    assert r["flow"] == "quantize" and r["schema"] == 1
    assert r["model"]["path"] == digits_teacher and r["synthesis"]["purpose"] == "int8 calibration"
    assert r["synthesis"]["train"] == 32 and r["synthesis"]["holdout"] == 32
    acc = r["accuracy"]
    assert acc["dataset"] == Path(digits_test).name
    assert all(0.0 <= acc[k] <= 1.0 for k in ("model", "model_fp32", "model_int8"))
    assert acc["model_fp32"] == acc["model"]  # the ONNX fp32 model computes the user's model
    sources = {c["source"]: c for c in r["calibration_sources"]}
    assert set(sources) == {"synthetic", "gaussian", "real"}
    for c in sources.values():
        assert c["format"] == r["calibration"]["chosen_format"] and c["samples"] == 32
        assert 0.0 <= c["accuracy"] <= 1.0 and 0.0 <= c["agreement_with_fp32"] <= 1.0
        assert isinstance(c["float_layers"], list) and isinstance(c["guardrail_held"], bool)
        assert c["output_kl_to_fp32"] >= 0.0
    assert sources["synthetic"]["accuracy"] == acc["model_int8"]  # the synthetic row is what ships
    assert sources["synthetic"]["float_layers"] == r["calibration"]["guardrail"]["excluded"]
    host = [row for row in r["latency"] if row["device"] == "host-cpu"]
    combos = {(row["model"], row["precision"], row["backend"], row["batch"]) for row in host}
    for b in (1, 32):
        assert {("model", "fp32", "onnxruntime-cpu", b), ("model", "int8", "onnxruntime-cpu", b),
                ("model", "fp32", "torchscript", b)} <= combos
    assert {row["model"] for row in r["latency"]} == {"model"}
    recs = {x["target"]: x for x in r["recommended"]}
    assert recs["host-cpu"]["file"] in ("model_fp32.onnx", "model_int8.onnx")
    assert recs["jetson-orin-nano"]["file"] in ("model_trt_qdq.onnx", "model_fp16.onnx", "model_fp32.onnx")
    q = r["quality"]
    assert q["verdict"] in ("ok", "doubtful", "unreliable") and all(x["status"] == q["verdict"] for x in recs.values())
    assert q["signals"]["int8_agreement_real"] is not None and "int8_weighted_agreement" not in q["bounds"]
    assert "model_int8_qdq.engine" in (out / "build_jetson-orin-nano.sh").read_text()
    md = (out / "report.md").read_text()
    assert md in stdout and "## Calibration sources" in md and "Gaussian N(0, 1) noise" in md and "output KL to fp32" in md
    m = read_json(out / "manifest.json")
    assert m["flow"] == "quantize" and m["complete"]
    for stage in m["stages"].values():
        for name, digest in stage["files"].items():
            assert sha256(out / name) == digest


def test_the_onnx_models_compute_the_users_model(cli, tmp_path, digits_teacher):
    """Without eval data: the fp32 ONNX is the model, the int8 one agrees with it, the verdict judges
    the agreement on held-out synthetic samples."""
    out = tmp_path / "q"
    code, _, err = cli("quantize", digits_teacher, "--out", out, *QFAST)
    assert code == 0, err
    r = read_json(out / "report.json")
    assert r["accuracy"]["model_fp32"] is None and r["fidelity"]["model_fp32"] == 1.0
    assert {c["source"] for c in r["calibration_sources"]} == {"synthetic", "gaussian"}
    assert "int8_weighted_agreement" in r["quality"]["bounds"]
    assert r["quality"]["signals"]["int8_agreement_real"] is None
    x = np.load(out / "transfer_set.npz")["x"][:16]
    with torch.no_grad():
        ref = load_teacher(digits_teacher).runtime(torch.from_numpy(x)).numpy()
    with OrtRunner(out / "model_fp32.onnx", 1) as run32:
        np.testing.assert_allclose(predict(run32, x), ref, atol=1e-4, rtol=1e-4)
    assert any(n.op_type in ("QuantizeLinear", "QLinearConv", "ConvInteger")
               for n in onnx.load(str(out / "model_int8.onnx")).graph.node)


def test_exported_program_and_factory_models_quantize(cli, tmp_path):
    from dfkd_edge.models.teachers import digits_cnn_small_for_tests

    torch.manual_seed(0)
    m = digits_cnn_small_for_tests().eval()
    ep = torch.export.export(m, (torch.randn(2, 1, 8, 8),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(ep, tmp_path / "t.pt2")
    code, _, err = cli("quantize", tmp_path / "t.pt2", "--out", tmp_path / "o1", *QFAST)
    assert code == 0, err
    assert read_json(tmp_path / "o1/report.json")["model"]["format"] == "exported-program"
    torch.save(m.state_dict(), tmp_path / "w.pth")
    code, _, err = cli("quantize", tmp_path / "w.pth", "--factory", "dfkd_edge.models.teachers:digits_cnn_small_for_tests",
                       "--input-shape", "1,8,8", "--out", tmp_path / "o2", *QFAST)
    assert code == 0, err
    r = read_json(tmp_path / "o2/report.json")
    assert r["model"]["format"] == "state-dict" and r["parity"]["max_abs_diff"] < 1e-3


@pytest.mark.parametrize("case", ["method", "calib-shape", "calib-missing", "static-batch"])
def test_bad_input_is_refused_before_synthesis(cli, tmp_path, digits_teacher, case):
    model, extra = digits_teacher, []
    if case == "method":
        extra, words = ["--method", "adversarial"], "trains a student"
    elif case == "calib-shape":
        np.savez(tmp_path / "c.npz", x=np.zeros((8, 1, 4, 4), np.float32))
        extra, words = ["--calib-data", tmp_path / "c.npz"], "calibration data x has shape"
    elif case == "calib-missing":
        extra, words = ["--calib-data", tmp_path / "none.npz"], "does not exist"
    else:
        from dfkd_edge.models.teachers import digits_cnn_small_for_tests

        ep = torch.export.export(digits_cnn_small_for_tests().eval(), (torch.randn(2, 1, 8, 8),))
        torch.export.save(ep, tmp_path / "s.pt2")
        model, words = tmp_path / "s.pt2", "fixed batch of 2"
    code, _, err = cli("quantize", model, "--out", tmp_path / "q", *QFAST, *extra)
    assert code == 2 and words in err and err.count("\n") == 1
    assert not (tmp_path / "q/transfer_set.npz").exists()


def test_resume_skips_finished_stages_and_flows_stay_apart(cli, tmp_path, digits_teacher):
    out = tmp_path / "q"
    assert cli("quantize", digits_teacher, "--out", out, *QFAST)[0] == 0
    before = sha256(out / "model_int8.onnx")
    code, _, err = cli("quantize", digits_teacher, "--out", out, "--resume", *QFAST)
    assert code == 0, err
    stages = read_json(out / "manifest.json")["stages"]
    assert all(stages[n].get("resumed") for n in ("synthesize", "export", "calibrate", "calibration-sources"))
    assert sha256(out / "model_int8.onnx") == before
    code, _, err = cli("calibrate", out)
    assert code == 2 and "dfkd-edge quantize" in err
    code, _, err = cli("convert", digits_teacher, "--out", out, "--resume")
    assert code == 2 and "dfkd-edge quantize" in err and "--force" in err


def test_device_measurements_merge_into_a_quantize_report(cli, tmp_path, digits_teacher):
    """`dfkd-edge profile --trtexec-log ... --report DIR` on a quantize run: the rows are the model's and
    the target's recommendation moves from the estimate to them, marked with the run's verdict."""
    from tests.test_targets import TRT10

    out = tmp_path / "q"
    assert cli("quantize", digits_teacher, "--out", out, "--target", "jetson-orin-nano", *QFAST)[0] == 0
    logs = []
    for b in (1, 32):
        logs += ["--trtexec-log", tmp_path / f"model_int8_qdq.engine.b{b}.log"]
        (tmp_path / f"model_int8_qdq.engine.b{b}.log").write_text(TRT10.replace("input:32x", f"input:{b}x"))
    code, _, err = cli("profile", *logs, "--target", "jetson-orin-nano", "--report", out)
    assert code == 0, err
    r = read_json(out / "report.json")
    remote = [x for x in r["latency"] if x["kind"] == "measured-remote"]
    assert remote and {x["model"] for x in remote} == {"model"}
    assert {x["batch"] for x in remote} == {1, 32}
    rec = {x["target"]: x for x in r["recommended"]}["jetson-orin-nano"]
    if r["targets"]["tensorrt"]["guardrail"].get("int8_usable", True):  # the int8 rows measured decide
        assert rec["kind"] == "measured-remote" and rec["file"] == "model_trt_qdq.onnx"
    else:  # every layer had to stay in float (the numerics decide that): int8 rows cannot win
        assert rec["file"] == "model_fp16.onnx"
    assert rec["status"] == r["quality"]["verdict"]
    assert "Calibration sources" in (out / "report.md").read_text()


def _onnx_of(model, path: Path, batch=None, name: str = "x") -> Path:
    torch.onnx.export(model.eval(), (torch.zeros(2, 1, 8, 8),), str(path), dynamo=False, opset_version=17,
                      input_names=[name], output_names=["y"],
                      dynamic_axes=None if batch else {name: {0: "n"}, "y": {0: "n"}})
    return path


def test_an_onnx_model_with_its_pytorch_source(cli, tmp_path, digits_teacher, digits_test):
    """The user's ONNX file is what gets calibrated (byte for byte, whatever its input is called); the
    calibration set is synthesized from --source."""
    onnx_path = _onnx_of(load_teacher(digits_teacher).runtime, tmp_path / "mine.onnx")
    out = tmp_path / "q"
    code, _, err = cli("quantize", onnx_path, "--source", digits_teacher, "--out", out, "--eval-data", digits_test,
                       "--target", "jetson-orin-nano", *QFAST)
    assert code == 0, err
    assert sha256(out / "model_fp32.onnx") == sha256(onnx_path)
    r = read_json(out / "report.json")
    assert r["model"]["onnx"] == str(onnx_path) and r["model"]["path"] == digits_teacher
    assert r["accuracy"]["model_fp32"] == r["accuracy"]["model"]
    assert "--minShapes=x:1x1x8x8" in (out / "build_jetson-orin-nano.sh").read_text()  # its own input name
    assert "mine.onnx" in (out / "report.md").read_text().splitlines()[0]


@pytest.mark.parametrize("case", ["not-onnx", "other-network", "fixed-batch", "operator"])
def test_onnx_model_errors(cli, tmp_path, digits_teacher, case):
    from dfkd_edge.models.teachers import digits_cnn_small_for_tests

    mine = load_teacher(digits_teacher).runtime
    model, extra = _onnx_of(mine, tmp_path / "m.onnx"), ["--source", digits_teacher]
    if case == "operator":  # an operator the PyTorch interpreter of ONNX graphs does not know, no --source
        import onnx

        m = onnx.load(str(model))
        next(n for n in m.graph.node if n.op_type == "Relu").op_type = "Selu"
        onnx.save(m, str(model))
        extra, words = [], "operator(s) Selu"
    elif case == "not-onnx":
        model, words = digits_teacher, "not an ONNX file"
    elif case == "other-network":
        torch.manual_seed(0)
        model, words = _onnx_of(digits_cnn_small_for_tests(), tmp_path / "other.onnx"), "do not compute the same"
    else:
        model, words = _onnx_of(mine, tmp_path / "b.onnx", batch=2), "fixed batch of 2"
    code, _, err = cli("quantize", model, *extra, "--out", tmp_path / "q", *QFAST)
    assert code == 2 and words in err and err.count("\n") == 1
    assert not (tmp_path / "q/transfer_set.npz").exists()


def test_an_onnx_model_alone(cli, tmp_path, digits_teacher, digits_test):
    """Without --source the graph itself is run in PyTorch to synthesize from. torch.onnx folds the
    digits teacher's convolution BatchNorms into the convolutions: the head's BatchNorm is all that is
    left to invert and to read the input domain through; a domain the user gives is used instead."""
    from dfkd_edge.export.onnx_torch import load_onnx_module

    onnx_path = _onnx_of(load_teacher(digits_teacher).runtime, tmp_path / "mine.onnx")
    module, shape = load_onnx_module(onnx_path)
    x = torch.from_numpy(np.load(digits_test)["x"][:64])
    with torch.no_grad():
        np.testing.assert_allclose(module(x).numpy(), load_teacher(digits_teacher).runtime(x).numpy(), atol=1e-4)
    assert shape == (1, 8, 8) and len(load_teacher(onnx_path).spec.bn_layers) == 1  # the head's BatchNorm1d
    out = tmp_path / "q"
    code, _, err = cli("quantize", onnx_path, "--out", out, "--eval-data", digits_test, *QFAST)
    assert code == 0, err
    r = read_json(out / "report.json")
    assert r["model"]["format"] == "onnx" and r["model"]["onnx"] == str(onnx_path)
    assert sha256(out / "model_fp32.onnx") == sha256(onnx_path)
    assert r["model"]["input_domain"]["source"] == "teacher-bn"  # read through every layer before that one
    assert {x["backend"] for x in r["latency"]} == {"onnxruntime-cpu"}  # no PyTorch row for dfkd-edge's interpreter
    code, _, err = cli("quantize", onnx_path, "--out", tmp_path / "q2", "--input-range", "-1,1", *QFAST)
    assert code == 0, err
    assert read_json(tmp_path / "q2/report.json")["model"]["input_domain"]["source"] == "user"


def test_quantize_verdict_speaks_of_the_model_and_its_calibration_set(tmp_path):
    """quantize has no teacher and no transfer set: its reasons name the user's model and the calibration set."""
    from dfkd_edge.quality import assess_calibration

    m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).eval()  # no BatchNorm: nothing to read
    torch.jit.save(torch.jit.script(m), tmp_path / "m.pt")
    model = load_teacher(tmp_path / "m.pt", (1, 8, 8))
    logits = np.zeros((32, 10), np.float32)
    logits[:, 0] = 1.0  # one class only: uneven coverage, nine classes never predicted
    from dfkd_edge.domain import InputDomain

    assumed = InputDomain([0.0], [1.0], source="assumed")
    q = assess_calibration(model, logits, np.zeros((8, 1, 8, 8), np.float32),
                           {"model_int8": 0.95, "model_int8_weighted": 0.95}, None, assumed, 0.99)
    assert q["verdict"] == "unreliable" and len(q["reasons"]) >= 4
    assert not any("teacher" in r or "transfer set" in r for r in q["reasons"]), q["reasons"]
    assert any("calibration set" in r for r in q["reasons"]) and any("the model's input domain" in r for r in q["reasons"])


def test_output_kl_measures_distance_between_output_distributions():
    from dfkd_edge.stages.sources import output_kl

    a = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]], np.float32)
    assert output_kl(a, a) == 0.0 and abs(output_kl(a, a + 7.0)) < 1e-12  # softmax ignores a shift
    p, q = np.array([[0.0, 0.0]]), np.array([[np.log(3.0), 0.0]])  # (1/2, 1/2) against (3/4, 1/4)
    assert abs(output_kl(p, q) - (0.5 * np.log(0.5 / 0.75) + 0.5 * np.log(0.5 / 0.25))) < 1e-12
