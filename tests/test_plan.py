"""The run's plan: the probe of what one sample costs here (dfkd_edge.cost), each stage's expected seconds and
memory from it (dfkd_edge.plan), recorded in the run, printed before the work, set against the stage times in the
report, and kept by a resumed run. No test depends on how fast this machine is: they check counts, memory and
the arithmetic, never a time window."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from dfkd_edge import cost, plan as planning
from dfkd_edge.config import QUANTIZE_TIME_BUDGET, ConvertConfig, budget_seconds
from dfkd_edge.cost import Probe
from dfkd_edge.backends.base import predict_batch
from dfkd_edge.distill import KDConfig, distill
from dfkd_edge.quality import module_logits
from tests.conftest import read_json
from tests.test_quantize import QFAST


def _net():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 4)).eval()


def test_saved_memory_grows_with_the_positions_and_leaves_the_weights_out():
    net = _net()
    small, large = (cost.saved_per_sample(net, (3, n, n)) for n in (16, 32))
    assert 3.5 < large / small < 4.5  # four times the positions
    assert small < 16 * 16 * (3 + 8 * 4) * 4 + sum(p.numel() * 4 for p in net.parameters())
    p = cost.probe(net, (3, 16, 16), batch=4, saved_bytes=small)
    assert p.forward_s > 0 and p.train_s > 0 and p.batch == 4 and p.saved_bytes == small
    assert Probe.from_dict(p.to_dict()).to_dict() == p.to_dict()


def test_a_distillation_batch_run_in_parts_takes_the_same_step_as_run_whole():
    """Without BatchNorm or mixup (the parts' statistics and pairings are the only things parts change) the
    summed gradients of the parts are the whole batch's: the trained weights agree."""
    x = np.random.default_rng(0).normal(size=(40, 3, 8, 8)).astype(np.float32)
    logits = np.random.default_rng(1).normal(size=(40, 5)).astype(np.float32)
    cfg = KDConfig(epochs=2, batch_size=16, mixup=0.0, seed=0)
    trained = []
    for micro in (None, 16, 5, 3):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 36, 5))
        history = distill(net, x, logits, cfg, micro_batch=micro)
        trained.append((torch.cat([p.detach().flatten() for p in net.parameters()]), history["loss"]))
    whole = trained[0]
    assert torch.equal(trained[1][0], whole[0]), "a part as large as the batch is the batch"
    for weights, losses in trained[2:]:
        assert torch.allclose(weights, whole[0], atol=1e-5) and not torch.equal(weights, whole[0] * 0)
        assert np.allclose(losses, whole[1], rtol=1e-5)


def test_the_distillation_part_follows_what_the_student_keeps_and_leaves_it_as_it_was():
    net = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU(), nn.Flatten(),
                        nn.Linear(64 * 64 * 64, 3))
    saved = cost.saved_per_sample(net, (3, 64, 64))  # moves the statistics: what is kept now must not move
    before = {k: v.clone() for k, v in net.state_dict().items()}
    part = planning.distill_micro_batch(net, (3, 64, 64), 100_000)
    assert part == planning.SAVED_BYTES // saved < 100_000
    assert planning.distill_micro_batch(net, (3, 64, 64), 4) == 4
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items()), "BatchNorm statistics unmoved"


def test_the_synthesis_batch_is_cut_to_the_memory_the_model_keeps():
    assert planning.synthesis_batch(256, 1 << 20) == 256  # 1 MB a sample: 256 MB
    assert planning.synthesis_batch(256, 100 << 20) == planning.SAVED_BYTES // (100 << 20)
    assert planning.synthesis_batch(256, 1 << 40) == 1 and planning.synthesis_batch(256, None) == 256


def _probe(train_s=0.01, forward_s=0.004, saved=10 << 20):
    return Probe(forward_s=forward_s, train_s=train_s, saved_bytes=saved, batch=8, device="cpu")


