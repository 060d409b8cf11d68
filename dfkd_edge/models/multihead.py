"""The multi-header student of CDFKD-MFS (Hao et al. 2022): a shared backbone, one header per teacher.

Every header reads the output of every backbone stage ("multi-level feature sharing"): header h has
one light encoder per stage; encoder j takes stage j's features concatenated with encoder j-1's
output and halves the resolution (a depthwise-separable convolution, stride 2, as the authors'
code does), so encoder j's output matches stage j+1's resolution. Global pooling and the header's
own linear classifier follow. The student's output is the aggregation of the header logits: their
mean, or, once trained on a few labelled samples, the attention aggregation (a score per header
from its logits, softmaxed across headers per sample, the weighted sum).

Stages per family (where the paper is silent, chosen to mirror the zoo students):
* conv2d / conv1d: the stem block (stride 1) is stage 0; each stride-2 block is a stage; the last
  stride-1 block belongs to the last stage. Encoders: depthwise 3x3 (or 3) stride 2 + pointwise
  1x1, each followed by BN-ReLU.
* mlp (vectors): each Linear-BN-ReLU layer is a stage (two); encoders are Linear-BN-ReLU on the
  concatenation (no resolution to halve).
Where a stage and the previous encoder disagree in size (inputs whose size is not a power of
two), the encoder output is average-pooled to the stage's size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dfkd_edge.models.registry import register_model
from dfkd_edge.models.students import STUDENT_FAMILIES, _n_down


def _ops(dims: int):
    if dims == 2:
        return nn.Conv2d, nn.BatchNorm2d, nn.AdaptiveAvgPool2d
    return nn.Conv1d, nn.BatchNorm1d, nn.AdaptiveAvgPool1d


class ConvBackbone(nn.Module):
    def __init__(self, dims: int, in_channels: int, width: int, spatial: int):
        super().__init__()
        conv, bn, _ = _ops(dims)

        def block(cin, cout, stride):
            return [conv(cin, cout, 3, stride=stride, padding=1, bias=False), bn(cout), nn.ReLU(inplace=True)]

        stages = [nn.Sequential(*block(in_channels, width, 1))]
        self.channels = [width]
        c = width
        n = _n_down(spatial)
        for i in range(n):
            nxt = min(width * 2 ** (i + 1), width * 4)
            layers = block(c, nxt, 2) + (block(nxt, nxt, 1) if i == n - 1 else [])
            stages.append(nn.Sequential(*layers))
            self.channels.append(nxt)
            c = nxt
        if n == 0:  # tiny inputs: the final block joins the stem stage
            stages[0] = nn.Sequential(*block(in_channels, width, 1), *block(width, width, 1))
        self.stages = nn.ModuleList(stages)

    def forward(self, x) -> list[torch.Tensor]:
        out = []
        for s in self.stages:
            x = s(x)
            out.append(x)
        return out


class ConvHeader(nn.Module):
    """One encoder per stage (depthwise-separable, stride 2), global pooling, a linear classifier."""

    def __init__(self, dims: int, channels: list[int], num_classes: int):
        super().__init__()
        conv, bn, pool = _ops(dims)
        self.dims = dims
        enc, prev = [], 0
        for c in channels:
            cin = c + prev
            enc.append(nn.Sequential(conv(cin, cin, 3, stride=2, padding=1, groups=cin, bias=False), bn(cin),
                                     nn.ReLU(inplace=True), conv(cin, c, 1, bias=False), bn(c), nn.ReLU(inplace=True)))
            prev = c
        self.encoders = nn.ModuleList(enc)
        self.pool = pool(1)
        self.feature_dim = channels[-1]
        self.classifier = nn.Linear(channels[-1], num_classes)

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        h = None
        for f, e in zip(feats, self.encoders):
            if h is not None:
                if h.shape[2:] != f.shape[2:]:
                    h = (F.adaptive_avg_pool2d if self.dims == 2 else F.adaptive_avg_pool1d)(h, f.shape[2:])
                f = torch.cat([f, h], 1)
            h = e(f)
        pooled = self.pool(h).flatten(1)
        return self.classifier(pooled), pooled


class MLPBackbone(nn.Module):
    def __init__(self, in_features: int, width: int):
        super().__init__()
        self.stages = nn.ModuleList([
            nn.Sequential(nn.Linear(in_features, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True)),
            nn.Sequential(nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True))])
        self.channels = [width, width]

    forward = ConvBackbone.forward


class MLPHeader(nn.Module):
    def __init__(self, channels: list[int], num_classes: int):
        super().__init__()
        enc, prev = [], 0
        for c in channels:
            enc.append(nn.Sequential(nn.Linear(c + prev, c), nn.BatchNorm1d(c), nn.ReLU(inplace=True)))
            prev = c
        self.encoders = nn.ModuleList(enc)
        self.feature_dim = channels[-1]
        self.classifier = nn.Linear(channels[-1], num_classes)

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        h = None
        for f, e in zip(feats, self.encoders):
            h = e(f if h is None else torch.cat([f, h], 1))
        return self.classifier(h), h


class AttentionAggregation(nn.Module):
    """A score per header from its own logits (one linear unit per header), softmaxed across
    headers per sample; the output is the weighted sum of the header logits."""

    def __init__(self, headers: int, num_classes: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(headers, num_classes))
        self.bias = nn.Parameter(torch.zeros(headers))

    def weights(self, logits: torch.Tensor) -> torch.Tensor:
        """(headers, batch, classes) -> (headers, batch), each column summing to 1."""
        scores = (logits * self.weight[:, None, :]).sum(2) + self.bias[:, None]
        return torch.softmax(scores, 0)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return (self.weights(logits)[:, :, None] * logits).sum(0)


class MultiHeaderStudent(nn.Module):
    """Shared backbone, ``headers`` headers; ``forward`` returns the aggregated logits (one graph)."""

    def __init__(self, family: str, input_shape, num_classes: int, width: int, headers: int,
                 aggregation: str = "mean"):
        super().__init__()
        if headers < 1:
            raise ValueError("a multi-header student needs at least one header")
        self.family, self.num_headers = family, headers
        if family == "mlp":
            (f,) = input_shape
            self.backbone = MLPBackbone(f, width)
            self.headers = nn.ModuleList([MLPHeader(self.backbone.channels, num_classes) for _ in range(headers)])
        else:
            dims = 2 if family == "conv2d" else 1
            c, *spatial = input_shape
            self.backbone = ConvBackbone(dims, c, width, min(spatial))
            self.headers = nn.ModuleList([ConvHeader(dims, self.backbone.channels, num_classes)
                                          for _ in range(headers)])
        self.attention = AttentionAggregation(headers, num_classes) if aggregation == "attention" else None

    @property
    def feature_dim(self) -> int:
        return self.headers[0].feature_dim

    def header_outputs(self, x) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """(logits per header, pooled penultimate features per header)."""
        feats = self.backbone(x)
        outs = [h(feats) for h in self.headers]
        return [o[0] for o in outs], [o[1] for o in outs]

    def aggregate(self, logits: list[torch.Tensor]) -> torch.Tensor:
        stacked = torch.stack(logits)
        return stacked.mean(0) if self.attention is None else self.attention(stacked)

    def forward(self, x):
        return self.aggregate(self.header_outputs(x)[0])


@register_model
def multihead(input_shape, num_classes, width=16, headers=2, aggregation="mean", family=None, **_):
    """The multi-header student for an input rank (family conv2d, conv1d or mlp)."""
    family = family or STUDENT_FAMILIES[len(input_shape)]
    return MultiHeaderStudent(family, tuple(input_shape), num_classes, width, headers, aggregation)


__all__ = ["AttentionAggregation", "MultiHeaderStudent", "multihead"]
