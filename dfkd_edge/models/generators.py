"""Generators for adversarial synthesis: noise z -> an input of the teacher's shape.

Each ends in BatchNorm without affine parameters (outputs standardised per channel) followed by
:class:`DomainAffine`: ``mean + std * (exp(log_scale) * h + shift)`` with ``mean``/``std`` the
teacher's input domain (dfkd_edge.domain; N(0, 1) until ``set_domain`` is called) and
``log_scale``/``shift`` learned with the generator. Nothing assumes zero-centred or unit-scale
inputs: the domain gives the scale, the BN-statistics loss on the teacher adjusts it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dfkd_edge.models.registry import register_model


class DomainAffine(nn.Module):
    """Per-channel ``mean + std * (exp(log_scale) * h + shift)``, clamped to a known range."""

    def __init__(self, channels: int, rank: int) -> None:
        super().__init__()
        self.view = (1, channels, *([1] * (rank - 1)))
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("std", torch.ones(channels))
        self.log_scale = nn.Parameter(torch.zeros(channels))
        self.shift = nn.Parameter(torch.zeros(channels))
        self.low: float | None = None
        self.high: float | None = None

    def set_domain(self, domain) -> None:
        self.mean.copy_(torch.tensor(domain.mean, dtype=torch.float32))
        self.std.copy_(torch.tensor(domain.std, dtype=torch.float32))
        self.low, self.high = domain.low, domain.high

    def forward(self, h):
        v = self.view
        x = self.mean.view(v) + self.std.view(v) * (self.log_scale.exp().view(v) * h + self.shift.view(v))
        return x if self.low is None else x.clamp(self.low, self.high)


class ConvGenerator(nn.Module):
    """z -> linear -> (ch, size/4) -> two x2 upsampling conv blocks -> conv -> resize -> BN."""

    def __init__(self, dims: int, out_shape: tuple[int, ...], z_dim: int = 100, ch: int = 64):
        super().__init__()
        self.dims, self.out_shape = dims, tuple(out_shape)
        c, *spatial = out_shape
        self.init = [max(1, math.ceil(s / 4)) for s in spatial]
        conv = nn.Conv2d if dims == 2 else nn.Conv1d
        bn = nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d
        self.fc = nn.Linear(z_dim, ch * 2 * math.prod(self.init))
        self.ch = ch
        self.body = nn.Sequential(
            bn(ch * 2), nn.Upsample(scale_factor=2), conv(ch * 2, ch * 2, 3, padding=1, bias=False), bn(ch * 2),
            nn.LeakyReLU(0.2), nn.Upsample(scale_factor=2), conv(ch * 2, ch, 3, padding=1, bias=False), bn(ch),
            nn.LeakyReLU(0.2), conv(ch, c, 3, padding=1))
        self.out_bn = bn(c, affine=False)
        self.domain = DomainAffine(c, len(out_shape))

    def forward(self, z):
        x = self.fc(z).view(z.shape[0], self.ch * 2, *self.init)
        x = self.body(x)
        if tuple(x.shape[2:]) != self.out_shape[1:]:
            x = F.interpolate(x, size=self.out_shape[1:])
        return self.domain(self.out_bn(x))


class MLPGenerator(nn.Module):
    def __init__(self, out_shape: tuple[int, ...], z_dim: int = 100, hidden: int = 256):
        super().__init__()
        (f,) = out_shape
        self.net = nn.Sequential(nn.Linear(z_dim, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.2),
                                 nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.2),
                                 nn.Linear(hidden, f), nn.BatchNorm1d(f, affine=False))
        self.domain = DomainAffine(f, 1)

    def forward(self, z):
        return self.domain(self.net(z))


@register_model
def generator(input_shape, z_dim: int = 100, **_):
    """The generator family for an input rank: conv 2-D, conv 1-D or MLP."""
    rank = len(input_shape)
    if rank == 1:
        return MLPGenerator(tuple(input_shape), z_dim)
    return ConvGenerator(2 if rank == 3 else 1, tuple(input_shape), z_dim)


__all__ = ["ConvGenerator", "DomainAffine", "MLPGenerator", "generator"]
