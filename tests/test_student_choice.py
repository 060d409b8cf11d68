"""Students for the device: the image families, --max-latency-ms / --latency-on and --student-factory."""

from __future__ import annotations

import sys

import pytest
import torch

from conftest import FAST, read_json
from dfkd_edge.errors import UserError
from dfkd_edge.models.students import RANK_FAMILIES, create_student, count_params
from dfkd_edge.student_choice import candidate_rows, choose_for_latency
from dfkd_edge.targets.profile import load_profile

SHAPE = (3, 12, 12)


@pytest.mark.parametrize("family", RANK_FAMILIES[3])
def test_image_families_grow_with_width_and_classify(family):
    small, _ = create_student(family, SHAPE, 5, 10**6, width=8)
    big, recipe = create_student(family, SHAPE, 5, 10**6, width=32)
    assert recipe["name"] == family and count_params(big) > count_params(small)
    assert big.eval()(torch.zeros(2, *SHAPE)).shape == (2, 5)


def test_mbv2_has_depthwise_convolutions_and_resnet_adds_its_input_back():
    mb, _ = create_student("mbv2", SHAPE, 5, 10**6, width=8)
    assert any(isinstance(m, torch.nn.Conv2d) and m.groups == m.in_channels > 1 for m in mb.modules())
    with pytest.raises(UserError, match="does not take inputs"):
        create_student("resnet", (1, 64), 5, 10**6)


def test_the_chosen_student_is_the_most_work_that_fits():
    nano = load_profile("jetson-orin-nano")
    rows = candidate_rows(SHAPE, 5, nano, 1e9, families=("conv2d",))
    limit = sorted(r["p50_ms"] for r in rows)[len(rows) // 2]  # about half the widths fit
    choice = choose_for_latency(SHAPE, 5, nano, limit)
    fits = [c for c in choice["candidates"] if c["fits"]]
    best = max(fits, key=lambda c: c["macs"])
    assert choice["chosen"] == {"family": best["family"], "width": best["width"]}
    assert all(c["p50_ms"] <= limit for c in fits) and choice["how"] == "estimated" and "held out" in choice["error"]
    for fam in RANK_FAMILIES[3]:  # each family stops at its first width that misses
        cs = [c for c in choice["candidates"] if c["family"] == fam]
        assert all(c["fits"] for c in cs[:-1])
    with pytest.raises(UserError, match="no student fits"):
        choose_for_latency(SHAPE, 5, nano, 1e-6)
    with pytest.raises(UserError, match="device target"):
        choose_for_latency(SHAPE, 5, load_profile("host-cpu"), 1.0)


def test_convert_chooses_the_student_for_the_device_and_says_how(digits_teacher, tmp_path, cli):
    out = tmp_path / "run"
    widths = candidate_rows((1, 8, 8), 10, load_profile("jetson-orin-nano"), 1e9, families=("conv2d",))
    limit = round(sorted(r["p50_ms"] for r in widths)[2], 4)  # the third-fastest conv2d width fits, and faster ones
    code, _, err = cli("convert", digits_teacher, "--out", out, "--target", "jetson-orin-nano", "--target", "host-cpu",
                       "--max-latency-ms", str(limit), *FAST)
    assert code == 0, err
    r = read_json(out / "report.json")
    c = r["student"]["chosen_for"]
    assert c["target"] == "jetson-orin-nano" and c["max_latency_ms"] == limit and c["how"] == "estimated"
    assert (r["student"]["name"], r["student"]["width"]) == (c["chosen"]["family"], c["chosen"]["width"])
    assert "Student chosen for jetson-orin-nano" in (out / "report.md").read_text()


def test_student_options_are_checked_before_any_work(digits_teacher, tmp_path, cli):
    for extra, msg in ((["--max-latency-ms", "1", "--width", "8"], "leave out --width"),
                       (["--latency-on", "jetson-orin-nano"], "give --max-latency-ms too"),
                       (["--max-latency-ms", "-1"], "positive number"),
                       (["--student-factory", "nocolon"], "package.module:function"),
                       (["--max-latency-ms", "1"], "needs a device"),
                       (["--latency-remote", "pi"], "give --max-latency-ms too"),
                       (["--ssh-config", "cfg"], "give --latency-remote too"),
                       (["--max-latency-ms", "1", "--latency-remote", "-oProxyCommand=x"], "not a valid")):
        code, _, err = cli("convert", digits_teacher, "--out", tmp_path / "x", *extra, *FAST)
        assert code == 2 and msg in err, (extra, err)


def test_a_users_student_factory_is_built_recorded_and_shipped(digits_teacher, tmp_path, cli, monkeypatch):
    (tmp_path / "my_students.py").write_text(
        "import torch.nn as nn\n"
        "def tiny(input_shape, num_classes):\n"
        "    c, h, w = input_shape\n"
        "    return nn.Sequential(nn.Conv2d(c, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), "
        "nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, num_classes))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    out = tmp_path / "run"
    code, _, err = cli("convert", digits_teacher, "--out", out, "--target", "host-cpu",
                       "--student-factory", "my_students:tiny", *FAST)
    assert code == 0, err
    r = read_json(out / "report.json")
    assert r["student"]["name"] == "factory" and r["student"]["factory"] == "my_students:tiny"
    assert r["student"]["num_params"] == 8 * 1 * 9 + 8 + 16 + 8 * 10 + 10  # digits: 1x8x8, 10 classes
    sys.modules.pop("my_students", None)
    code, _, err = cli("convert", digits_teacher, "--out", tmp_path / "bad", "--student-factory", "no_such_mod:f",
                       *FAST)
    assert code == 2 and "cannot be imported" in err


def test_the_latency_is_held_on_latency_on_else_the_first_device_target():
    from dfkd_edge.config import ConvertConfig
    from dfkd_edge.stages.inspect import latency_target

    cfg = ConvertConfig(teacher="t.pt", out="o", targets=("host-cpu", "jetson-agx-orin", "jetson-orin-nano"),
                        max_latency_ms=1)
    assert latency_target(cfg).name == "jetson-agx-orin"
    cfg.latency_on = "jetson-orin-nano:MAXN_SUPER"
    assert latency_target(cfg).name == "jetson-orin-nano" and latency_target(cfg).mode == "MAXN_SUPER"
