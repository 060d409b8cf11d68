"""The input domain: read from the teacher, given by the user, and used by every method; the
data-free quality verdict."""

import json

import math

import numpy as np
import pytest
import torch
from torch import nn

from dfkd_edge.domain import InputDomain, infer_domain, smooth_noise, user_domain
from dfkd_edge.errors import UserError
from dfkd_edge.quality import class_coverage, even_spread, probe_set, verdict
from dfkd_edge.synthesis import create_synthesizer
from dfkd_edge.teacher import load_teacher, save_torchscript
from tests.conftest import FAST, read_json


def _with_running_stats(model: nn.Module, x: torch.Tensor) -> nn.Module:
    """BatchNorm running statistics of ``x`` (cumulative average), as training on x would leave them."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.momentum = None
    model.train()
    with torch.no_grad():
        for i in range(0, len(x), 256):
            model(x[i:i + 256])
    return model.eval()


def _save(model, path, shape):
    save_torchscript(model, path, shape)
    return load_teacher(path)


@pytest.fixture(scope="module")
def tabular_teacher(tmp_path_factory):
    """BatchNorm first on unscaled features: magnitudes 0.01 to 1,000, one negative mean."""
    torch.manual_seed(0)
    mean, std = torch.tensor([1000.0, 0.01, 3.0, -40.0]), torch.tensor([300.0, 0.004, 1.0, 5.0])
    x = mean + std * torch.randn(4096, 4)
    m = nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 3))
    path = tmp_path_factory.mktemp("tab") / "tab.pt"
    return _save(_with_running_stats(m, x), path, (4,)), mean, std


@pytest.fixture(scope="module")
def raw_pixel_teacher(tmp_path_factory):
    """Conv then BatchNorm on raw 0-255 pixels (two channels of different brightness)."""
    torch.manual_seed(0)
    x = torch.cat([torch.rand(2048, 1, 8, 8) * 255, 100 + torch.rand(2048, 1, 8, 8) * 50], 1)
    m = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                      nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4))
    path = tmp_path_factory.mktemp("raw") / "raw.pt"
    return _save(_with_running_stats(m, x), path, (2, 8, 8)), x


def test_a_batchnorm_first_teacher_gives_its_input_statistics_exactly(tabular_teacher):
    teacher, mean, std = tabular_teacher
    d = infer_domain(teacher)
    assert d.source == "teacher-bn"
    np.testing.assert_allclose(d.mean, mean.numpy(), rtol=0.02, atol=1e-4)
    np.testing.assert_allclose(d.std, std.numpy(), rtol=0.03)


def test_a_conv_then_batchnorm_teacher_gives_the_scale_of_raw_pixels(raw_pixel_teacher):
    teacher, x = raw_pixel_teacher
    d = infer_domain(teacher)
    true_mean, true_std = x.mean((0, 2, 3)).numpy(), x.std((0, 2, 3)).numpy()
    np.testing.assert_allclose(d.mean, true_mean, rtol=0.15)
    # the bright channel's spread dominates the layer's variance: its std is read, the other's scale only
    assert abs(d.std[0] / true_std[0] - 1) < 0.3 and 0.25 < d.std[1] / true_std[1] < 4


def test_a_per_sample_level_is_read_apart_from_the_variation_inside_a_sample(tmp_path):
    """Each image's own brightness (spread 20) on top of pixel noise (spread 5): the first layer's filters
    weigh the two differently, so the fit tells them apart; samples are drawn with both."""
    torch.manual_seed(0)
    level, inside = 20.0, 5.0
    x = 100 + level * torch.randn(4096, 2, 1, 1) + inside * torch.randn(4096, 2, 8, 8)
    m = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                      nn.Flatten(), nn.Linear(8, 3))
    d = infer_domain(_save(_with_running_stats(m, x), tmp_path / "lvl.pt", (2, 8, 8)))
    assert d.level_std is not None and "each sample's level" in d.detail, d
    np.testing.assert_allclose(d.level_std, [level] * 2, rtol=0.3)
    # the split per channel is only as sharp as eight random filters make it; the level dominates
    assert all(lv > s for lv, s in zip(d.level_std, d.std)), d
    total = np.hypot(d.level_std, d.std)
    np.testing.assert_allclose(total, [np.hypot(level, inside)] * 2, rtol=0.25)
    assert all(p < 0.5 * s for p, s in zip(d.smooth_std, d.std)), d  # the pixel noise is independent
    drawn = d.draw(2048, (2, 8, 8), torch.Generator().manual_seed(0))
    np.testing.assert_allclose(drawn.mean((2, 3)).std(0).numpy(), d.level_std, rtol=0.15)


def test_smooth_variation_is_read_as_smooth(tmp_path):
    """Blobs a few pixels wide (spread 10) over fine grain (spread 2): most of the spread is read as smooth."""
    torch.manual_seed(0)
    x = 50 + 10 * smooth_noise(torch.randn(4096, 2, 8, 8)) + 2 * torch.randn(4096, 2, 8, 8)
    m = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                      nn.Flatten(), nn.Linear(8, 3))
    d = infer_domain(_save(_with_running_stats(m, x), tmp_path / "smooth.pt", (2, 8, 8)))
    assert d.smooth_std is not None, d
    white = np.sqrt(np.square(d.std) - np.square(d.smooth_std))
    assert all(p > 1.5 * w for p, w in zip(d.smooth_std, white)), d
    np.testing.assert_allclose(np.hypot(d.std, d.level_std), [np.hypot(10, 2)] * 2, rtol=0.35)


def test_pixels_without_a_shared_level_get_little_of_one(raw_pixel_teacher):
    """Independent pixels: the channel that dominates the first layer gets a level spread far below its
    spread inside a sample (the faint channel is read only roughly, as its std above)."""
    teacher, _ = raw_pixel_teacher
    d = infer_domain(teacher)
    assert d.level_std is None or d.level_std[0] < 0.25 * d.std[0], d


def test_every_method_synthesizes_inside_the_domain(raw_pixel_teacher):
    """Inputs of the teacher's scale, not around 0: inversion, soft targets, generators, noise."""
    teacher, x = raw_pixel_teacher
    teacher.domain = infer_domain(teacher)
    true_mean = x.mean((0, 2, 3)).numpy()
    for method in ("deepinversion", "soft-target", "reused-generator", "gaussian"):
        s = create_synthesizer(method, teacher, iterations=20, batch_size=32, seed=0).synthesize(32)
        got = s.x.mean((0, 2, 3))
        assert np.all(np.abs(got - true_mean) < 0.5 * true_mean), (method, got, true_mean)
    adv = create_synthesizer("adversarial", teacher, batch_size=32, seed=0)
    assert np.all(np.abs(adv.sample(64).mean((0, 2, 3)).numpy() - true_mean) < 0.5 * true_mean)


