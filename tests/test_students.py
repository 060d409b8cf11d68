"""The student zoo: family by input rank, width well below the teacher's, any input size."""

import pytest
import torch

from dfkd_edge.errors import UserError
from dfkd_edge.models import create_student
from dfkd_edge.models.students import count_params


@pytest.mark.parametrize("shape,family", [((1, 8, 8), "conv2d"), ((3, 32, 32), "conv2d"), ((1, 40), "conv1d"),
                                          ((2, 1000), "conv1d"), ((30,), "mlp"), ((784,), "mlp")])
def test_auto_picks_family_by_rank_and_fits_budget(shape, family):
    teacher_params = 400_000
    m, recipe = create_student("auto", shape, 7, teacher_params)
    assert recipe["name"] == family
    assert count_params(m) <= 0.25 * teacher_params
    m.eval()
    assert m(torch.randn(3, *shape)).shape == (3, 7)


def test_width_grows_with_the_teacher():
    small = create_student("auto", (3, 32, 32), 10, 100_000)[1]["width"]
    large = create_student("auto", (3, 32, 32), 10, 10_000_000)[1]["width"]
    assert large > small


def test_named_family_and_explicit_width():
    m, r = create_student("conv1d", (1, 40), 4, 10_000, width=12)
    assert r == {"name": "conv1d", "input_shape": [1, 40], "num_classes": 4, "width": 12}


def test_family_must_fit_rank():
    with pytest.raises(UserError, match="conv2d"):
        create_student("mlp", (1, 8, 8), 10, 10_000)


def test_mlp_normalises_its_inputs_with_the_teachers_domain_and_int8_leaves_the_raw_input_float(tmp_path):
    """Features four orders of magnitude apart: the MLP student starts with the domain's fixed
    per-feature normalisation, rebuilt from its recipe, and int8 never quantizes the raw input."""
    import numpy as np
    import onnx

    from dfkd_edge.domain import InputDomain
    from dfkd_edge.export.onnx_export import export_onnx
    from dfkd_edge.export.quantize import CalibConfig, quantize_one
    from dfkd_edge.models.students import build_from_recipe

    mean, std = [0.01, 5.0, 3000.0], [0.002, 1.0, 900.0]
    m, recipe = create_student("auto", (3,), 2, 100_000, domain=InputDomain(mean, std, source="teacher-bn"))
    assert recipe["input_norm"] == {"mean": mean, "std": std}
    rebuilt = build_from_recipe(recipe)
    rebuilt.load_state_dict(m.state_dict())
    x = torch.tensor(mean)[None] + torch.randn(64, 3) * torch.tensor(std)
    m.eval(), rebuilt.eval()
    assert torch.equal(m(x), rebuilt(x))
    assert "input_norm" not in create_student("auto", (3,), 2, 100_000, domain=InputDomain([0.0], [1.0]))[1]
    fp32, int8 = tmp_path / "s.onnx", tmp_path / "s8.onnx"
    export_onnx(m, (3,), fp32)
    quantize_one(fp32, int8, x.numpy().astype(np.float32), "qdq-u8s8", CalibConfig())
    graph = onnx.load(str(int8)).graph
    first = [n for n in graph.node if graph.input[0].name in n.input]
    assert first and all(n.op_type != "QuantizeLinear" for n in first)
