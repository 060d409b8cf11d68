"""The teacher as the rest of the tool sees it: a frozen module in eval mode, its :class:`TeacherSpec` (input
shape, classes, BatchNorm layers, the last linear layer's input) and :meth:`Teacher.taps` to read BatchNorm
inputs and the penultimate features during a forward pass (synthesis needs both). :func:`inspect_module` makes
one from a loaded module (dfkd_edge.teacher loads the files)."""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from dfkd_edge.backends.base import predict_batch
from dfkd_edge.errors import UserError, first_line
from dfkd_edge.taps import BatchChunked, BNRecord, FirstBNSeen, Recorder, hook_module, tap_graph, to_fx

RANK_KIND = {1: "vector", 2: "signal", 3: "image"}


@dataclass
class BNLayer:
    name: str
    channels: int


@dataclass
class TeacherSpec:
    """What the rest of the pipeline needs to know about a teacher."""

    path: str
    format: str  # torchscript | exported-program | state-dict
    input_shape: tuple[int, ...]  # without the batch dimension
    num_classes: int
    bn_layers: list[BNLayer] = field(default_factory=list)
    feature_layer: str | None = None  # the last linear layer
    feature_dim: int | None = None  # its input features
    num_params: int = 0
    taps: bool = True  # False when BN inputs / features cannot be observed

    @property
    def kind(self) -> str:
        return RANK_KIND[len(self.input_shape)]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["kind"] = self.kind
        return d