def test_no_batchnorm_means_the_domain_is_assumed_and_said(tmp_path, caplog):
    m = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    t = _save(m, tmp_path / "nobn.pt", (5,))
    d = infer_domain(t)
    assert d.source == "assumed" and d.mean == [0.0] * 5 and d.std == [1.0] * 5
    assert "cannot be read" in caplog.text


def test_user_domain_parsing():
    d = user_domain((3, 8, 8), input_range="0,255")
    assert d.source == "user" and d.mean == [127.5] * 3 and d.std == [63.75] * 3 and (d.low, d.high) == (0, 255)
    assert d.clamp(torch.tensor([-5.0, 300.0])).tolist() == [0.0, 255.0]
    d = user_domain((3, 8, 8), mean="0.485,0.456,0.406", std="0.229,0.224,0.225")
    assert d.mean == [0.485, 0.456, 0.406] and d.low is None
    assert user_domain((3, 8, 8)) is None
    for kw, msg in [({"input_range": "1,0"}, "LO < HI"), ({"input_range": "0"}, "LO < HI"),
                    ({"mean": "0.5"}, "together"), ({"mean": "1,2", "std": "1,1"}, "give 1 or 3"),
                    ({"mean": "0", "std": "-1"}, "positive"), ({"input_range": "a,b"}, "not a comma-separated"),
                    ({"mean": "300", "std": "1", "input_range": "0,1"}, "outside")]:
        with pytest.raises(UserError, match=msg):
            user_domain((3, 8, 8), **kw)


