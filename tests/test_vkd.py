"""Virtual knowledge distillation: the generator's conditional behaviour, the loss wiring, the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import FAST, read_json
from dfkd_edge.data.digits import builtin_teacher_path, load_split
from dfkd_edge.distill import KDConfig, distill, kd_loss
from dfkd_edge.distill.vkd import (SelfDistillConfig, VirtualGenerator, VKDConfig, class_mean_kl, collaborate,
                                   fit_virtual_generator, generator_fidelity, load_virtual_generator,
                                   save_virtual_generator, soft_kl)
from dfkd_edge.errors import UserError
from dfkd_edge.models import create_model
from dfkd_edge.synthesis.virtual_target import VirtualTargetSynthesizer
from dfkd_edge.teacher import load_teacher


@pytest.fixture(scope="module")
def digits_logits():
    """The built-in teacher's logits on real digits: a stand-in transfer set with every class."""
    teacher = load_teacher(builtin_teacher_path())
    x_tr, _, x_te, _ = load_split()
    return teacher.logits(torch.from_numpy(x_tr)).numpy(), teacher.logits(torch.from_numpy(x_te)).numpy()


@pytest.fixture(scope="module")
def trained_generator(digits_logits):
    torch.set_num_threads(1)
    return fit_virtual_generator(digits_logits[0], VKDConfig(epochs=60, seed=0)).generator


def test_generator_argmax_is_the_label_for_nearly_all_noise(trained_generator):
    y = torch.arange(10).repeat_interleave(200)
    with torch.no_grad():
        pred = trained_generator.sample(y, torch.Generator().manual_seed(1)).argmax(1)
    per_class = [(pred[y == c] == c).float().mean().item() for c in range(10)]
    assert min(per_class) >= 0.95, per_class


def test_generator_uses_its_noise_and_is_faithful_on_held_out(trained_generator, digits_logits):
    y = torch.full((64,), 3)
    with torch.no_grad():
        out = trained_generator.sample(y, torch.Generator().manual_seed(2))
    assert (out - out[0]).abs().max() > 1e-3  # different noise, different distributions
    fid = generator_fidelity(trained_generator, digits_logits[1], digits_logits[0])
    assert fid["class_kl"] < 0.05, fid
    assert fid["label_agreement"] >= 0.95
    untrained = generator_fidelity(VirtualGenerator(10), digits_logits[1], digits_logits[0])
    assert fid["class_kl"] < untrained["class_kl"] / 5


def test_generator_file_round_trips_and_bad_files_are_refused(trained_generator, tmp_path):
    save_virtual_generator(tmp_path / "g.pt", trained_generator)
    g = load_virtual_generator(tmp_path / "g.pt")
    assert g.temperature == trained_generator.temperature and g.num_classes == 10
    z, y = torch.randn(5, g.z_dim), torch.arange(5)
    torch.testing.assert_close(g(z, y), trained_generator(z, y))
    (tmp_path / "bad.pt").write_bytes(b"not a generator")
    with pytest.raises(UserError, match="not a dfkd-edge virtual generator"):
        load_virtual_generator(tmp_path / "bad.pt")


def test_virtual_set_reproduces_the_generators_draws(trained_generator):
    teacher = load_teacher(builtin_teacher_path())
    synth = VirtualTargetSynthesizer(teacher, trained_generator, iterations=60, batch_size=64, seed=0)
    drawn = []
    context = synth.batch_context
    synth.batch_context = lambda n: drawn.append(context(n)) or drawn[-1]
    x = synth.sample(64)
    target = drawn[0]  # temperature 1: sharpened from the generator's softened draws
    assert torch.allclose(target.sum(1), torch.ones(64), atol=1e-5)
    assert sorted(np.bincount(target.argmax(1).numpy(), minlength=10)) == [6] * 6 + [7] * 4  # balanced labels

    def kl(inputs):
        return float(F.kl_div(F.log_softmax(teacher.logits(inputs), 1), target, reduction="batchmean"))

    assert kl(x) < 0.5 * kl(torch.rand(64, 1, 8, 8) * 2 - 1)
    assert (teacher.logits(x).argmax(1) == target.argmax(1)).float().mean() > 0.9


def test_losses():
    s, t = torch.randn(8, 5), torch.randn(8, 5)
    torch.testing.assert_close(kd_loss(s, t, 4.0), soft_kl(s, F.log_softmax(t / 4.0, 1), 4.0))
    assert soft_kl(t, F.log_softmax(t / 2.0, 1), 2.0).abs() < 1e-6
    y = torch.tensor([0, 0, 1, 2])
    p = F.log_softmax(torch.randn(4, 3), 1)
    assert class_mean_kl(p, p, y, 3).abs() < 1e-6
    assert class_mean_kl(p, p.flip(1), y, 3) > 0