def test_the_plan_multiplies_what_each_stage_repeats():
    cfg = ConvertConfig(teacher="t", out="o", samples=1000, holdout=24, iterations=50)
    p = planning.plan(cfg, "quantize", "deepinversion", _probe())
    rows = {r["stage"]: r for r in p["stages"]}
    assert list(rows) == ["synthesize", "export", "calibrate", "calibration-sources", "profile", "evaluate", "report"]
    assert rows["synthesize"]["seconds"] == pytest.approx(1024 * (50 * 0.01 + 0.004) + planning.FIXED_S, abs=0.1)
    with_setup = planning.plan(cfg, "quantize", "deepinversion", Probe(**{**_probe().to_dict(), "setup_s": 2.0}))
    batches = -(-1024 // planning.synthesis_batch(cfg.synth_batch, 10 << 20))  # each batch's start and set-up
    assert with_setup["stages"][0]["seconds"] == pytest.approx(rows["synthesize"]["seconds"] + 2.0 * batches, abs=0.1)
    assert rows["synthesize"]["peak_bytes"] == min(cfg.synth_batch, planning.SAVED_BYTES // (10 << 20)) * (10 << 20)
    assert p["total_s"] == pytest.approx(sum(r["seconds"] for r in p["stages"]), abs=0.2) and p["complete"]
    student = _probe(train_s=0.001, forward_s=0.0005)
    c = {r["stage"]: r for r in planning.plan(cfg, "convert", "deepinversion", _probe(), student)["stages"]}
    assert c["distill"]["seconds"] == pytest.approx(cfg.kd.epochs * 1000 * (0.001 + 0.004) + planning.FIXED_S, abs=0.1)
    # evaluate: ONNX fp32 and int8 on the held-out samples, the teacher on the BatchNorm check, and in convert the
    # teacher and the student on the verdict's probe set (f: ONNX Runtime falls back to the torch probe here)
    onnx = 0.004 * (1 + planning.INT8_FORWARD)
    assert rows["evaluate"]["seconds"] == pytest.approx(24 * onnx + 24 * 0.004 + planning.FIXED_S, abs=0.1)
    assert c["evaluate"]["seconds"] == pytest.approx(24 * 0.0005 * (1 + planning.INT8_FORWARD) + 24 * 0.004 + 256 * (
        0.004 + 0.0005) + planning.FIXED_S, abs=0.1)
    adversarial = planning.plan(cfg, "convert", "adversarial", _probe(), student)
    assert adversarial["stages"][0]["seconds"] is None and not adversarial["complete"]
    text = "\n".join(planning.lines(p, _probe()))
    assert "synthesize" in text and "total" in text


def test_calibration_is_planned_as_one_range_pass_then_each_format_and_each_source_checked():
    cfg = ConvertConfig(teacher="t", out="o", samples=1000, holdout=24, iterations=50)
    f, formats = 0.004, tuple(cfg.calib.formats)
    pr = _probe()
    one = planning.calibration_seconds(cfg, pr)
    every = planning.calibration_seconds(cfg, pr, formats)
    assert every - one == pytest.approx(
        24 * f * (sum(planning.INT8_CHECK_FORWARD[x] for x in formats) - planning.INT8_FORWARD)
        + (len(formats) - 1) * (planning.QUANTIZE_CALL_S + planning.P50_BUDGET_S))
    # the calibration pass copies every tensor the nodes output: the ONNX graph's where the probe read it, else the
    # activations autograd keeps; the pre-processing follows the ONNX file's size
    onnx = Probe(forward_s=f, train_s=0.01, saved_bytes=10 << 20, batch=8, device="cpu", onnx_bytes=50 << 20,
                 activation_bytes=30 << 20)
    assert planning.calibration_seconds(cfg, onnx) - one == pytest.approx(
        (50 << 20) * planning.PRE_PROCESS_S_PER_BYTE + cfg.calib.samples * (20 << 20) * planning.CALIBRATION_S_PER_BYTE)
    rows = {r["stage"]: r for r in planning.plan(cfg, "quantize", "deepinversion", pr, eval_rows=500)["stages"]}
    assert rows["calibrate"]["seconds"] == pytest.approx(every + planning.FIXED_S, abs=0.1)
    # one other source (Gaussian); fp32 and both int8 models on the 500 eval inputs
    assert rows["calibration-sources"]["seconds"] == pytest.approx(
        one + 500 * f * (1 + 2 * planning.INT8_FORWARD) + planning.FIXED_S, abs=0.1)
    assert "build" not in rows
    # where the probe timed each int8 format, its check pass runs at that speed, and the other sources' int8 models
    # (the shipped format) at the fastest
    timed = {"qdq-u8s8": 0.006, "qoperator-u8s8": 0.003, "qdq-s8s8": 0.012}
    pt = Probe(**{**pr.to_dict(), "ort_forward_s": f, "int8_forward_s": timed})
    assert Probe.from_dict(pt.to_dict()).int8_forward_s == timed
    assert planning.calibration_seconds(cfg, pt, formats) - planning.calibration_seconds(cfg, pt) == pytest.approx(
        24 * (sum(timed.values()) - 0.003) + (len(formats) - 1) * (planning.QUANTIZE_CALL_S + planning.P50_BUDGET_S))
    rows_t = {r["stage"]: r for r in planning.plan(cfg, "quantize", "deepinversion", pt, eval_rows=500)["stages"]}
    assert rows_t["calibration-sources"]["seconds"] == pytest.approx(
        planning.calibration_seconds(cfg, pt) + 500 * (f + 2 * 0.003) + planning.FIXED_S, abs=0.1)
    # a format that failed in the probe costs its rewrite alone (calibration records the failure, nothing runs)
    failed = Probe(**{**pt.to_dict(), "int8_forward_s": {**timed, "qdq-s8s8": None}})
    assert planning.calibration_seconds(cfg, pt, formats) - planning.calibration_seconds(cfg, failed, formats) == (
        pytest.approx(24 * 0.012))
    assert failed.int8_share(None, 0.5) == pytest.approx(0.003 / f)
    assert "qoperator-u8s8 3 ms" in "\n".join(planning.lines(planning.plan(cfg, "quantize", "deepinversion", pt), pt))
    cfg.targets = ("host-cpu", "jetson-orin-nano")
    rows = {r["stage"]: r for r in planning.plan(cfg, "quantize", "deepinversion", pr)["stages"]}
    untimed = planning.calibration_seconds(cfg, pr, timed=False)
    assert untimed == pytest.approx(one - 2 * planning.P50_BUDGET_S)
    assert rows["build"]["seconds"] >= untimed and "TensorRT" in rows["build"]["work"]


def test_the_verdicts_student_pass_runs_in_batches_with_the_result_of_one_pass():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 62 * 62, 3)).eval()
    x = torch.randn(300, 3, 64, 64)
    assert predict_batch(x) < 300  # more than one batch
    with torch.no_grad():
        assert torch.allclose(module_logits(net, x), net(x), atol=1e-6)


