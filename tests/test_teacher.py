"""Teacher loading (three safe formats) and inspection into a TeacherSpec."""

import numpy as np
import pytest
import torch

from dfkd_edge.errors import UserError
from dfkd_edge.models.teachers import DigitsCNN
from dfkd_edge.options import parse_input_shape
from dfkd_edge.teacher import load_teacher


def _digits_cnn():
    torch.manual_seed(0)
    m = DigitsCNN(width=8, hidden=16)
    m.train()
    m(torch.randn(64, 1, 8, 8))  # non-trivial running stats
    return m.eval()


def test_builtin_torchscript_teacher_spec(digits_teacher):
    t = load_teacher(digits_teacher)
    s = t.spec
    assert s.format == "torchscript" and s.input_shape == (1, 8, 8) and s.num_classes == 10
    assert [b.channels for b in s.bn_layers] == [32, 64, 64, 128]
    assert s.feature_layer == "classifier" and s.feature_dim == 128
    assert s.num_params > 50_000


def test_taps_expose_bn_inputs_and_features_with_gradients(digits_teacher):
    t = load_teacher(digits_teacher)
    x = torch.randn(5, 1, 8, 8, requires_grad=True)
    with t.taps() as rec:
        out = t(x)
    bn = rec.bn_inputs()
    assert [tuple(b.x.shape[:2]) for b in bn] == [(5, 32), (5, 64), (5, 64), (5, 128)]
    assert rec.feature_tensor().shape == (5, 128)
    (out.sum() + bn[0].x.mean()).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("dynamic", [True, False])
def test_exported_program_teacher(tmp_path, dynamic):
    m = _digits_cnn()
    kw = {"dynamic_shapes": ({0: torch.export.Dim("batch")},)} if dynamic else {}
    ep = torch.export.export(m, (torch.randn(4, 1, 8, 8),), **kw)
    p = tmp_path / "t.pt2"
    torch.export.save(ep, p)
    t = load_teacher(p)
    assert t.spec.format == "exported-program" and t.spec.input_shape == (1, 8, 8)
    assert len(t.spec.bn_layers) == 4 and t.spec.feature_dim == 16
    x = torch.randn(7, 1, 8, 8)  # 7 is not the static batch of 4: chunked
    torch.testing.assert_close(t.logits(x), m(x), atol=1e-5, rtol=1e-5)
    with t.taps() as rec:
        t(x)
    assert rec.bn_inputs()[0].x.shape[0] == 7


def test_factory_state_dict_teacher(tmp_path):
    m = _digits_cnn()
    p = tmp_path / "w.pth"
    torch.save(m.state_dict(), p)
    t = load_teacher(p, (1, 8, 8), factory="dfkd_edge.models.teachers:digits_cnn_small_for_tests")
    x = torch.randn(3, 1, 8, 8)
    torch.testing.assert_close(t.logits(x), m(x))
    assert t.spec.format == "state-dict" and t.spec.feature_dim == 16 and len(t.spec.bn_layers) == 4


def test_signal_and_vector_teachers_need_and_take_input_shape(toy_teachers):
    with pytest.raises(UserError, match="--input-shape"):
        load_teacher(toy_teachers["signal"]["teacher"])
    s = load_teacher(toy_teachers["signal"]["teacher"], (1, 40)).spec
    assert (s.kind, s.num_classes, s.feature_dim) == ("signal", 4, 64)
    v = load_teacher(toy_teachers["vector"]["teacher"], (30,)).spec
    assert (v.kind, v.num_classes, len(v.bn_layers)) == ("vector", 2, 2)


@pytest.mark.parametrize("text,expected", [("1,8,8", (1, 8, 8)), ("30", (30,)), ("1x40", (1, 40)), ("(3, 32, 32)", (3, 32, 32))])
def test_parse_input_shape(text, expected):
    assert parse_input_shape(text) == expected


@pytest.mark.parametrize("text", ["a,b", "0,8", "1,2,3,4", "-1"])
def test_parse_input_shape_rejects(text):
    with pytest.raises(UserError):
        parse_input_shape(text)


def test_recorded_shape_conflict_is_an_error(digits_teacher):
    with pytest.raises(UserError, match="differs from the shape recorded"):
        load_teacher(digits_teacher, (1, 9, 9))


def test_teacher_outputs_are_finite_and_deterministic(digits_teacher):
    t = load_teacher(digits_teacher)
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((4, 1, 8, 8)).astype(np.float32))
    assert torch.equal(t.logits(x), t.logits(x))


def test_teachers_that_disagree_cannot_be_distilled_together(digits_teacher, toy_teachers):
    from dfkd_edge.teacher_model import check_compatible

    digits = load_teacher(digits_teacher).spec
    check_compatible([digits, load_teacher(digits_teacher).spec])  # the same teacher twice is fine
    signal = load_teacher(toy_teachers["signal"]["teacher"], (1, 40)).spec
    with pytest.raises(UserError, match="input shape"):
        check_compatible([digits, signal])
    other = load_teacher(digits_teacher).spec
    other.num_classes = 7
    with pytest.raises(UserError, match="classes"):
        check_compatible([digits, other])
