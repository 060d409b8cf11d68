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
