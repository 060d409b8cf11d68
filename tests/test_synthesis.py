"""Synthesis methods: the inversion works for images, signals and vectors; transfer-set files."""

import copy
import itertools

import numpy as np
import pytest
import torch

from dfkd_edge.errors import UserError
from dfkd_edge.synthesis import TransferSet, create_synthesizer
from dfkd_edge.synthesis.base import bn_statistics_loss
from dfkd_edge.teacher import load_teacher


def _bn_loss(teacher, x):
    with torch.no_grad(), teacher.taps() as rec:
        teacher(torch.from_numpy(x))
    return float(bn_statistics_loss(rec.bn_inputs()))


@pytest.fixture(params=["image", "signal", "vector"])
def teacher(request, digits_teacher, toy_teachers):
    if request.param == "image":
        return load_teacher(digits_teacher)
    if request.param == "signal":
        return load_teacher(toy_teachers["signal"]["teacher"], (1, 40))
    return load_teacher(toy_teachers["vector"]["teacher"], (30,))


def test_inversion_matches_bn_statistics_and_labels_better_than_noise(teacher):
    k = teacher.spec.num_classes
    inv = create_synthesizer("deepinversion", teacher, iterations=60, batch_size=64, seed=0).synthesize(64)
    noise = create_synthesizer("gaussian", teacher, seed=0).synthesize(64)
    assert inv.x.shape == (64, *teacher.spec.input_shape) and inv.logits.shape == (64, k)
    assert _bn_loss(teacher, inv.x) < 0.5 * _bn_loss(teacher, noise.x)
    # labels are balanced across classes and the teacher agrees with them
    counts = np.bincount(inv.logits.argmax(1), minlength=k)
    assert counts.min() > 0
    assert np.isfinite(inv.x).all()


