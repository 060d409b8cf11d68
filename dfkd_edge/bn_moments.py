"""The first BatchNorm layer's input statistics for inputs built linearly from fixed fields, without running the
network at every step.

The input-domain fit (dfkd_edge.domain) optimises a handful of numbers (a mean, spreads, a channel mixing) that
build its inputs from fixed random fields: ``x[:, c] = mu[c] + sum_{j, d} A[c, j, d] * field_j[:, d]``. When the
layers before the first BatchNorm are affine (a convolution or a linear layer, the usual stem), that layer's
input is ``y = g(0) + sum_c mu[c] R_c + sum_{c,j,d} A[c,j,d] R_{c,j,d}``, where each ``R`` is the stem's response
to one field placed in one channel, less ``g(0)``. Each channel's mean and second moment of ``y`` are then a
linear and a quadratic form in the coefficients, whose matrices are computed once: every step of the fit costs
microseconds instead of a forward and a backward pass over a batch of full-size inputs (at 224x224 on a 2-core
CPU, 0.3 s per step on ResNet-50's stem, hundreds of steps). The statistics are the same numbers, in float64.
"""

from __future__ import annotations

import torch

#: no more basis inputs than this (1 + C + C * fields * C): many-channel inputs run the network every step
MAX_BASIS = 64


def first_bn(teacher, x: torch.Tensor):
    return teacher.first_bn_input(x)


def is_affine(teacher, shape: tuple[int, ...], scale: torch.Tensor, gen: torch.Generator, tol: float = 1e-4) -> bool:
    """True when the network up to its first BatchNorm is affine on inputs of this scale: ``g(a + b) - g(0)``
    equals ``(g(a) - g(0)) + (g(b) - g(0))`` and ``g(2a) - g(0)`` equals ``2 (g(a) - g(0))``, to ``tol`` of
    their size, on random ``a``, ``b`` (a ReLU or a clamp before the BatchNorm breaks both)."""
    view = (1, shape[0], *([1] * (len(shape) - 1)))
    a, b = (torch.randn((2, *shape), generator=gen) * scale.view(view) for _ in range(2))
    with torch.no_grad():
        r = first_bn(teacher, torch.cat([torch.zeros_like(a), a, b, a + b, 2 * a]))
    if r is None:
        return False
    y = r.x.double()
    zero, ya, yb, yab, y2a = (y[i * 2:(i + 1) * 2] for i in range(5))
    size = (ya - zero).abs().mean() + (yb - zero).abs().mean()
    if not torch.isfinite(size) or size <= 0:
        return False
    err = max(float((yab - ya - yb + zero).abs().mean()), float((y2a - 2 * ya + zero).abs().mean()))
    return err <= tol * float(size)


class Moments:
    """Per channel of the first BatchNorm's input: mean and variance over (batch, positions) for inputs
    ``make_x(*fields)``, where ``make_x`` is affine in the fields (its coefficients are read by calling it on
    indicator fields, :meth:`coefficients`)."""

    def __init__(self, teacher, fields: list[torch.Tensor], shape: tuple[int, ...]) -> None:
        self.shape, self.fields = shape, fields
        c = shape[0]
        n = fields[0].shape[0]
        full = [f.expand(n, *shape) for f in fields]
        m = g = None
        for i in range(n):  # one sample at a time: every basis input's response, then its moments
            basis = [torch.zeros(shape)]
            basis += [torch.zeros(shape).index_fill_(0, torch.tensor([ch]), 1.0) for ch in range(c)]
            for f in full:
                for d in range(c):
                    for ch in range(c):
                        x = torch.zeros(shape)
                        x[ch] = f[i, d]
                        basis.append(x)
            with torch.no_grad():
                r = first_bn(teacher, torch.stack(basis))
            y = r.x.double().flatten(2)  # (K, O, P)
            y = torch.cat([y[:1], y[1:] - y[:1]])  # g(0), then each basis input's response less g(0)
            mi, gi = y.mean(2), torch.einsum("kop,lop->klo", y, y) / y.shape[2]
            m, g = (mi, gi) if m is None else (m + mi, g + gi)
        self.mean_basis, self.gram = m / n, g / n  # (K, O), (K, K, O)
        self.running_mean, self.running_var = r.running_mean.double(), r.running_var.double()

    def coefficients(self, make_x) -> torch.Tensor:
        """``[1, mu (C), A (C x fields x C, as the basis is ordered)]``, differentiable in ``make_x``'s parameters:
        ``make_x`` called on indicator fields (the zero input, then one field in one channel at a time)."""
        c, k = self.shape[0], len(self.fields)
        ones = (c,) + (1,) * (len(self.shape) - 1)
        ind = [torch.zeros((1 + k * c, *ones)) for _ in range(k)]
        for j in range(k):
            for d in range(c):
                ind[j][1 + j * c + d, d] = 1.0
        x = make_x(*ind).reshape(1 + k * c, c)
        mu, a = x[0], (x[1:] - x[:1])  # (C,), (k * C [field, source channel], C [target channel])
        return torch.cat([mu.new_ones(1), mu, a.reshape(-1)]).double()

    def statistics(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, variance) per output channel for coefficients ``theta`` (:meth:`coefficients`)."""
        mean = theta @ self.mean_basis
        second = torch.einsum("k,klo,l->o", theta, self.gram, theta)
        return mean, (second - mean.pow(2)).clamp_min(0.0)


def basis_size(shape: tuple[int, ...], fields: int) -> int:
    return 1 + shape[0] + fields * shape[0] ** 2
