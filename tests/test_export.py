"""ONNX export with parity, and int8 calibration through onnxruntime.quantization."""

import math
import numpy as np
import onnx
import pytest
import torch

from dfkd_edge.errors import PipelineError
from dfkd_edge.export.onnx_export import OPSET, check_parity, export_onnx
from dfkd_edge.export.quantize import CANDIDATES, CalibConfig, calibrate
from dfkd_edge.models import create_student


@pytest.fixture
def student():
    torch.manual_seed(0)
    m, _ = create_student("conv2d", (1, 8, 8), 10, 100_000, width=8)
    m.train()
    m(torch.randn(128, 1, 8, 8))
    return m.eval()


def test_export_opset_dynamic_batch_and_parity(tmp_path, student):
    p = export_onnx(student, (1, 8, 8), tmp_path / "s.onnx")
    model = onnx.load(str(p))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= OPSET
    assert not any(n.op_type == "BatchNormalization" for n in model.graph.node)  # folded into Conv
    x = np.random.default_rng(0).standard_normal((37, 1, 8, 8)).astype(np.float32)
    res = check_parity(student, p, x)
    assert res["max_abs_diff"] < 1e-4 and res["samples"] == 37


def test_parity_failure_is_a_clear_error(tmp_path, student):
    p = export_onnx(student, (1, 8, 8), tmp_path / "s.onnx")
    other, _ = create_student("conv2d", (1, 8, 8), 10, 100_000, width=8)
    with torch.no_grad():
        for prm in other.parameters():
            prm.add_(0.5)
    with pytest.raises(PipelineError, match="parity"):
        check_parity(other.eval(), p, np.random.default_rng(0).standard_normal((8, 1, 8, 8)).astype(np.float32))