def test_the_plan_against_the_stage_times():
    p = {"stages": [{"stage": "synthesize", "seconds": 100.0}, {"stage": "export", "seconds": 10.0},
                    {"stage": "calibrate", "seconds": None}], "probe": {"x": 1}}
    a = planning.against(p, {"synthesize": 120.0, "export": 0.0, "calibrate": 5.0})
    assert a["stages"] == [{"stage": "synthesize", "planned_s": 100.0, "actual_s": 120.0, "actual_over_planned": 1.2}]
    assert a["actual_over_planned"] == 1.2 and planning.against(None, {}) is None


def test_a_run_prints_records_and_reports_its_plan_and_a_resume_keeps_the_probe(cli, tmp_path, digits_teacher,
                                                                                  monkeypatch):
    out = tmp_path / "q"
    code, _, err = cli("quantize", digits_teacher, "--out", out, *QFAST)
    assert code == 0, err
    assert "plan on this machine" in err and "synthesize" in err.split("plan on this machine")[1]
    recorded = read_json(out / "manifest.json")["plan"]
    assert recorded["probe"]["saved_bytes"] > 0 and recorded["teachers"]
    assert recorded["probe"]["loop"] and "a synthesis step per sample" in err  # timed in the synthesis loop
    # the shipped network timed under ONNX Runtime, in fp32 and quantized to each format calibration tries
    formats = read_json(out / "manifest.json")["config"]["calib"]["formats"]
    assert recorded["probe"]["ort_forward_s"] > 0 and recorded["probe"]["activation_bytes"] > 0
    assert sorted(recorded["probe"]["int8_forward_s"]) == sorted(formats)
    assert all(v > 0 for v in recorded["probe"]["int8_forward_s"].values())
    report = read_json(out / "report.json")
    assert report["plan"]["stages"] and report["plan"]["stages"][0]["stage"] == "synthesize"
    budget = report["plan"]["budget"]  # quantize's own budget: a small model's defaults fit it, nothing is cut
    assert budget["budget_s"] == budget_seconds(QUANTIZE_TIME_BUDGET) and budget["fits"]
    assert budget["chosen"] == budget["requested"] and "the defaults fit" in err

    def refuse(*a, **k):
        raise AssertionError("a resumed run probes again")

    monkeypatch.setattr("dfkd_edge.stages.synthesize.probe", refuse)
    code, _, err = cli("quantize", digits_teacher, "--out", out, "--resume", *QFAST)
    assert code == 0, err
    assert read_json(out / "manifest.json")["stages"]["synthesize"].get("resumed")
    assert json.dumps(read_json(out / "manifest.json")["plan"]["probe"]) == json.dumps(recorded["probe"])