class _Shifted(VirtualGenerator):
    """A 'generator' whose virtual targets put nearly all mass on (y + 1) mod K."""

    def forward(self, z, y):
        return F.log_softmax(10.0 * F.one_hot((y + 1) % self.num_classes, self.num_classes).float(), 1)


class _NoTeacher:
    def __call__(self, x):
        raise AssertionError("the teacher ran during VKD student training")


def _vectors(n=256, k=3, seed=0):
    g = np.random.default_rng(seed)
    x = g.standard_normal((n, 6)).astype(np.float32)
    logits = np.zeros((n, k), np.float32)
    logits[np.arange(n), (x[:, 0] > 0).astype(int) + (x[:, 1] > 1).astype(int)] = 8.0
    return x, logits


def _fit(mode, weight=0.5, mixup=1.0, teacher=None):
    x, logits = _vectors()
    torch.manual_seed(0)
    student = create_model("mlp", input_shape=(6,), num_classes=3, width=32)
    cfg = KDConfig(epochs=40, batch_size=64, mixup=mixup, mode=mode, vkd_weight=weight)
    teacher = teacher or (lambda xb: torch.from_numpy(np.zeros((len(xb), 3), np.float32)) + _lookup(xb))
    distill(student, x, logits, cfg, teacher=teacher, virtual=_Shifted(3))
    with torch.no_grad():
        pred = student(torch.from_numpy(x)).argmax(1).numpy()
    return pred, logits.argmax(1)


def _lookup(xb):
    """The 'teacher' of _vectors as a function (for online mixup)."""
    cls = (xb[:, 0] > 0).long() + (xb[:, 1] > 1).long()
    return 8.0 * F.one_hot(cls, 3).float()


def test_vkd_student_follows_the_virtual_targets_and_never_runs_the_teacher():
    pred, y = _fit("vkd", teacher=_NoTeacher())
    assert (pred == (y + 1) % 3).mean() > 0.9


def test_kd_plus_vkd_weights_decide_which_source_wins():
    pred_kd, y = _fit("kd+vkd", weight=0.1)
    pred_vkd, _ = _fit("kd+vkd", weight=0.9)
    assert (pred_kd == y).mean() > 0.8
    assert (pred_vkd == (y + 1) % 3).mean() > 0.8


def test_vkd_needs_a_generator_and_valid_settings():
    x, logits = _vectors(32)
    student = create_model("mlp", input_shape=(6,), num_classes=3, width=8)
    with pytest.raises(ValueError, match="virtual generator"):
        distill(student, x, logits, KDConfig(epochs=1, mode="vkd"))
    with pytest.raises(UserError, match="--distill"):
        distill(student, x, logits, KDConfig(epochs=1, mode="vkd2"), virtual=_Shifted(3))
    with pytest.raises(UserError, match="--vkd-weight"):
        distill(student, x, logits, KDConfig(epochs=1, mode="kd+vkd", vkd_weight=1.0), virtual=_Shifted(3))


def test_collaborative_peers_and_self_distillation_train():
    x_tr, y_tr, x_te, y_te = load_split()
    cfg = SelfDistillConfig(epochs=4, seed=0)
    torch.manual_seed(0)
    peers = [create_model("mlp", input_shape=(64,), num_classes=10, width=32) for _ in range(2)]
    history = collaborate(peers, x_tr.reshape(len(x_tr), -1), y_tr, cfg)
    assert len(history["ce"]) == 4 and len(history["ce"][0]) == 2
    assert history["ce"][-1][0] < history["ce"][0][0]
    assert all(v > 0 for v in history["vkd"][-1])  # each peer learned from the other's generator
    for p in peers:
        with torch.no_grad():
            acc = (p(torch.from_numpy(x_te.reshape(len(x_te), -1))).argmax(1).numpy() == y_te).mean()
        assert acc > 0.8
    with pytest.raises(UserError, match="labels must lie"):
        collaborate(peers, x_tr.reshape(len(x_tr), -1), y_tr + 10, cfg)


# ----------------------------------------------------------------------------- CLI


