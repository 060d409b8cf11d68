"""Several teachers into one student: inverted as their ensemble (the default) or into one multi-header
student (CDFKD-MFS)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from conftest import FAST, read_json
from dfkd_edge.backends import predict
from dfkd_edge.backends.onnxruntime import OrtRunner
from dfkd_edge.distill.multi import train_attention
from dfkd_edge.synthesis.cdfkd_mfs import MultiTeacherConfig, student_loss
from dfkd_edge.ensemble import Ensemble
from dfkd_edge.errors import UserError
from dfkd_edge.export.onnx_export import check_parity, export_onnx
from dfkd_edge.models import create_model
from dfkd_edge.models.teachers import DigitsCNN
from dfkd_edge.teacher import load_teacher, save_torchscript


@pytest.mark.parametrize("shape,family", [((1, 8, 8), "conv2d"), ((1, 40), "conv1d"), ((30,), "mlp"),
                                          ((3, 12, 12), "conv2d"), ((2, 7), "conv1d")])
@pytest.mark.parametrize("headers", [2, 3])
def test_header_count_and_shapes_per_family(shape, family, headers):
    m = create_model("multihead", input_shape=shape, num_classes=5, width=8, headers=headers).eval()
    assert m.family == family and len(m.headers) == headers
    x = torch.randn(4, *shape)
    with torch.no_grad():
        logits, feats = m.header_outputs(x)
        out = m(x)
    assert len(logits) == len(feats) == headers
    assert all(t.shape == (4, 5) for t in logits) and all(f.shape == (4, m.feature_dim) for f in feats)
    torch.testing.assert_close(out, torch.stack(logits).mean(0))
    assert len(m.headers[0].encoders) == len(m.backbone.stages)  # one encoder per stage: every level shared


def test_attention_weights_sum_to_one_per_sample_and_train():
    m = create_model("multihead", input_shape=(30,), num_classes=3, width=8, headers=3, aggregation="attention")
    torch.nn.init.normal_(m.attention.weight)
    w = m.attention.weights(torch.randn(3, 16, 3))
    assert w.shape == (3, 16) and (w >= 0).all()
    torch.testing.assert_close(w.sum(0), torch.ones(16))
    g = np.random.default_rng(0)
    x, y = g.standard_normal((60, 30)).astype(np.float32), g.integers(0, 3, 60)
    before = [p.detach().clone() for n, p in m.named_parameters() if not n.startswith("attention")]
    r = train_attention(m, x, y, epochs=50)
    assert r["loss"][-1] < r["loss"][0]
    after = [p for n, p in m.named_parameters() if not n.startswith("attention")]
    assert all(torch.equal(a, b) for a, b in zip(before, after))  # the student stays frozen
    with pytest.raises(ValueError, match="no attention"):
        train_attention(create_model("multihead", input_shape=(30,), num_classes=3, width=8, headers=2), x, y)


@pytest.mark.parametrize("aggregation", ["mean", "attention"])
def test_one_graph_onnx_parity(tmp_path, aggregation):
    torch.manual_seed(0)
    m = create_model("multihead", input_shape=(1, 8, 8), num_classes=10, width=8, headers=3, aggregation=aggregation)
    if m.attention is not None:
        torch.nn.init.normal_(m.attention.weight)
    m.eval()
    path = export_onnx(m, (1, 8, 8), tmp_path / "m.onnx")
    graph = onnx.load(str(path)).graph
    assert len(graph.input) == 1 and len(graph.output) == 1  # aggregation inside the one graph
    x = np.random.default_rng(0).standard_normal((32, 1, 8, 8)).astype(np.float32)
    parity = check_parity(m, path, x)
    assert parity["max_abs_diff"] < 1e-4
    with OrtRunner(path, 1) as r, torch.no_grad():
        np.testing.assert_allclose(predict(r, x), m(torch.from_numpy(x)).numpy(), atol=1e-4)


def test_student_loss_terms():
    cfg = MultiTeacherConfig()
    t = [torch.zeros(4, 3), torch.zeros(4, 3)]
    h = [torch.ones(4, 3), -torch.ones(4, 3)]  # per-header L1 2, ensemble L1 0
    assert student_loss(h, [torch.zeros(4, 8)] * 2, t, [None, torch.ones(4, 5)], cfg) == pytest.approx(2.0)
    h = [torch.ones(4, 3), torch.ones(4, 3)]  # per-header 2, ensemble 1 x 5
    assert student_loss(h, [torch.zeros(4, 8)] * 2, t, [None, None], cfg) == pytest.approx(7.0)
    # features count where the widths match: 0.2 x L1(0, 1) per header
    assert student_loss(h, [torch.zeros(4, 8)] * 2, t, [torch.ones(4, 8)] * 2, cfg) == pytest.approx(7.4)


@pytest.fixture(scope="module")
def small_teachers(tmp_path_factory):
    """Two digits teachers of other widths (untrained weights are fine for the contract) + a 5-class one."""
    d = tmp_path_factory.mktemp("mt")
    paths = {}
    for name, model in (("a", DigitsCNN(width=8, hidden=16)), ("b", DigitsCNN(width=12, hidden=32)),
                        ("five", DigitsCNN(num_classes=5, width=8, hidden=16))):
        torch.manual_seed(len(name))
        save_torchscript(model.eval(), d / f"{name}.pt", (1, 8, 8))
        paths[name] = str(d / f"{name}.pt")
    return paths


def test_ensemble_checks_its_teachers(small_teachers, toy_teachers):
    a, b = load_teacher(small_teachers["a"]), load_teacher(small_teachers["b"])
    ens = Ensemble([a, b])
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(ens.logits(x), (a.logits(x) + b.logits(x)) / 2)
    assert ens.spec.num_params == a.spec.num_params + b.spec.num_params
    with pytest.raises(UserError, match="disagree on the classes"):
        Ensemble([a, load_teacher(small_teachers["five"])])
    with pytest.raises(UserError, match="disagree on the input shape"):
        Ensemble([a, load_teacher(toy_teachers["signal"]["teacher"], (1, 40))])


def test_convert_several_teachers_with_attention(cli, tmp_path, digits_teacher, digits_test, small_teachers):
    from dfkd_edge.data.digits import load_split

    x, y, _, _ = load_split()
    idx = np.concatenate([np.where(y == k)[0][:3] for k in range(10)])
    np.savez(tmp_path / "few.npz", x=x[idx], y=y[idx])
    code, out, err = cli("convert", digits_teacher, small_teachers["a"], small_teachers["b"], *FAST,
                         "--few-shot-data", tmp_path / "few.npz", "--eval-data", digits_test, "--out", tmp_path / "o")
    assert code == 0, err
    r = read_json(tmp_path / "o/report.json")
    m = r["multi_teacher"]
    assert len(m["teachers"]) == len(m["headers"]) == 3 and m["aggregation"]["method"] == "attention"
    assert m["ensemble"]["accuracy"] is not None and m["student_attention"]["accuracy"] is not None
    assert r["synthesis"]["method"] == "cdfkd-mfs"
    s = read_json(tmp_path / "o/student.json")
    assert s["name"] == "multihead" and s["headers"] == 3 and s["aggregation"] == "attention"
    assert len(onnx.load(str(tmp_path / "o/student_fp32.onnx")).graph.output) == 1
    assert {"student_headers.pt", "aggregation.json", "student_int8.onnx"} <= set(r["artifacts"])
    assert "Teachers and headers" in out
    title = (tmp_path / "o/report.md").read_text().splitlines()[0]  # the run's name, not the last teacher's
    assert title.startswith("# dfkd-edge report: 3 teachers (") and Path(digits_teacher).name in title, title
    assert len(read_json(tmp_path / "o/teacher.json")["members"]) == 3
    # resume: nothing is trained again
    code, _, err = cli("convert", digits_teacher, small_teachers["a"], small_teachers["b"], *FAST,
                       "--few-shot-data", tmp_path / "few.npz", "--eval-data", digits_test, "--out", tmp_path / "o",
                       "--resume")
    assert code == 0, err
    stages = read_json(tmp_path / "o/manifest.json")["stages"]
    assert stages["synthesize"].get("resumed") and stages["aggregate"].get("resumed")


@pytest.mark.parametrize("extra,needle", [
    (["five"], "disagree on the classes"),
    (["a", "a"], "given twice"),
    (["a", "--method", "soft-target"], "applies to one teacher"),
    (["a", "--distill", "vkd"], "applies to one teacher"),
    (["a", "--method", "deepinversion", "--few-shot-data", "few"], "the student has none"),
    (["--method", "cdfkd-mfs"], "give two or more teachers"),
    (["a", "--method", "cdfkd-mfs", "--max-latency-ms", "1", "--target", "jetson-orin-nano"], "multi-header student"),
    (["a", "--method", "cdfkd-mfs", "--student-factory", "m:f"], "multi-header student"),
])
def test_several_teachers_bad_input_exit_2(cli, tmp_path, digits_teacher, small_teachers, extra, needle):
    args = [small_teachers.get(e, e) for e in extra]
    args = [__file__ if a == "few" else a for a in args]  # refused before the file is read
    code, _, err = cli("convert", digits_teacher, *args, *FAST, "--out", tmp_path / "o")
    assert code == 2 and needle in err and "Traceback" not in err


def test_signal_teacher_with_digits_teacher_exit_2(cli, tmp_path, digits_teacher, toy_teachers):
    code, _, err = cli("convert", digits_teacher, toy_teachers["signal"]["teacher"], "--input-shape", "1,8,8", *FAST,
                       "--out", tmp_path / "o")
    assert code == 2 and "Traceback" not in err


def test_few_shot_data_needs_several_teachers(cli, tmp_path, digits_teacher, digits_test):
    code, _, err = cli("convert", digits_teacher, *FAST, "--few-shot-data", digits_test, "--out", tmp_path / "o")
    assert code == 2 and "two or more teachers" in err


def test_attention_that_cannot_beat_the_mean_is_not_kept():
    m = create_model("multihead", input_shape=(30,), num_classes=3, width=8, headers=3, aggregation="attention")
    for h in m.headers[1:]:
        h.load_state_dict(m.headers[0].state_dict())  # identical headers: weighting cannot help
    g = np.random.default_rng(1)
    x, y = g.standard_normal((40, 30)).astype(np.float32), g.integers(0, 3, 40)
    r = train_attention(m, x, y, epochs=30)
    assert r["checked"] and not r["kept"]
    assert not m.attention.weight.any() and not m.attention.bias.any()  # uniform: exactly the mean


def test_convert_two_signal_teachers(cli, tmp_path, toy_teachers):
    """The default with several teachers: one student (not a multi-header one) from the ensemble's
    inversion, said in the report."""
    from dfkd_edge.data.toy import SignalCNN

    torch.manual_seed(3)
    other = SignalCNN(classes=4, width=16).eval()  # another architecture width, untrained weights
    save_torchscript(other, tmp_path / "other.pt", (1, 40))
    code, _, err = cli("convert", toy_teachers["signal"]["teacher"], tmp_path / "other.pt", "--input-shape", "1,40",
                       *FAST, "--eval-data", toy_teachers["signal"]["eval"], "--out", tmp_path / "o")
    assert code == 0, err
    s = read_json(tmp_path / "o/student.json")
    assert s["name"] == "conv1d" and "headers" not in s
    r = read_json(tmp_path / "o/report.json")
    assert r["synthesis"]["method"] == "deepinversion" and "ensemble" in r["synthesis"]["auto"]["why"]
    m = r["multi_teacher"]
    assert len(m["teachers"]) == 2 and m["headers"] == [] and m["student"]["accuracy"] is not None
    assert "aggregate" not in read_json(tmp_path / "o/manifest.json")["stages"]
    assert "Teachers and student" in (tmp_path / "o/report.md").read_text()
    code, _, err = cli("convert", toy_teachers["signal"]["teacher"], tmp_path / "other.pt", "--input-shape", "1,40",
                       *FAST, "--eval-data", toy_teachers["signal"]["eval"], "--out", tmp_path / "o", "--resume")
    assert code == 0, err
    stages = read_json(tmp_path / "o/manifest.json")["stages"]
    assert stages["synthesize"].get("resumed") and stages["distill"].get("resumed")


def test_convert_two_signal_teachers_cdfkd_mfs(cli, tmp_path, toy_teachers):
    from dfkd_edge.data.toy import SignalCNN

    torch.manual_seed(3)
    other = SignalCNN(classes=4, width=16).eval()
    save_torchscript(other, tmp_path / "other.pt", (1, 40))
    code, _, err = cli("convert", toy_teachers["signal"]["teacher"], tmp_path / "other.pt", "--input-shape", "1,40",
                       *FAST, "--method", "cdfkd-mfs", "--eval-data", toy_teachers["signal"]["eval"],
                       "--out", tmp_path / "o")
    assert code == 0, err
    s = read_json(tmp_path / "o/student.json")
    assert s["family"] == "conv1d" and s["headers"] == 2 and s["aggregation"] == "mean"
    r = read_json(tmp_path / "o/report.json")
    assert len(r["multi_teacher"]["headers"]) == 2 and r["synthesis"]["method"] == "cdfkd-mfs"


def test_ensemble_taps_every_member(small_teachers):
    """DeepInversion on several teachers sees every member's BatchNorm inputs in one forward."""
    from dfkd_edge.synthesis.base import bn_statistics_loss

    a, b = load_teacher(small_teachers["a"]), load_teacher(small_teachers["b"])
    ens = Ensemble([a, b])
    assert len(ens.spec.bn_layers) == len(a.spec.bn_layers) + len(b.spec.bn_layers) > 0 and ens.spec.taps
    assert ens.largest_params == max(a.spec.num_params, b.spec.num_params)
    x = torch.randn(6, 1, 8, 8, requires_grad=True)
    with ens.taps() as rec:
        out = ens(x)
    assert len(rec.bn_inputs()) == len(ens.spec.bn_layers) and rec.feature_tensor() is None
    torch.testing.assert_close(out, (a(x) + b(x)) / 2)
    bn_statistics_loss(rec.bn_inputs()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    with pytest.raises(UserError, match="no one last linear layer"):
        ens.classifier()