def test_the_budget_cuts_each_lever_to_its_floor_before_the_next_and_the_last_to_what_fits():
    cfg = ConvertConfig(teacher="t", out="o", samples=4096, iterations=200)

    def planned(c):  # seconds linear in each lever, as the plan's are
        return c.samples * c.iterations * 0.001 + c.kd.epochs * c.samples * 0.0005

    b = planning.fit_budget(cfg, "convert", 500.0, 10.0, planned)
    epochs, holdout = ConvertConfig(teacher="t", out="o").kd.epochs, ConvertConfig(teacher="t", out="o").holdout
    assert b["requested"] == {"iterations": 200, "epochs": epochs, "samples": 4096, "holdout": holdout}
    assert b["chosen"]["iterations"] == 50 and b["chosen"]["samples"] == 4096 and b["fits"]
    assert b["below_floors"] == {} and planning.below_floors_reason(b) is None
    assert planned(cfg) + 10 <= 500 and cfg.kd.epochs == b["chosen"]["epochs"]
    cfg.kd.epochs += 1
    assert planned(cfg) + 10 > 500  # the largest that fits
    roomy = ConvertConfig(teacher="t", out="o")
    assert planning.fit_budget(roomy, "convert", 1e9, 0.0, planned)["chosen"] == {
        "iterations": 200, "epochs": epochs, "samples": 4096, "holdout": holdout}
    tight = ConvertConfig(teacher="t", out="o", samples=256, holdout=256, iterations=50)
    tight.calib.samples = 256
    b = planning.fit_budget(tight, "quantize", 1.0, 0.0, planned)
    assert not b["fits"] and b["chosen"] == {"iterations": 10, "samples": 64, "holdout": 200}
    assert tight.calib.samples == 64 and "WARNING" in planning.budget_lines(b)[-1] and b["below_floors"] == {}


def test_a_convert_budget_under_the_floors_cuts_again_in_order_and_the_verdict_says_so():
    def planned(c):
        return (c.samples + c.holdout) * c.iterations * 0.01 + c.kd.epochs * c.samples * 0.01

    floors = dict(planning.LEVERS["convert"])
    cfg = ConvertConfig(teacher="t", out="o", samples=4096, iterations=200)
    at_floors = ConvertConfig(teacher="t", out="o", samples=floors["samples"], iterations=floors["iterations"])
    at_floors.kd.epochs = floors["epochs"]
    budget = planned(at_floors) / 4  # a quarter of what the floors take
    b = planning.fit_budget(cfg, "convert", budget, 0.0, planned)
    assert b["fits"] and planned(cfg) <= budget
    last = dict(planning.LAST_RESORT["convert"])
    # steps first, to the last resort, then epochs to what fits; samples and the check set stay at their floors
    assert b["chosen"]["iterations"] == last["iterations"] and last["epochs"] < b["chosen"]["epochs"] < floors["epochs"]
    assert b["chosen"]["samples"] == floors["samples"] and set(b["below_floors"]) == {"iterations", "epochs"}
    assert b["below_floors"]["iterations"] == last["iterations"] and "iterations" in planning.below_floors_reason(b)
    assert any("WARNING" in line and "doubtful" in line for line in planning.budget_lines(b))
    from dfkd_edge.quality import at_least_doubtful
    q = at_least_doubtful({"verdict": "ok", "reasons": []}, planning.below_floors_reason(b))
    assert q["verdict"] == "doubtful" and q["reasons"]
    assert at_least_doubtful({"verdict": "unreliable", "reasons": ["x"]}, "y")["verdict"] == "unreliable"


@pytest.mark.parametrize("agreement, floor", [(0.99, 200), (0.98, 100), (0.995, 400), (0.9, 20)])
def test_the_check_set_is_never_cut_below_what_tolerates_two_flips(agreement, floor):
    n = planning.holdout_floor(agreement)
    assert n == floor and 2 / n <= 1 - agreement + 1e-12 and 2 / (n - 1) > 1 - agreement