def test_convert_with_vkd_reports_generator_and_plain_kd(cli, tmp_path, digits_teacher, digits_test):
    code, out, err = cli("convert", digits_teacher, *FAST, "--distill", "vkd", "--vkd-epochs", "3",
                         "--vkd-transfer", "virtual", "--eval-data", digits_test, "--out", tmp_path / "o")
    assert code == 0, err
    r = read_json(tmp_path / "o/report.json")
    d = r["distillation"]
    assert d["mode"] == "vkd" and d["weights"] == {"kd": 0.0, "vkd": 1.0}
    assert d["teacher_run_during_training"] is False
    assert set(d["virtual_generator"]["fidelity"]) >= {"class_kl", "sample_kl", "label_agreement"}
    assert d["comparison"]["vkd"]["accuracy"] is not None and d["comparison"]["kd"]["file"] == "student_kd_baseline.pt"
    assert {"virtual_generator.pt", "virtual_generator.json", "student_kd_baseline.pt"} <= set(r["artifacts"])
    # the VKD student learned on a second set, synthesized for the generator's targets
    assert d["inputs"] == {"file": "virtual_set.npz", "samples": 128, "made_for": "the virtual generator's targets"}
    assert read_json(tmp_path / "o/manifest.json")["stages"]["distill"]["reads"][:2] == ["transfer_set.npz",
                                                                                        "virtual_set.npz"]
    assert read_json(tmp_path / "o/manifest.json")["config"]["kd"]["mode"] == "vkd"
    assert "virtual generator" in out.lower() and "plain KD" in out
    assert isinstance(r["quality"]["signals"]["baseline_gap"], float)  # the verdict compares the two students


def test_convert_kd_plus_vkd_without_comparison(cli, tmp_path, digits_teacher):
    code, _, err = cli("convert", digits_teacher, *FAST, "--distill", "kd+vkd", "--vkd-weight", "0.3",
                       "--vkd-epochs", "2", "--no-compare-kd", "--out", tmp_path / "o")
    assert code == 0, err
    d = read_json(tmp_path / "o/report.json")["distillation"]
    assert d["weights"] == {"kd": 0.7, "vkd": 0.3} and d["comparison"] is None
    assert not (tmp_path / "o/student_kd_baseline.pt").exists()
    assert d["inputs"]["file"] == "transfer_set.npz" and not (tmp_path / "o/virtual_set.npz").exists()


def test_default_distillation_is_plain_kd(cli, tmp_path, digits_teacher):
    assert cli("convert", digits_teacher, *FAST, "--out", tmp_path / "o")[0] == 0
    d = read_json(tmp_path / "o/report.json")["distillation"]
    assert d["mode"] == "kd" and d["virtual_generator"] is None
    assert not (tmp_path / "o/virtual_generator.pt").exists()


@pytest.mark.parametrize("args,needle", [
    (["--distill", "vkd3"], "--distill"),
    (["--distill", "kd+vkd", "--vkd-weight", "1.5"], "--vkd-weight"),
    (["--distill", "vkd", "--vkd-epochs", "0"], "--vkd-epochs"),
    (["--distill", "vkd", "--method", "adversarial"], "trains the student during synthesis"),
    (["--distill", "vkd", "--vkd-transfer", "real"], "--vkd-transfer"),
])
def test_bad_distill_options_exit_2(cli, tmp_path, digits_teacher, args, needle):
    code, _, err = cli("convert", digits_teacher, *FAST, *args, "--out", tmp_path / "o")
    assert code == 2 and needle in err and "Traceback" not in err


@pytest.fixture(scope="module")
def digits_train_npz(tmp_path_factory):
    x, y, _, _ = load_split()
    path = tmp_path_factory.mktemp("sd") / "train.npz"
    np.savez(path, x=x[:400], y=y[:400])
    return path


def test_selfdistill_zoo_model(cli, tmp_path, digits_train_npz, digits_test):
    code, out, err = cli("selfdistill", "conv2d", digits_train_npz, "--out", tmp_path / "o", "--epochs", "3",
                         "--width", "8", "--eval-data", digits_test, "--threads", "1")
    assert code == 0, err
    r = read_json(tmp_path / "o/selfdistill.json")
    assert r["model_kind"] == "zoo:conv2d" and r["train_samples"] == 400 and r["validation_samples"] == 450
    assert 0 <= r["accuracy"]["selfdistill_vkd"] <= 1 and r["accuracy"]["cross_entropy"] is not None
    assert "self-distillation (VKD)" in out
    assert load_teacher(tmp_path / "o/model.pt").spec.input_shape == (1, 8, 8)  # a convert teacher as it is
    assert load_virtual_generator(tmp_path / "o/virtual_generator.pt").num_classes == 10
    code, _, err = cli("selfdistill", "conv2d", digits_train_npz, "--out", tmp_path / "o", "--epochs", "1")
    assert code == 2 and "--force" in err


def test_selfdistill_model_file_continues_from_its_weights(cli, tmp_path, digits_teacher, digits_train_npz):
    code, _, err = cli("selfdistill", digits_teacher, digits_train_npz, "--out", tmp_path / "o", "--epochs", "1",
                       "--lr", "1e-4", "--no-compare-ce", "--threads", "1")
    assert code == 0, err
    r = read_json(tmp_path / "o/selfdistill.json")
    assert r["model_kind"] == "torchscript" and r["accuracy"]["cross_entropy"] is None
    assert r["accuracy"]["selfdistill_vkd"] > 0.9  # started from the trained teacher, not from scratch
    assert r["validation_samples"] == 40  # --val-fraction 0.1 of 400