def test_calibration_builds_int8_and_keeps_the_fastest_faithful_format(tmp_path, student):
    fp32 = export_onnx(student, (1, 8, 8), tmp_path / "s.onnx")
    rng = np.random.default_rng(0)
    calib = rng.standard_normal((64, 1, 8, 8)).astype(np.float32)
    hold = rng.standard_normal((64, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        hold_logits = student(torch.from_numpy(hold)).numpy()
    rec = calibrate(fp32, tmp_path / "s_int8.onnx", calib, hold, hold_logits, CalibConfig())
    assert {c["format"] for c in rec["candidates"]} == set(CANDIDATES)
    assert rec["chosen_format"] in CANDIDATES and rec["method"] == "minmax" and rec["samples"] == 64
    ops = {n.op_type for n in onnx.load(str(tmp_path / "s_int8.onnx")).graph.node}
    assert ops & {"QuantizeLinear", "QLinearConv", "ConvInteger"}
    chosen = next(c for c in rec["candidates"] if c["format"] == rec["chosen_format"])
    if any(c["within_tolerance"] for c in rec["candidates"]):
        assert chosen["within_tolerance"]
        assert chosen["p50_ms_batch1"] == min(c["p50_ms_batch1"] for c in rec["candidates"] if c["within_tolerance"])
    assert not list(tmp_path.glob(".calib-*"))  # the work directory is gone


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_histogram_calibration_takes_any_number_of_samples(tmp_path, student, method):
    """onnxruntime's histogram calibrators stack every batch: 250 samples (no multiple of 32) and a prime
    count must calibrate, in equal batches."""
    from dfkd_edge.export.quantize import equal_batch

    assert [equal_batch(n) for n in (256, 250, 97, 1)] == [32, 25, 97, 1]
    fp32 = export_onnx(student, (1, 8, 8), tmp_path / "s.onnx")
    rng = np.random.default_rng(0)
    hold = rng.standard_normal((16, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        hold_logits = student(torch.from_numpy(hold)).numpy()
    for n in (250, 97):
        calib = rng.standard_normal((n, 1, 8, 8)).astype(np.float32)
        rec = calibrate(fp32, tmp_path / "s_int8.onnx", calib, hold, hold_logits,
                        CalibConfig(method=method, formats=("qdq-u8s8",)))
        assert rec["samples"] == n and rec["method"] == method and (tmp_path / "s_int8.onnx").is_file()


def _outlier_mlp():
    """A trained MLP (breast-cancer features) made outlier-heavy without changing its function:
    one hidden ReLU channel is scaled x500 and the next layer divides it back, so per-tensor int8
    activations lose every other channel of that tensor."""
    from dfkd_edge.data import toy

    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(30, 64), torch.nn.ReLU(), torch.nn.Linear(64, 64), torch.nn.ReLU(),
                            torch.nn.Linear(64, 2))
    x, y, _, _ = toy.vector_dataset()
    toy.fit(m, x, y, epochs=30)
    with torch.no_grad():
        m[0].weight[0] *= 500
        m[0].bias[0] *= 500
        m[2].weight[:, 0] /= 500
    return m.eval()


def test_weighted_agreement_weighs_each_disagreement_by_what_fp32_gave_its_own_class_where_it_is_sure():
    from dfkd_edge.export.quantize import probabilities, weighted_agreement

    sure = np.array([[9.0, 0.0, 0.0], [0.0, 9.0, 0.0]])  # fp32 sure of its classes: top-1 agreement
    assert weighted_agreement(sure, np.array([0, 1])) == 1.0
    assert abs(weighted_agreement(sure, np.array([1, 1])) - 0.5) < 1e-3  # one of two flipped: half
    torn = np.log(np.array([[0.5, 0.5 - 1e-6, 1e-6]]))  # a flip between two classes fp32 found as likely
    assert weighted_agreement(torn, np.array([1])) > 0.999 and weighted_agreement(torn, np.array([2])) < 0.51
    p = np.array([[0.7, 0.2, 0.1]])  # outputs that already are probabilities are taken as they are
    assert np.allclose(probabilities(p), p) and abs(weighted_agreement(p, np.array([1])) - 0.5) < 1e-9
    assert np.allclose(probabilities(np.log(p) + 3.0), p)  # logits through softmax
    mixed = np.log(np.array([[0.96, 0.02, 0.02], [0.6, 0.3, 0.1]]))  # judged on the sample fp32 is sure of
    assert weighted_agreement(mixed, np.array([0, 1])) == 1.0 and weighted_agreement(mixed, np.array([1, 0])) < 0.1
    unsure = np.log(np.array([[0.4, 0.35, 0.25]]))  # sure of none: judged on all
    assert abs(weighted_agreement(unsure, np.array([1])) - 0.95) < 1e-9


def test_guardrail_leaves_sensitive_layers_in_float(tmp_path):
    m = _outlier_mlp()
    fp32 = export_onnx(m, (30,), tmp_path / "m.onnx")
    from dfkd_edge.data import toy

    x = toy.vector_dataset()[0]  # stands in for a transfer set here: the guardrail's logic is under test
    calib, hold = x[:128], x[128:]
    with torch.no_grad():
        logits = m(torch.from_numpy(hold)).numpy()
    rec = calibrate(fp32, tmp_path / "m_int8.onnx", calib, hold, logits, CalibConfig())
    g = rec["guardrail"]
    assert g["triggered"] and g["agreement_before"] < 0.95  # plain int8 breaks this model
    assert g["held"] and g["excluded"] and rec["chosen"]["agreement_with_fp32"] >= 0.99
    from dfkd_edge.backends import predict
    from dfkd_edge.backends.onnxruntime import OrtRunner

    with OrtRunner(fp32, 1) as a, OrtRunner(tmp_path / "m_int8.onnx", 1) as b:
        assert (predict(a, hold).argmax(1) == predict(b, hold).argmax(1)).mean() >= 0.99
    from dfkd_edge.export.quantize import quantizable_nodes

    assert len(g["excluded"]) < len(quantizable_nodes(fp32))  # not everything left in float
    ops = [n.op_type for n in onnx.load(str(tmp_path / "m_int8.onnx")).graph.node]
    assert "QuantizeLinear" in ops or "QLinearMatMul" in ops  # the rest stays int8


class _ResidualMLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b, self.c = torch.nn.Linear(30, 32, bias=False), torch.nn.Linear(32, 32), torch.nn.Linear(32, 2)

    def forward(self, x):
        h = torch.relu(self.a(x))
        return self.c(torch.relu(h + self.b(h)))


def _residual_case(tmp_path):
    """The residual MLP on raw-scale features and the N(0, 1) noise that calibrates it badly: (fp32 ONNX, inputs,
    fp32 logits, noise)."""
    from dfkd_edge.data import toy

    torch.manual_seed(0)
    m = _ResidualMLP()
    x, y, _, _ = toy.vector_dataset()
    toy.fit(m, x, y, epochs=30)
    m.eval()
    with torch.no_grad():
        m.a.weight /= 1000
    x = x * 1000
    fp32 = export_onnx(m, (30,), tmp_path / "m.onnx")
    with torch.no_grad():
        logits = m(torch.from_numpy(x)).numpy()
    return fp32, x, logits, np.random.default_rng(0).standard_normal((128, 30)).astype(np.float32)


def test_a_time_budget_keeps_the_ranked_route_where_scoring_would_pass_it(tmp_path):
    """Where the ranked route does not hold and scoring every unit would end after the deadline, the guardrail
    keeps the ranked route's best set, says so, and scores nothing one by one."""
    import time

    fp32, x, logits, noise = _residual_case(tmp_path)
    rec = calibrate(fp32, tmp_path / "q.onnx", noise, x, logits, CalibConfig(formats=("qdq-u8s8",)),
                    deadline=time.perf_counter())
    g = rec["guardrail"]
    assert g["triggered"] and g["route"] == "ranked" and g["cut_by_budget"]["units"] > 0
    assert not any(u["pass"] for u in g["sensitivity"])  # the ranking only (pass 0)
    assert "time budget" in rec["reason"] and not g["held"]
    assert g["agreement"] >= g["agreement_before"]  # the best set tried (or plain int8), never worse
    later = calibrate(fp32, tmp_path / "q2.onnx", noise, x, logits, CalibConfig(formats=("qdq-u8s8",)),
                      deadline=time.perf_counter() + 3600)
    assert later["guardrail"]["route"] == "scored" and later["guardrail"]["held"]


def test_the_tensorrt_guardrail_keeps_its_ranked_route_past_the_time_budget(tmp_path):
    """The TensorRT Q/DQ model's guardrail is bounded by the same deadline as ONNX Runtime's."""
    import shutil
    import time

    from dfkd_edge.backends.tensorrt.artifacts import _qdq_model
    from dfkd_edge.runfiles import Artifacts

    fp32, x, _, noise = _residual_case(tmp_path)
    names = Artifacts("model")
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(fp32, out / names.onnx_fp32)
    doc = _qdq_model(out, noise, x, CalibConfig(), 1, names, deadline=time.perf_counter())
    g = doc["guardrail"]
    assert g["triggered"] and g["cut_by_budget"]["units"] > 0 and not g["held"]
    assert (out / names.onnx_trt_qdq).exists()


def test_guardrail_reaches_the_tensors_between_weight_layers(tmp_path):
    """A residual MLP on raw-scale features (x1000, its first layer, without bias, divided back),
    calibrated on N(0, 1) noise: the hidden ranges are about 1000x too narrow. With every weight layer
    in float onnxruntime still quantizes the addition (and its inputs), so weight layers alone cannot
    restore it; the second pass leaves the tensors around the addition in float and holds 99%, and
    the last layer stays int8."""
    import onnx as onnx_

    from dfkd_edge.backends import predict
    from dfkd_edge.backends.onnxruntime import OrtRunner
    from dfkd_edge.export.quantize import quantizable_nodes, quantize_one

    fp32, x, logits, noise = _residual_case(tmp_path)
    gemms = quantizable_nodes(fp32)
    quantize_one(fp32, tmp_path / "no_gemm.onnx", noise, "qdq-u8s8", CalibConfig(), exclude=gemms)
    with OrtRunner(tmp_path / "no_gemm.onnx", 1) as r:
        assert (predict(r, x).argmax(1) == logits.argmax(1)).mean() < 0.9  # weight layers alone cannot
    rec = calibrate(fp32, tmp_path / "q.onnx", noise, x, logits, CalibConfig(formats=("qdq-u8s8",)))
    g = rec["guardrail"]
    assert g["triggered"] and g["held"] and {u["pass"] for u in g["sensitivity"]} == {1, 2}
    add = next(n.name for n in onnx_.load(str(fp32)).graph.node if n.op_type == "Add")
    assert add in g["excluded"] and not set(gemms) <= set(g["excluded"])  # a Gemm still runs in int8
    with OrtRunner(tmp_path / "q.onnx", 1) as r:
        assert (predict(r, x).argmax(1) == logits.argmax(1)).mean() >= 0.99
    from dfkd_edge.export.quantize import computes_in_int8

    assert computes_in_int8(tmp_path / "q.onnx") and not computes_in_int8(fp32) and g["int8_usable"]


def test_an_int8_model_left_wholly_in_float_is_not_recommended_as_int8():
    from dfkd_edge.report.recommend import recommend
    from dfkd_edge.targets.profile import load_profile

    host = load_profile("host-cpu")
    rows = [{"model": "model", "batch": 1, "backend": "onnxruntime-cpu", "device": host.name, "kind": "measured",
             "precision": p, "p50_ms": ms} for p, ms in (("fp32", 1.0), ("int8", 0.9))]
    quality = {"accuracy": {"model_fp32": 0.9, "model_int8": 0.9}, "fidelity": {}}
    from dfkd_edge.runfiles import MODEL_FILES

    usable = recommend(host, rows, quality, {}, MODEL_FILES, {"guardrail": {"int8_usable": True}})
    all_float = recommend(host, rows, quality, {}, MODEL_FILES, {"guardrail": {"int8_usable": False}})
    assert usable["precision"] == "int8" and all_float["precision"] == "fp32"


def test_guardrail_reuses_one_calibration_pass_and_builds_the_same_models(tmp_path, monkeypatch):
    """The calibration cache (onnxruntime's calibration_cache_path) changes the cost, not the result: with
    it, the guardrail's dozens of quantizations run the calibration samples through the model once; the
    int8 model and the guardrail's record are those of a run that calibrates every time."""
    import importlib

    import dfkd_edge.export.quantize as dq
    from dfkd_edge.data import toy
    from dfkd_edge.io import sha256

    m = _outlier_mlp()
    fp32 = export_onnx(m, (30,), tmp_path / "m.onnx")
    x = toy.vector_dataset()[0]
    with torch.no_grad():
        logits = m(torch.from_numpy(x[128:])).numpy()
    passes = []
    ort_quantize = importlib.import_module("onnxruntime.quantization.quantize")  # the module, not the function
    real_create = ort_quantize.create_calibrator
    monkeypatch.setattr(ort_quantize, "create_calibrator", lambda *a, **k: passes.append(1) or real_create(*a, **k))
    cfg = CalibConfig(formats=("qdq-u8s8",))
    cached = calibrate(fp32, tmp_path / "cached.onnx", x[:128], x[128:], logits, cfg)
    assert dq._has_range_cache() and len(passes) == 1 and cached["guardrail"]["triggered"]
    monkeypatch.setattr(dq, "_has_range_cache", lambda: False)
    plain = calibrate(fp32, tmp_path / "plain.onnx", x[:128], x[128:], logits, cfg)
    # without the cache, one calibration pass per quantization: the format's, the ranking model's, each set tried
    assert len(passes) - 1 >= 3
    assert sha256(tmp_path / "cached.onnx") == sha256(tmp_path / "plain.onnx")
    assert cached["guardrail"]["excluded"] == plain["guardrail"]["excluded"]
    assert cached["guardrail"]["sensitivity"] == plain["guardrail"]["sensitivity"]


def test_guardrail_not_triggered_on_a_well_behaved_model(tmp_path):
    from dfkd_edge.data import toy
    from dfkd_edge.data.digits import load_split

    x_tr, y_tr, x_te, _ = load_split()
    torch.manual_seed(0)
    m, _ = create_student("conv2d", (1, 8, 8), 10, 100_000, width=16)
    # real margins: a random-weight model's logits are near ties; width 8 after 8 epochs sat at 98.7-99.0%
    # agreement, on the threshold itself (it flipped between epochs), width 16 after 30 at 99.6%
    toy.fit(m, x_tr, y_tr, epochs=30)
    fp32 = export_onnx(m, (1, 8, 8), tmp_path / "s.onnx")
    with torch.no_grad():
        logits = m(torch.from_numpy(x_te)).numpy()
    rec = calibrate(fp32, tmp_path / "s8.onnx", x_tr[:256], x_te, logits, CalibConfig())
    assert not rec["guardrail"]["triggered"] and rec["guardrail"]["excluded"] == []
    assert rec["chosen"]["agreement_with_fp32"] >= 0.99


def test_the_guardrail_ranks_layers_in_one_pass_where_that_finds_them(tmp_path, monkeypatch):
    """The outlier-heavy MLP: one ranking pass (fp32 and int8 with every tensor an output) names the layers whose
    quantization adds the error, and leaving those in float holds the threshold without scoring every unit."""
    import dfkd_edge.export.quantize as dq
    from dfkd_edge.data import toy

    m = _outlier_mlp()
    fp32 = export_onnx(m, (30,), tmp_path / "m.onnx")
    x = toy.vector_dataset()[0]
    with torch.no_grad():
        logits = m(torch.from_numpy(x[128:])).numpy()
    built = []
    real = dq.quantize_one
    monkeypatch.setattr(dq, "quantize_one", lambda *a, **k: built.append(1) or real(*a, **k))
    rec = calibrate(fp32, tmp_path / "q.onnx", x[:128], x[128:], logits, CalibConfig(formats=("qdq-u8s8",)))
    g = rec["guardrail"]
    assert g["triggered"] and g["held"] and g["route"] == "ranked"
    units = dq.sensitivity_units(fp32)
    assert len(g["excluded"]) <= math.ceil(dq.RANKED_SHARE * len(units)) + 1
    assert len(built) < len(units)  # the thorough route builds one model per unit, and more
    errors = dq.output_errors(fp32, tmp_path / "q.onnx", x[128:160], 1, tmp_path)
    assert errors and all(v >= 0 for v in errors.values())


def test_calibration_one_batch_at_a_time_gives_the_same_int8_model(tmp_path, monkeypatch):
    """MinMax calibrated a batch at a time (onnxruntime's strided calibration: the memory of one batch, not of the
    calibration set) writes the model that keeping every batch writes."""
    import dfkd_edge.export.quantize as dq
    from dfkd_edge.data import toy
    from dfkd_edge.io import sha256

    fp32 = export_onnx(_outlier_mlp(), (30,), tmp_path / "m.onnx")
    x = toy.vector_dataset()[0][:96]
    assert dq.reader_batch(x) == 32 and dq.reader_batch(np.zeros((1, 3, 224, 224))) == 6
    from onnxruntime.quantization.calibrate import MinMaxCalibrater

    calls, real = [], MinMaxCalibrater.collect_data
    monkeypatch.setattr(MinMaxCalibrater, "collect_data", lambda self, r: calls.append(1) or real(self, r))
    dq.quantize_one(fp32, tmp_path / "strided.onnx", x, "qdq-u8s8", CalibConfig())
    assert len(calls) == 3  # one batch of 32 at a time
    monkeypatch.setattr(dq, "calibration_options", lambda method: {})
    dq.quantize_one(fp32, tmp_path / "whole.onnx", x, "qdq-u8s8", CalibConfig())
    assert sha256(tmp_path / "strided.onnx") == sha256(tmp_path / "whole.onnx")


def test_the_int8_check_holds_only_what_its_sure_samples_can_resolve():
    from dfkd_edge.export.quantize import holdout_floor, resolvable_threshold

    assert holdout_floor(0.99) == 200 and resolvable_threshold(200, 256, 0.99) == 0.99
    assert resolvable_threshold(1000, 1000, 0.99) == 0.99
    assert abs(resolvable_threshold(100, 256, 0.99) - 0.98) < 1e-12  # two disagreements tolerated
    assert resolvable_threshold(2, 256, 0.99) == 0.0  # two sure samples judge nothing
    assert resolvable_threshold(0, 256, 0.99) == 0.99  # sure of none: all 256 judged, weighed
    assert resolvable_threshold(0, 0, 0.99) == 0.0


def test_below_the_resolvable_floor_the_guardrail_does_not_act_on_noise(tmp_path):
    """Two check samples cannot judge a 99% threshold: the fastest format ships, nothing is left in float, and the
    record, the report line and the verdict say int8 is not vouched for."""
    from dfkd_edge.quality import unresolved_check_reason
    from dfkd_edge.report.render import _guard_line

    fp32, x, logits, noise = _residual_case(tmp_path)  # noise breaks this model's int8 (< 90% agreement)
    p = torch.softmax(torch.from_numpy(logits), 1).max(1).values.numpy()
    two = x[p >= 0.9][:2]
    rec = calibrate(fp32, tmp_path / "q.onnx", noise, two, logits[p >= 0.9][:2], CalibConfig())
    g = rec["guardrail"]
    assert g["sure_samples"] == 2 and g["threshold"] == 0.0 and g["threshold_asked"] == 0.99
    assert not g["triggered"] and g["excluded"] == []
    assert rec["chosen"]["p50_ms_batch1"] == min(r["p50_ms_batch1"] for r in rec["candidates"])
    assert "not vouched for" in rec["reason"] and "2 of 2 check samples" in rec["reason"]
    assert "NOT the 99.00% asked" in _guard_line(rec)
    assert rec["chosen"]["weighted_agreement"] < 0.99 and "not vouched for" in unresolved_check_reason(rec)
    assert unresolved_check_reason({**rec, "guardrail": {**g, "threshold": 0.99}}) is None
    met = {**rec, "chosen": {**rec["chosen"], "weighted_agreement": 1.0}}  # no flip: the threshold asked is met
    assert unresolved_check_reason(met) is None and "99.00%, met" in _guard_line(met)