@pytest.mark.parametrize("text, seconds", [("20m", 1200), ("1h30m", 5400), ("900s", 900), ("900", 900),
                                           ("1.5h", 5400), ("off", None), (None, None)])
def test_durations_parse(text, seconds):
    assert budget_seconds(text) == seconds


def test_a_bad_time_budget_is_refused_and_one_that_cannot_fit_runs_at_the_floors(cli, tmp_path, digits_teacher):
    code, _, err = cli("quantize", digits_teacher, "--out", tmp_path / "bad", "--time-budget", "soon", *QFAST)
    assert code == 2 and "--time-budget" in err
    out = tmp_path / "q"
    code, _, err = cli("quantize", digits_teacher, "--out", out, "--time-budget", "1s", *QFAST)
    assert code == 0, err
    assert "time budget 1s: iterations 10 -> 10" not in err and "over the time budget" in err
    budget = read_json(out / "report.json")["plan"]["budget"]
    assert budget["chosen"]["iterations"] == 10 and budget["chosen"]["holdout"] == 32 and not budget["fits"]
    assert read_json(out / "manifest.json")["stages"]["synthesize"]["key"]
    shown = (out / "report.md").read_text()  # the rendered report: the plan against the stage times, and the budget
    section = shown.split("## Cost: planned and taken")[1]
    assert "| synthesize |" in section and "all planned stages" in section and "over the time budget" in section


def test_a_loop_is_timed_by_the_steps_it_adds_and_the_synthesis_loop_is_the_runs_own(digits_teacher):
    """The step probe runs the loop with 1 step to warm up, then with 1 and LOOP_STEPS (REPEATS times, the fastest
    kept): its set-up cancels out."""
    calls = []
    step, setup = cost.step_seconds(calls.append)
    assert step >= 0 and setup >= 0 and calls == [1] + [1, cost.LOOP_STEPS] * cost.REPEATS
    calls.clear()  # inspect's quick probe: one timing of 1 and 2 steps
    cost.step_seconds(calls.append, None, *cost.QUICK)
    assert calls == [1, 1, 2]
    from dfkd_edge.teacher import load_teacher

    teacher = load_teacher(digits_teacher, None, None)
    cfg = ConvertConfig(teacher="", out="")
    loop = planning.synthesis_loop("deepinversion", teacher, cfg, 4)
    assert loop is not None and planning.synthesis_loop("adversarial", teacher, cfg, 4) is None
    p = cost.probe(teacher, tuple(teacher.spec.input_shape), 4, saved_bytes=1, loop=loop)
    assert p.loop and p.train_s > 0 and Probe.from_dict(p.to_dict()).to_dict() == p.to_dict()
    assert not Probe.from_dict({k: v for k, v in p.to_dict().items() if k != "loop"}).loop  # recorded before it


def test_convert_has_no_time_budget_unless_given_and_off_runs_quantize_in_full(cli, tmp_path, digits_teacher):
    from dfkd_edge.options import defaults

    assert defaults("convert")["time_budget"] is None and defaults("quantize")["time_budget"] == QUANTIZE_TIME_BUDGET
    out = tmp_path / "q"
    code, _, err = cli("quantize", digits_teacher, "--out", out, "--time-budget", "off", *QFAST)
    assert code == 0, err
    assert read_json(out / "report.json")["plan"]["budget"] is None and "time budget" not in err


def test_the_int8_probe_times_each_format_and_records_one_that_fails(tmp_path, monkeypatch):
    from dfkd_edge.export.onnx_export import export_onnx
    from dfkd_edge.export.quantize import CalibConfig

    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4)).eval()
    path = export_onnx(net, (3, 8, 8), tmp_path / "m.onnx")
    real = cost.quantize_one

    def refuse_qoperator(pre, out, x, fmt, cfg, *a, **k):
        if fmt == "qoperator-u8s8":  # as onnxruntime refuses a QLinearAdd with an int32 bias (DeiT-Tiny's)
            raise RuntimeError("INVALID_GRAPH")
        return real(pre, out, x, fmt, cfg, *a, **k)

    monkeypatch.setattr(cost, "quantize_one", refuse_qoperator)
    timed = cost.int8_forward_s(path, (3, 8, 8), CalibConfig(threads=1), 1, tmp_path)
    assert timed["qoperator-u8s8"] is None
    assert timed["qdq-u8s8"] > 0 and timed["qdq-s8s8"] > 0