def _scaled_twins(tmp_path, k: float):
    """A conv + BN teacher on [0, 1] inputs and its exact twin on inputs k times larger (the first
    BatchNorm's running statistics, and the conv bias, in the twin's units): twin(k x) == net(x)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.Flatten(), torch.nn.Linear(4 * 8 * 8, 3)).eval()
    for bn in (net[1], net[4]):
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.2, 2.0)
    twin = copy.deepcopy(net)
    with torch.no_grad():
        twin[0].bias.mul_(k)
        twin[1].running_mean.mul_(k)
        twin[1].running_var.mul_(k * k)
    x = torch.rand(16, 1, 8, 8)
    assert torch.allclose(twin(k * x), net(x), atol=1e-4)
    teachers = []
    for name, m in (("net", net), ("twin", twin)):
        torch.jit.save(torch.jit.script(m), str(tmp_path / f"{name}.pt"))
        teachers.append(load_teacher(str(tmp_path / f"{name}.pt"), (1, 8, 8)))
    return teachers, x


def test_standardised_bn_loss_does_not_see_the_input_units(tmp_path):
    (net, twin), x = _scaled_twins(tmp_path, 255.0)

    def loss(t, xs, standardised):
        with torch.no_grad(), t.taps() as rec:
            t(xs)
        return float(bn_statistics_loss(rec.bn_inputs(), 10.0, standardised=standardised))

    assert loss(twin, 255 * x, True) == pytest.approx(loss(net, x, True), rel=1e-3)
    assert loss(twin, 255 * x, False) > 1000 * loss(net, x, False)  # why the generator methods standardise


def test_standardised_inversion_gives_the_same_samples_in_any_input_units(tmp_path):
    """``bn_units="standardised"``: a teacher and its exact twin on inputs 255x larger, each given its own
    domain, invert to the same samples up to that factor; the raw distance does not (the twin's first
    BatchNorm term is 65,000x the other's and rules the loss)."""
    from dfkd_edge.domain import InputDomain

    (net, twin), _ = _scaled_twins(tmp_path, 255.0)
    net.domain = InputDomain([0.4], [0.3], source="user")
    twin.domain = InputDomain([0.4 * 255], [0.3 * 255], source="user")
    gap = {}
    for units in ("standardised", "raw"):
        a, b = (create_synthesizer("deepinversion", t, iterations=30, batch_size=32, seed=0, bn_units=units).sample(32)
                for t in (net, twin))
        gap[units] = float((b / 255 - a).abs().max()) / float(a.std())
    assert gap["standardised"] < 1e-2  # float32 rounding over 30 Adam steps (measured 0.001)
    assert gap["raw"] > 0.5  # measured 1.8 of the samples' spread


def test_bn_units_is_checked(digits_teacher):
    with pytest.raises(UserError, match="bn_units"):
        create_synthesizer("deepinversion", load_teacher(digits_teacher), bn_units="pixels")


def test_transfer_set_roundtrip_without_pickle(tmp_path, digits_teacher):
    t = load_teacher(digits_teacher)
    ts = create_synthesizer("gaussian", t, seed=3).synthesize(40, holdout=10)
    ts.save(tmp_path / "ts.npz")
    back = TransferSet.load(tmp_path / "ts.npz")
    np.testing.assert_array_equal(back.x, ts.x)
    np.testing.assert_array_equal(back.logits, ts.logits)
    assert back.holdout.sum() == 10 and back.method == "gaussian"
    assert back.train[0].shape[0] == 40 and back.held_out[0].shape[0] == 10
    with np.load(tmp_path / "ts.npz", allow_pickle=False) as z:
        assert set(z.files) == {"x", "logits", "holdout", "method"}


def test_same_seed_same_samples(digits_teacher):
    t = load_teacher(digits_teacher)
    a = create_synthesizer("deepinversion", t, iterations=5, batch_size=16, seed=7).synthesize(16)
    b = create_synthesizer("deepinversion", t, iterations=5, batch_size=16, seed=7).synthesize(16)
    c = create_synthesizer("deepinversion", t, iterations=5, batch_size=16, seed=8).synthesize(16)
    np.testing.assert_array_equal(a.x, b.x)
    assert not np.array_equal(a.x, c.x)


def test_unknown_method(digits_teacher):
    with pytest.raises(UserError, match="deepinversion"):
        create_synthesizer("nope", load_teacher(digits_teacher))


def test_soft_target_samples_reproduce_their_soft_targets(teacher):
    s = create_synthesizer("soft-target", teacher, iterations=60, batch_size=64, seed=0)
    seen = []
    orig = s.soft_targets
    s.soft_targets = lambda n: seen.append(orig(n)) or seen[-1]
    ts = s.synthesize(64)
    target = seen[0]
    assert torch.allclose(target.sum(1), torch.ones(64), atol=1e-5)
    logp = torch.log_softmax(torch.from_numpy(ts.logits), 1)
    kl_after = float(torch.nn.functional.kl_div(logp, target, reduction="batchmean"))
    logp0 = torch.log_softmax(teacher.logits(torch.randn(64, *teacher.spec.input_shape)), 1)
    kl_noise = float(torch.nn.functional.kl_div(logp0, target, reduction="batchmean"))
    assert kl_after < 0.5 * kl_noise
    assert (logp.argmax(1) == target.argmax(1)).float().mean() > 0.8


def test_feature_covariance_is_positive_definite():
    from dfkd_edge.synthesis.soft_target import feature_covariance

    w = torch.randn(10, 128)  # rank of the raw correlation is at most 9
    cov = feature_covariance(w, sigma=1.5)
    assert torch.allclose(cov, cov.T, atol=1e-6)
    assert float(torch.linalg.eigvalsh(cov).min()) > 0
    assert torch.allclose(cov.diagonal(), torch.full((128,), 1.5 ** 2), atol=1e-4)


def test_adversarial_trains_the_student_towards_the_teacher(teacher):
    from dfkd_edge.models import create_student

    s = create_synthesizer("adversarial", teacher, iterations=25, batch_size=64, seed=0)
    assert s.needs_student
    torch.manual_seed(0)
    student, _ = create_student("auto", teacher.spec.input_shape, teacher.spec.num_classes, teacher.spec.num_params)
    probe = s.sample(128)
    assert probe.shape == (128, *teacher.spec.input_shape) and torch.isfinite(probe).all()

    def gap():
        student.eval()
        with torch.no_grad():
            return float(torch.nn.functional.l1_loss(student(probe), teacher.logits(probe)))

    before = gap()
    ts = s.train_student(student, 64, holdout=16)
    assert gap() < before
    assert ts.x.shape == (80, *teacher.spec.input_shape) and ts.holdout.sum() == 16


def test_reused_generator_carries_what_it_learned_into_later_batches(digits_teacher):
    """After the warm-up batch, later batches take a tenth of the steps and still match the BN
    statistics far better than noise and cover every class; the meta generator has moved."""
    from dfkd_edge.domain import infer_domain

    teacher = load_teacher(digits_teacher)
    teacher.domain = infer_domain(teacher)  # as the pipeline sets it
    k = teacher.spec.num_classes
    synth = create_synthesizer("reused-generator", teacher, iterations=60, batch_size=64, seed=0)
    assert (synth.warmup, synth.steps) == (60, 6)
    before = [p.detach().clone() for p in synth.generator_net.parameters()]
    ts = synth.synthesize(192)
    assert synth.batches_done == 3
    assert any(not torch.equal(a, b) for a, b in zip(before, synth.generator_net.parameters()))
    later = ts.x[64:]  # batches 1 and 2: 6 steps each, from the carried generator
    noise = create_synthesizer("gaussian", teacher, seed=0).synthesize(128)
    assert _bn_loss(teacher, later) < 0.5 * _bn_loss(teacher, noise.x)
    assert np.bincount(ts.logits[64:].argmax(1), minlength=k).min() > 0
    # a fresh generator given the same 6 steps does worse: the carried one is what helps
    cold = create_synthesizer("reused-generator", teacher, iterations=6, batch_size=64, seed=0).synthesize(64)
    assert _bn_loss(teacher, later[:64]) < _bn_loss(teacher, cold.x)


class _Recording:
    """A teacher that records every input it is shown (everything else is the teacher's)."""

    def __init__(self, teacher) -> None:
        self._teacher, self.seen = teacher, []

    def __getattr__(self, name):
        return getattr(self._teacher, name)

    def __call__(self, x):
        self.seen.append(x.detach().clone())
        return self._teacher(x)


def _is_moved_copy(moved: torch.Tensor, x: torch.Tensor) -> bool:
    """``moved`` (C, *spatial) is ``x`` shifted by up to 1/8 of each size along every axis, edges replicated."""
    pads = [max(1, round(size / 8)) for size in x.shape[1:]]
    padded = torch.nn.functional.pad(x[None], [p for p in reversed(pads) for _ in (0, 1)], mode="replicate")[0]
    for offsets in itertools.product(*(range(2 * p + 1) for p in pads)):
        window = padded[(slice(None), *(slice(o, o + size) for o, size in zip(offsets, x.shape[1:])))]
        if torch.equal(window, moved):
            return True
    return False


@pytest.mark.parametrize("kind", ["image", "signal", "vector"])
def test_jitter_shows_the_teacher_moved_copies_of_images_and_signals(kind, digits_teacher, toy_teachers):
    """``jitter=True`` (measured, not the default): each step the teacher sees every sample moved by a
    few positions (KD's moves) instead of the sample itself; a vector has nothing to move."""
    path, shape = {"image": (digits_teacher, None), "signal": (toy_teachers["signal"]["teacher"], (1, 40)),
                   "vector": (toy_teachers["vector"]["teacher"], (30,))}[kind]
    views = {}
    for jitter in (False, True):
        synth = create_synthesizer("deepinversion", load_teacher(path, shape), iterations=1, batch_size=16,
                                   seed=0, jitter=jitter)
        synth.teacher = _Recording(synth.teacher)
        synth.sample(16)
        views[jitter] = synth.teacher.seen[0]  # the first step: the same start either way
    plain, jittered = views[False], views[True]
    if kind == "vector":
        assert torch.equal(plain, jittered)
        return
    assert not torch.equal(plain, jittered)
    assert all(_is_moved_copy(m, x) for m, x in zip(jittered, plain))
    assert sum(not torch.equal(m, x) for m, x in zip(jittered, plain)) >= 12  # most samples did move


def test_auto_bn_units_measure_each_layer_in_its_own_units_where_the_first_rules_the_raw_distance(tmp_path):
    """``bn_units="auto"``: the twin on 255x inputs has a first BatchNorm 65,000x the other layers' in raw
    units: standardised there, raw on the [0, 1]-scale network (every zoo teacher but the raw 0-255 and
    unscaled tabular ones is 0.05-2.3x)."""
    from dfkd_edge.domain import InputDomain
    from dfkd_edge.synthesis.base import resolve_bn_units

    (net, twin), _ = _scaled_twins(tmp_path, 255.0)
    net.domain = InputDomain([0.4], [0.3], source="user")
    twin.domain = InputDomain([0.4 * 255], [0.3 * 255], source="user")
    assert resolve_bn_units(net) == "raw" and resolve_bn_units(twin) == "standardised"
    assert create_synthesizer("deepinversion", twin, iterations=1).bn_units == "standardised"
    assert create_synthesizer("deepinversion", twin, iterations=1, bn_units="raw").bn_units == "raw"


def test_dead_leaves_start_at_a_colour_domain_s_whole_spread():
    """A domain read with its colours: dead leaves take the whole spread (each sample's level included) and
    their colours are correlated as the domain says once mixed; other domains keep the plain dead leaves."""
    from dfkd_edge.domain import InputDomain
    from dfkd_edge.synthesis.start import start_points

    corr = [[1.0, 0.9, 0.8], [0.9, 1.0, 0.9], [0.8, 0.9, 1.0]]
    colour = InputDomain([0.0] * 3, [1.0] * 3, level_std=[3.0] * 3, smooth_std=[0.5] * 3, corr=corr)
    plain = InputDomain([0.0] * 3, [1.0] * 3, level_std=[3.0] * 3, smooth_std=[0.5] * 3)
    u_plain = start_points(plain, 512, (3, 16, 16), torch.Generator().manual_seed(0))
    u_colour = start_points(colour, 512, (3, 16, 16), torch.Generator().manual_seed(0))
    torch.testing.assert_close(u_colour, u_plain * 10 ** 0.5)  # sqrt(1 + 3^2)
    x = colour.to_input(u_colour)
    flat = x.transpose(0, 1).reshape(3, -1)
    r = torch.corrcoef(flat)
    assert float(r[0, 1]) > 0.8 and float(r[1, 2]) > 0.8  # the leaves' colours move together
