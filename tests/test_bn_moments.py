"""The domain fit's statistics from responses computed once (dfkd_edge.bn_moments) are the statistics a forward
pass gives; a stem that is not affine keeps the forward pass; the CLI's allocator setting stays out of the way of
a user's own."""

from __future__ import annotations

import torch
from torch import nn

from dfkd_edge import allocator, domain
from dfkd_edge.bn_moments import Moments, is_affine
from dfkd_edge.teacher import load_teacher, save_torchscript


def _teacher(tmp_path, stem: list[nn.Module], shape=(3, 16, 16)):
    torch.manual_seed(0)
    net = nn.Sequential(*stem, nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    net.train()
    with torch.no_grad():
        for _ in range(4):
            net(torch.rand(32, *shape) * 255)  # running statistics of raw 0-255 pixels
    save_torchscript(net.eval(), tmp_path / "t.pt", shape)
    return load_teacher(tmp_path / "t.pt")


def test_moments_equal_the_forward_pass_statistics(tmp_path):
    t = _teacher(tmp_path, [nn.Conv2d(3, 8, 3, 2, 1)])
    g = torch.Generator().manual_seed(0)
    fields = [torch.randn(6, 3, 16, 16, generator=g), torch.randn(6, 3, 1, 1, generator=g)]
    k, mu, lev = torch.randn(3, 3, generator=g), torch.tensor([120.0, 110.0, 100.0]), torch.tensor([30.0, 20.0, 25.0])

    def make_x(white, level):
        return mu.view(1, 3, 1, 1) + domain.mix_channels(k, white * 40.0 + level * lev.view(1, 3, 1, 1))

    mean, var = Moments(t, fields, (3, 16, 16)).statistics(Moments(t, fields, (3, 16, 16)).coefficients(make_x))
    y = t.first_bn_input(make_x(*fields)).x.double()
    assert torch.allclose(mean, y.mean((0, 2, 3)), rtol=1e-6, atol=1e-6)
    assert torch.allclose(var, y.var((0, 2, 3), unbiased=False), rtol=1e-5)


def test_a_nonlinear_stem_is_not_affine_and_a_conv_stem_is(tmp_path):
    g = torch.Generator().manual_seed(0)
    assert is_affine(_teacher(tmp_path, [nn.Conv2d(3, 8, 3, 2, 1)]), (3, 16, 16), torch.full((3,), 50.0), g)
    relu = _teacher(tmp_path, [nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 8, 1)])
    assert not is_affine(relu, (3, 16, 16), torch.full((3,), 50.0), g)


def test_the_fit_reads_the_same_domain_either_way(tmp_path, monkeypatch):
    t = _teacher(tmp_path, [nn.Conv2d(3, 8, 3, 2, 1)])
    fast = domain.fit_to_first_bn(t, steps=30)
    monkeypatch.setattr(domain, "_affine", lambda *a, **k: False)
    slow = domain.fit_to_first_bn(t, steps=30)
    assert abs(fast.fit_mismatch - slow.fit_mismatch) < 0.01
    for a, b in zip(fast.mean + fast.std, slow.mean + slow.std):
        assert abs(a - b) <= 0.01 * abs(b) + 1e-3


def test_the_fit_batch_holds_the_positions_of_128_samples_of_32x32():
    assert domain.fit_batch((3, 32, 32)) == 128 and domain.fit_batch((1, 8, 8)) == 128 and domain.fit_batch((30,)) == 128
    assert domain.fit_batch((3, 224, 224)) == domain.FIT_MIN_BATCH


def test_the_allocator_is_left_alone_when_the_user_set_one(monkeypatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "2")
    assert allocator.keep_freed_memory() is False
    monkeypatch.delenv("MALLOC_ARENA_MAX")
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/libjemalloc.so")
    assert allocator.keep_freed_memory() is False