def test_a_given_range_keeps_samples_inside_it(raw_pixel_teacher):
    teacher, _ = raw_pixel_teacher
    teacher.domain = user_domain((2, 8, 8), input_range="0,255")
    s = create_synthesizer("deepinversion", teacher, iterations=15, batch_size=32, seed=0).synthesize(32)
    assert s.x.min() >= 0 and s.x.max() <= 255 and s.x.mean() > 30
    teacher.domain = None


def test_domain_roundtrip():
    d = InputDomain([1.0, 2.0], [0.5, 0.25], 0.0, 3.0, "user", "given")
    assert InputDomain.from_dict(json.loads(json.dumps(d.to_dict()))) == d
    d = InputDomain([1.0, 2.0], [0.5, 0.25], source="teacher-bn", detail="fitted", level_std=[0.75, 0.5],
                    smooth_std=[0.25, 0.125])
    assert InputDomain.from_dict(json.loads(json.dumps(d.to_dict()))) == d


# ----------------------------------------------------------------------------- the verdict

GOOD = {"classes": 10, "class_coverage": 0.99, "classes_seen": 1.0, "bn_mismatch": 0.2, "fidelity_fp32": 0.99,
        "fidelity_int8": 0.98, "probe_agreement": 0.95, "teacher_agreement": None, "domain_source": "teacher-bn"}


@pytest.mark.parametrize("change, expected", [
    ({}, "ok"),
    ({"bn_mismatch": 0.7}, "doubtful"),
    ({"bn_mismatch": 2.5}, "unreliable"),
    ({"class_coverage": 0.3}, "unreliable"),
    ({"classes_seen": 0.9}, "doubtful"),
    ({"teacher_agreement": 0.45}, "unreliable"),
    ({"teacher_agreement": 0.97}, "ok"),
    ({"teacher_agreement": 0.65}, "doubtful"),
    ({"probe_agreement": 0.3}, "ok"),
    ({"fidelity_int8": 0.6}, "doubtful"),
    ({"fidelity_fp32": 0.4}, "unreliable"),
    ({"domain_source": "assumed", "bn_mismatch": None}, "doubtful"),
    ({"domain_source": "user", "bn_mismatch": None}, "ok"),
    ({"baseline_gap": 0.02}, "ok"),
    ({"baseline_gap": -0.1}, "ok"),  # the shipped student is the better one
    ({"baseline_gap": 0.08}, "doubtful"),
    ({"baseline_gap": 0.2}, "unreliable"),
])
def test_verdict_bounds(change, expected):
    v, reasons = verdict({**GOOD, **change})
    assert v == expected
    assert bool(reasons) == (expected != "ok")


def test_class_coverage_and_probes():
    one_class = np.zeros((100, 4), np.float32)
    one_class[:, 2] = 5
    assert class_coverage(one_class) == pytest.approx((0.0, 0.25), abs=1e-4)
    balanced = np.eye(4, dtype=np.float32)[np.arange(100) % 4]
    assert class_coverage(balanced) == pytest.approx((1.0, 1.0))
    x = np.stack([np.full((1, 3), i, np.float32) for i in range(100)])
    p = probe_set(x, balanced, n=64)
    assert p.shape == (64, 1, 3) and np.isfinite(p).all()