class Teacher:
    """A frozen, eval-mode teacher with its spec and BN/feature taps."""

    def __init__(self, module: nn.Module, spec: TeacherSpec, recorder: Recorder,
                 runtime: nn.Module | None = None, backend: str = "torch-eager",
                 classifier: tuple[torch.Tensor, torch.Tensor | None] | None = None) -> None:
        self._classifier = classifier
        self.module = module
        self.spec = spec
        self._rec = recorder
        #: the module as the user shipped it (a ScriptModule stays one), for latency figures
        self.runtime = runtime if runtime is not None else module
        self.backend = backend
        self.device = torch.device("cpu")
        #: where the teacher's inputs live (dfkd_edge.domain.InputDomain); set by the pipeline
        self.domain = None

    @property
    def static_batch(self) -> int | None:
        """The batch size a torch.export program was exported with when its batch is not dynamic (it runs
        here chunk by chunk); None otherwise."""
        return self.module.batch if isinstance(self.module, BatchChunked) else None

    def to(self, compute) -> "Teacher":
        """Run the teacher where ``compute`` (dfkd_edge.compute.Compute) says; ``Compute()`` brings it
        back to the CPU in NCHW (latency figures and evaluation run there)."""
        four_d = len(self.spec.input_shape) == 3
        self.module = compute.module(self.module, four_d)
        if not compute.channels_last:
            self.module = self.module.to(memory_format=torch.contiguous_format) if four_d else self.module
        self.device = compute.torch_device
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)

    @contextlib.contextmanager
    def taps(self) -> Iterator[Recorder]:
        """Record BN inputs and penultimate features of the forward passes inside the block."""
        self._rec.clear()
        self._rec.active = True
        try:
            yield self._rec
        finally:
            self._rec.active = False

    def first_bn_input(self, x: torch.Tensor) -> BNRecord | None:
        """The first BatchNorm layer's input record for ``x``, the network run only that far (the input
        domain's fit runs this hundreds of times: on a ResNet-18 the rest of the network was most of the
        cost). A program run chunk by chunk (a fixed batch) runs whole, so every chunk is recorded."""
        with self.taps() as rec:
            rec.stop_at_first = self.static_batch is None
            try:
                self(x)
            except FirstBNSeen:
                pass
            finally:
                rec.stop_at_first = False
        records = rec.bn_inputs()
        return records[0] if records else None

    def classifier(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(weight (classes, features), bias (classes,)) of the last linear layer, the part of the
        teacher after the tapped features. UserError when it could not be found."""
        if self._classifier is None:
            raise UserError("this method needs the teacher's last linear layer, which could not be found "
                            "or observed; use --method deepinversion")
        w, b = self._classifier
        return w.detach(), (b.detach() if b is not None else torch.zeros(w.shape[0]))

    @torch.no_grad()
    def logits(self, x: torch.Tensor, batch_size: int | None = None) -> torch.Tensor:
        """fp32 logits on the CPU, computed where the teacher is, ``batch_size`` rows at a time (default: as many
        as dfkd_edge.backends.base.predict_batch holds, at most 512)."""
        batch_size = batch_size or predict_batch(x, 512)
        return torch.cat([self.module(x[i : i + batch_size].to(self.device)).float().cpu()
                          for i in range(0, len(x), batch_size)], 0)


def _check_forward(module: nn.Module, input_shape: tuple[int, ...], path: Path) -> int:
    shape_txt = ",".join(map(str, input_shape))
    x = torch.randn(2, *input_shape)
    try:
        with torch.no_grad():
            out = module(x)
    except Exception as e:
        raise UserError(f"the teacher rejected inputs of shape (N,{shape_txt}): {first_line(e)}; "
                        "pass the --input-shape it consumes, without the batch dimension") from None
    if isinstance(out, (tuple, list)) or isinstance(out, dict):
        raise UserError(f"{path.name} returns a {type(out).__name__}; a classifier returning one "
                        "(N, classes) logits tensor is expected")
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != 2 or out.shape[1] < 2:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserError(f"{path.name} outputs {got} for a batch of 2; a classifier must output "
                        "(N, classes) logits with at least 2 classes")
    if not torch.isfinite(out).all():
        raise UserError(f"{path.name} outputs NaN or Inf on random inputs; check its weights")
    return int(out.shape[1])


def _count_params(m: nn.Module) -> int:
    """Learnable parameters; exported graphs may hold weights as buffers, so fall back to those."""
    n = sum(p.numel() for p in m.parameters())
    if n == 0:
        n = sum(b.numel() for name, b in m.named_buffers() if not name.endswith(("running_mean", "running_var", "num_batches_tracked")))
    return n


def _check_weights(m: nn.Module, path: Path) -> None:
    for name, t in list(m.named_parameters()) + list(m.named_buffers()):
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise UserError(f"{path.name} has NaN or Inf in its weights ({name}); the teacher is damaged")


def inspect_module(module: nn.Module, runtime: nn.Module | None, backend: str, path: Path, fmt: str,
             input_shape: tuple[int, ...]) -> Teacher:
    _check_weights(runtime if runtime is not None else module, path)
    num_classes = _check_forward(runtime if runtime is not None else module, input_shape, path)
    rec = Recorder()
    taps = True
    if fmt == "torchscript":
        fx = to_fx(module, input_shape)
        if fx is None:
            taps, bn_names, feat, classifier = False, [], None, None
            work = module
        else:
            work = fx
            bn_names, feat, classifier = tap_graph(fx, rec)
    elif isinstance(module, torch.fx.GraphModule):
        work = module
        bn_names, feat, classifier = tap_graph(module, rec)
    elif isinstance(module, BatchChunked) and isinstance(module.inner, torch.fx.GraphModule):
        work = module
        module.rec = rec
        bn_names, feat, classifier = tap_graph(module.inner, rec)
    else:
        work = module
        bn_names, feat, classifier = hook_module(module, rec, input_shape)

    spec = TeacherSpec(path=str(path), format=fmt, input_shape=input_shape, num_classes=num_classes,
                       num_params=_count_params(runtime if runtime is not None else work), taps=taps,
                       feature_layer=feat)
    teacher = Teacher(work, spec, rec, runtime=runtime, backend=backend, classifier=classifier)
    if taps:
        with torch.no_grad(), teacher.taps() as r:
            teacher(torch.randn(2, *input_shape))
        spec.bn_layers = [BNLayer(b.name, int(b.running_mean.numel())) for b in r.bn_inputs()]
        f = r.feature_tensor()
        spec.feature_dim = int(f.shape[1]) if f is not None and f.dim() == 2 else None
    return teacher


def check_compatible(specs: list[TeacherSpec]) -> None:
    """Teachers distilled together must take the same input shape and predict the same classes.

    Used by multi-teacher runs; a disagreement is a UserError (exit 2) naming both teachers."""
    if not specs:
        raise UserError("no teacher given")
    first = specs[0]
    for s in specs[1:]:
        if s.input_shape != first.input_shape:
            raise UserError(f"teachers disagree on the input shape: {Path(first.path).name} takes "
                            f"{first.input_shape}, {Path(s.path).name} takes {s.input_shape}; "
                            "every teacher must consume the same inputs")
        if s.num_classes != first.num_classes:
            raise UserError(f"teachers disagree on the classes: {Path(first.path).name} predicts "
                            f"{first.num_classes}, {Path(s.path).name} predicts {s.num_classes}; "
                            "every teacher must predict the same classes")
