"""Several teachers seen as one (``Ensemble``): the mean of their logits, one spec, and the taps of
every member at once, so that an input optimiser (DeepInversion) can invert the ensemble itself:
its cross-entropy on the mean logits and the BatchNorm statistics of every member."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from dfkd_edge.errors import UserError
from dfkd_edge.teacher_model import BNLayer, Teacher, TeacherSpec, check_compatible


class JointRecord:
    """The taps of every member for one forward of the ensemble (``Ensemble.taps``)."""

    def __init__(self, records: list) -> None:
        self.records = records  # one per member that can be tapped

    def bn_inputs(self) -> list:
        """Every member's BatchNorm records, member after member."""
        return [r for rec in self.records for r in rec.bn_inputs()]

    def feature_tensor(self) -> None:
        return None  # the members' penultimate features differ in width: there is no one feature space


class Ensemble:
    """Several teachers seen as one: mean logits, combined spec; ``members`` keeps each."""

    def __init__(self, teachers: list[Teacher]) -> None:
        check_compatible([t.spec for t in teachers])
        self.members = teachers
        first = teachers[0].spec
        tapped = [t for t in teachers if t.spec.taps]
        self.spec = TeacherSpec(path=" + ".join(t.spec.path for t in teachers),
                                format="ensemble of " + ", ".join(t.spec.format for t in teachers),
                                input_shape=first.input_shape, num_classes=first.num_classes,
                                bn_layers=[BNLayer(f"teacher{i}.{b.name}", b.channels)
                                           for i, t in enumerate(teachers) if t.spec.taps for b in t.spec.bn_layers],
                                num_params=sum(t.spec.num_params for t in teachers), taps=bool(tapped))
        self.runtime = _EnsembleModule([t.runtime for t in teachers])
        self.backend = teachers[0].backend if len({t.backend for t in teachers}) == 1 else "torch-eager"
        self.domain = None  # set with the members' (dfkd_edge.stages.inspect)

    @property
    def largest_params(self) -> int:
        """The parameters of the largest member: the single student is sized for it."""
        return max(t.spec.num_params for t in self.members)

    def to(self, compute) -> "Ensemble":
        for t in self.members:
            t.to(compute)
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([t(x) for t in self.members]).mean(0)

    @contextlib.contextmanager
    def taps(self) -> Iterator[JointRecord]:
        """Record every tappable member's BatchNorm inputs during the forward passes inside the block."""
        with contextlib.ExitStack() as stack:
            yield JointRecord([stack.enter_context(t.taps()) for t in self.members if t.spec.taps])

    def classifier(self):
        raise UserError("several teachers have no one last linear layer; use --method deepinversion or cdfkd-mfs")

    @torch.no_grad()
    def logits(self, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        return torch.stack([t.logits(x, batch_size) for t in self.members]).mean(0)


class _EnsembleModule(nn.Module):
    """The teachers as shipped, run one after another (the ensemble's latency row)."""

    def __init__(self, modules: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(modules)

    def forward(self, x):
        return torch.stack([m(x) for m in self.members]).mean(0)


__all__ = ["Ensemble", "JointRecord"]