def test_the_report_leads_with_the_verdict_and_warns(cli, tmp_path, digits_teacher, digits_test):
    """A tiny run cannot be vouched for: report.json says so, report.md leads with it, stderr warns once,
    and the recommendation carries the status; the user's --input-range is what the run used."""
    out = tmp_path / "o"
    code, _, err = cli("convert", digits_teacher, *FAST, "--input-range", "-1,1", "--eval-data", digits_test,
                       "--out", out)
    assert code == 0, err
    r = read_json(out / "report.json")
    assert r["teacher"]["input_domain"]["source"] == "user" and r["teacher"]["input_domain"]["low"] == -1
    q = r["quality"]
    assert q["verdict"] != "ok" and q["reasons"]
    assert all(rec["status"] == q["verdict"] and rec["reason"].startswith(q["verdict"].upper())
               for rec in r["recommended"])
    assert sum("warning: data-free verdict" in line for line in err.splitlines()) == 1
    md = (out / "report.md").read_text().splitlines()
    assert md[2].startswith(f"> **Data-free verdict: {q['verdict'].upper()}")
    assert 'class=\'verdict' in (out / "report.html").read_text()
    assert json.loads((out / "teacher.json").read_text())["input_domain"]["source"] == "user"


def test_bad_input_range_is_exit_2(cli, tmp_path, digits_teacher):
    code, _, err = cli("convert", digits_teacher, *FAST, "--input-range", "1,0", "--out", tmp_path / "o")
    assert code == 2 and "LO < HI" in err and "Traceback" not in err


def _photo_crops(n: int, size: int = 16, seed: int = 0) -> torch.Tensor:
    """Crops of scikit-learn's two sample photographs (a temple, a flower), [0, 1], (n, 3, size, size):
    colour channels correlated as in any photograph."""
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    imgs = [torch.from_numpy(i.astype(np.float32) / 255).permute(2, 0, 1) for i in load_sample_images().images]
    out = torch.empty(n, 3, size, size)
    for i in range(n):
        img = imgs[i % 2]
        side = int(rng.integers(size, 4 * size))
        top, left = rng.integers(0, img.shape[1] - side), rng.integers(0, img.shape[2] - side)
        out[i] = nn.functional.interpolate(img[None, :, top:top + side, left:left + side], size=(size, size),
                                           mode="bilinear", antialias=True, align_corners=False)[0]
    return out


def _channel_stats(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    flat = x.transpose(0, 1).reshape(x.shape[1], -1).double().numpy()
    return flat.std(1), np.corrcoef(flat)[np.triu_indices(x.shape[1], 1)]


@pytest.fixture(scope="module")
def photo_teacher(tmp_path_factory):
    """Conv then BatchNorm on crops of real photographs, ImageNet's z-score."""
    torch.manual_seed(0)
    mean, std = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x = (_photo_crops(2048) - mean) / std
    m = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1),
                      nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 5))
    path = tmp_path_factory.mktemp("photo") / "photo.pt"
    return _save(_with_running_stats(m, x), path, (3, 16, 16)), x


def test_a_photograph_teacher_gives_its_colours_spread_and_correlation(photo_teacher):
    """The first BatchNorm behind a convolution constrains mixtures of the colour channels: the fit reads
    how they move together, and with it each channel's spread (the per-channel fit left a larger mismatch)."""
    teacher, x = photo_teacher
    d = infer_domain(teacher)
    assert d.corr is not None and "with the channels correlated" in d.detail, d.detail
    real_std, real_corr = _channel_stats(x)
    drawn_std, drawn_corr = _channel_stats(d.draw(2048, (3, 16, 16), torch.Generator().manual_seed(0)))
    assert np.all(np.abs(drawn_std / real_std - 1) < 0.25), (drawn_std, real_std)
    assert np.all(np.abs(drawn_corr - real_corr) < 0.15), (drawn_corr, real_corr)
    assert real_corr.min() > 0.7  # photographs: the test means something
    before = [float(v) for v in d.detail.replace(")", "").split("mismatch ")[1].split(";")[0:1]]
    assert d.fit_mismatch < 0.5 * before[0], d.detail