@pytest.mark.parametrize("model,extra,needle", [
    ("conv1d", [], "does not take inputs of shape"),
    ("conv2d", ["--val-fraction", "0.95"], "--val-fraction"),
    ("conv2d", ["--epochs", "0"], "--epochs"),
])
def test_selfdistill_bad_input_exit_2(cli, tmp_path, digits_train_npz, model, extra, needle):
    code, _, err = cli("selfdistill", model, digits_train_npz, "--out", tmp_path / "o", *extra)
    assert code == 2 and needle in err and "Traceback" not in err


def test_selfdistill_bad_data_exit_2(cli, tmp_path):
    (tmp_path / "d.npz").write_bytes(b"nope")
    code, _, err = cli("selfdistill", "conv2d", tmp_path / "d.npz", "--out", tmp_path / "o")
    assert code == 2 and "npz" in err


def test_selfdistill_refuses_an_exported_program(cli, tmp_path, digits_train_npz):
    from dfkd_edge.models.teachers import digits_cnn_small_for_tests

    m = digits_cnn_small_for_tests().eval()
    ep = torch.export.export(m, (torch.randn(2, 1, 8, 8),), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(ep, tmp_path / "t.pt2")
    code, _, err = cli("selfdistill", tmp_path / "t.pt2", digits_train_npz, "--out", tmp_path / "o")
    assert code == 2 and "cannot be trained here" in err


def test_vkd_run_resumes_without_retraining(cli, tmp_path, digits_teacher):
    args = ["convert", digits_teacher, *FAST, "--distill", "vkd", "--vkd-transfer", "virtual", "--vkd-epochs", "2",
            "--out", tmp_path / "o"]
    assert cli(*args)[0] == 0
    before = (tmp_path / "o/virtual_generator.pt").read_bytes()
    code, _, err = cli(*args, "--resume")
    assert code == 0, err
    stages = read_json(tmp_path / "o/manifest.json")["stages"]
    assert stages["virtual"].get("resumed") and stages["distill"].get("resumed")
    assert stages["distill-kd-baseline"].get("resumed")
    assert (tmp_path / "o/virtual_generator.pt").read_bytes() == before
    code, _, err = cli(*args[:-2], "--vkd-epochs", "3", "--out", tmp_path / "o", "--resume")
    assert code == 0, err
    stages = read_json(tmp_path / "o/manifest.json")["stages"]
    assert not stages["virtual"].get("resumed") and not stages["distill"].get("resumed")
    assert stages["distill-kd-baseline"].get("resumed")  # plain KD does not depend on the generator
    assert not stages["virtual-set"].get("resumed")  # synthesized for the new generator's targets


def test_generator_takes_label_distributions_and_learns_mixed_pairs(tmp_path):
    g = VirtualGenerator(4)
    z, y = torch.randn(6, g.z_dim), torch.tensor([0, 1, 2, 3, 0, 1])
    torch.testing.assert_close(g(z, y), g(z, F.one_hot(y, 4).float()))  # a one-hot distribution = the label
    x, logits = _vectors(128)
    vk = fit_virtual_generator(logits, VKDConfig(epochs=3, mixup=1.0), x=x, teacher=_lookup)
    assert vk.generator.mixed
    save_virtual_generator(tmp_path / "g.pt", vk.generator)
    assert load_virtual_generator(tmp_path / "g.pt").mixed
    with pytest.raises(ValueError, match="mixed labels"):
        fit_virtual_generator(logits, VKDConfig(epochs=1, mixup=1.0))


def test_report_points_to_plain_kd_when_it_scored_higher():
    from dfkd_edge.report.render import _distillation_blocks

    fid = {"class_kl": 0.01, "sample_kl": 0.2, "sample_kl_class_mean": 0.1, "label_agreement": 0.99,
           "entropy_generator": 1.8, "entropy_teacher": 1.9, "held_out_samples": 256}
    d = {"mode": "vkd", "weights": {"kd": 0.0, "vkd": 1.0}, "temperature": 4.0,
         "virtual_generator": {"file": "virtual_generator.pt", "parameters": 21358, "size_bytes": 89551,
                               "fidelity": fid},
         "comparison": {"vkd": {"accuracy": 0.85, "fidelity": 0.7},
                        "kd": {"accuracy": 0.99, "fidelity": 0.9, "file": "student_kd_baseline.pt"}}}
    text = " ".join(b.text for b in _distillation_blocks(d, "test.npz"))
    assert "14.0 points higher" in text and "--distill kd" in text
    d["comparison"]["vkd"]["accuracy"] = 0.985
    assert "points higher" not in " ".join(b.text for b in _distillation_blocks(d, "test.npz"))