def test_independent_channels_are_not_read_as_correlated(raw_pixel_teacher):
    teacher, x = raw_pixel_teacher
    d = infer_domain(teacher)
    if d.corr is not None:
        assert abs(d.corr[0][1]) < 0.3, d.corr


def test_a_given_mean_and_std_fix_the_domain_and_the_correlation_is_still_read(photo_teacher):
    teacher, x = photo_teacher
    real_std, real_corr = _channel_stats(x)
    mean = [round(float(v), 2) for v in x.mean((0, 2, 3))]
    user = user_domain((3, 16, 16), ",".join(map(str, mean)), ",".join(f"{v:.2f}" for v in real_std))
    d = infer_domain(teacher, user)
    assert d.source == "user" and d.mean == mean and d.corr is not None
    whole = np.sqrt(np.array(d.std) ** 2 + np.array(d.level_std) ** 2)
    np.testing.assert_allclose(whole, np.round(real_std, 2), rtol=1e-4)
    read = np.array([d.corr[0][1], d.corr[0][2], d.corr[1][2]])
    assert np.all(np.abs(read - real_corr) < 0.15), (read, real_corr)
    assert infer_domain(teacher, user_domain((3, 16, 16), None, None, "-3,3")).corr is None  # a range says no spread


def test_mixing_roundtrip_and_correlated_draws():
    d = InputDomain([0.0, 1.0, 2.0], [1.0, 2.0, 3.0], corr=[[1, 0.9, 0.8], [0.9, 1, 0.9], [0.8, 0.9, 1]])
    u = torch.randn(512, 3, 4, 4)
    torch.testing.assert_close(d.unmix(d.mix(u)), u, atol=1e-4, rtol=1e-4)
    std, corr = _channel_stats(d.draw(4096, (3, 4, 4), torch.Generator().manual_seed(0)))
    np.testing.assert_allclose(std, [1, 2, 3], rtol=0.05)
    np.testing.assert_allclose(corr, [0.9, 0.8, 0.9], atol=0.03)
    assert InputDomain.from_dict(json.loads(json.dumps(d.to_dict()))).corr == d.corr


def test_the_domain_fit_residual_makes_the_verdict_doubtful():
    base = {"classes": 10, "class_coverage": 0.99, "classes_seen": 1.0, "bn_mismatch": 0.1, "fidelity_fp32": 0.9,
            "fidelity_int8": 0.9, "domain_source": "teacher-bn"}
    assert verdict({**base, "domain_fit": 0.05})[0] == "ok"
    v, reasons = verdict({**base, "domain_fit": 0.48})
    assert v == "doubtful" and any("first BatchNorm" in r and "0.48" in r for r in reasons)
    assert verdict({**base, "domain_fit": 1.2})[0] == "unreliable"


def test_class_signals_mean_the_same_when_the_classes_outnumber_the_samples():
    """256 samples of a 1000-class model cannot show every class: a model spread evenly over its classes is
    judged even, one that only ever answers 50 classes is not."""
    rng = np.random.default_rng(0)
    seen, sd, h = even_spread(256, 1000)
    assert 220 < seen < 232 and 3 < sd < 6 and h < math.log(1000) - 1
    for seed in range(5):
        even = np.eye(1000, dtype=np.float32)[np.random.default_rng(seed).integers(0, 1000, 256)]
        coverage, classes_seen = class_coverage(even)
        assert coverage > 0.98 and classes_seen > 0.97
    narrow = np.eye(1000, dtype=np.float32)[rng.integers(0, 50, 256)]
    coverage, classes_seen = class_coverage(narrow)
    assert coverage < 0.75 and classes_seen < 0.25
    # many samples of few classes: the old reading (entropy over log(classes), the share seen)
    assert even_spread(4096, 10)[0] == pytest.approx(10.0)
    assert even_spread(4096, 10)[2] == pytest.approx(math.log(10), abs=2e-3)
    nine = np.eye(10, dtype=np.float32)[np.arange(4096) % 9]
    assert class_coverage(nine)[1] == pytest.approx(0.9)
