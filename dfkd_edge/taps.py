"""Reading a teacher while it runs: the inputs of its BatchNorm layers (with their running statistics) and the
features its last linear layer takes. A TorchScript or torch.export graph gets pass-through tap nodes inserted
before each BatchNorm op and the last linear op (forward hooks do not fire inside a ScriptModule); an eager
module gets forward hooks. A program exported with a fixed batch runs chunk by chunk (:class:`BatchChunked`)."""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from dfkd_edge.errors import first_line

log = logging.getLogger(__name__)

_BN_OPS = {
    torch.ops.aten.batch_norm.default,
    torch.ops.aten._native_batch_norm_legit_no_training.default,
    torch.ops.aten.native_batch_norm.default,
}
_LINEAR_OPS = {torch.ops.aten.linear.default}


@dataclass
class BNRecord:
    name: str
    x: torch.Tensor
    running_mean: torch.Tensor
    running_var: torch.Tensor


class FirstBNSeen(Exception):
    """Raised by a BN tap to end a forward pass whose first BatchNorm input is all that is wanted."""


class Recorder:
    def __init__(self) -> None:
        self.active = False
        self.stop_at_first = False  # Teacher.first_bn_input: the rest of the network need not run
        self.bn: list[BNRecord] = []
        self.features: list[torch.Tensor] = []

    def record_bn(self, r: BNRecord) -> None:
        self.bn.append(r)
        if self.stop_at_first:
            raise FirstBNSeen

    def clear(self) -> None:
        self.bn, self.features = [], []

    def bn_inputs(self) -> list[BNRecord]:
        """One record per BN layer; chunks of one forward (static-batch programs) are joined."""
        grouped: dict[str, list[BNRecord]] = {}
        for r in self.bn:
            grouped.setdefault(r.name, []).append(r)
        out = []
        for name, recs in grouped.items():
            x = recs[0].x if len(recs) == 1 else torch.cat([r.x for r in recs], 0)
            out.append(BNRecord(name, x, recs[0].running_mean, recs[0].running_var))
        return out

    def feature_tensor(self) -> torch.Tensor | None:
        if not self.features:
            return None
        return self.features[0] if len(self.features) == 1 else torch.cat(self.features, 0)


class BNTap(nn.Module):
    """Pass-through node inserted before a BatchNorm op of an FX graph."""

    def __init__(self, rec: Recorder, name: str) -> None:
        super().__init__()
        self.rec, self.layer = rec, name

    def forward(self, x, mean, var):  # noqa: D401
        if self.rec.active:
            self.rec.record_bn(BNRecord(self.layer, x, mean, var))
        return x


class FeatTap(nn.Module):
    def __init__(self, rec: Recorder) -> None:
        super().__init__()
        self.rec = rec

    def forward(self, x):
        if self.rec.active:
            self.rec.features.append(x)
        return x


class BatchChunked(nn.Module):
    """Runs a program exported with a fixed batch size on any batch, chunk by chunk."""

    def __init__(self, inner: nn.Module, batch: int, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.inner, self.batch, self.input_shape = inner, batch, input_shape
        self.rec: Recorder | None = None  # set when taps are installed; padding is trimmed from it

    def forward(self, x):
        n = x.shape[0]
        outs = []
        for i in range(0, n, self.batch):
            chunk = x[i : i + self.batch]
            pad = self.batch - chunk.shape[0]
            if pad:
                chunk = torch.cat([chunk, chunk.new_zeros((pad, *chunk.shape[1:]))], 0)
            seen = (len(self.rec.bn), len(self.rec.features)) if self.rec is not None else (0, 0)
            out = self.inner(chunk)
            if pad and self.rec is not None:  # padded rows must not enter BN statistics
                keep = self.batch - pad
                for r in self.rec.bn[seen[0]:]:
                    r.x = r.x[:keep]
                self.rec.features[seen[1]:] = [f[:keep] for f in self.rec.features[seen[1]:]]
            outs.append(out[: self.batch - pad])
        return torch.cat(outs, 0)


def to_fx(runtime: nn.Module, input_shape: tuple[int, ...]) -> nn.Module | None:
    """TorchScript -> FX GraphModule, so that BN inputs can be tapped. None if it fails."""
    try:
        from torch._export.converter import TS2EPConverter

        quiet = logging.getLogger("torch._export")
        level = quiet.level
        quiet.setLevel(logging.ERROR)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ep = TS2EPConverter(runtime, (torch.zeros(2, *input_shape),)).convert()
        finally:
            quiet.setLevel(level)
        gm = ep.module()
        x = torch.randn(3, *input_shape)
        with torch.no_grad():
            if not torch.allclose(gm(x), runtime(x), atol=1e-4, rtol=1e-4):
                raise RuntimeError("converted graph differs from the TorchScript module")
        return gm
    except Exception as e:  # the converter is private API: never fatal
        log.warning("could not convert the TorchScript teacher to an FX graph (%s); "
                    "BatchNorm statistics and features will not be tapped", first_line(e))
        return None


def _get_attr(gm: nn.Module, node) -> torch.Tensor | None:
    if getattr(node, "op", "") != "get_attr":
        return None
    obj = gm
    for part in str(node.target).split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj if isinstance(obj, torch.Tensor) else None


def tap_graph(gm: torch.fx.GraphModule, rec: Recorder) -> tuple[list[str], str | None, tuple | None]:
    """Insert pass-through taps before each BN op and before the last linear op."""
    graph = gm.graph
    bn_names: list[str] = []
    last_linear = None
    for node in list(graph.nodes):
        if node.op != "call_function":
            continue
        if node.target in _BN_OPS:
            inp, mean, var = node.args[0], node.args[3], node.args[4]
            name = str(mean.target).rsplit(".", 1)[0] if getattr(mean, "op", "") == "get_attr" else node.name
            tap_name = f"_dfkd_bn_tap_{len(bn_names)}"
            gm.add_submodule(tap_name, BNTap(rec, name))
            with graph.inserting_before(node):
                tapped = graph.call_module(tap_name, (inp, mean, var))
            node.replace_input_with(inp, tapped)
            bn_names.append(name)
        elif node.target in _LINEAR_OPS:
            last_linear = node
    feat_name, classifier = None, None
    if last_linear is not None:
        w = _get_attr(gm, last_linear.args[1])
        b = _get_attr(gm, last_linear.args[2]) if len(last_linear.args) > 2 else None
        classifier = (w, b) if w is not None else None
        inp = last_linear.args[0]
        weight = last_linear.args[1]
        feat_name = str(weight.target).rsplit(".", 1)[0] if getattr(weight, "op", "") == "get_attr" else last_linear.name
        gm.add_submodule("_dfkd_feat_tap", FeatTap(rec))
        with graph.inserting_before(last_linear):
            tapped = graph.call_module("_dfkd_feat_tap", (inp,))
        last_linear.replace_input_with(inp, tapped)
    graph.lint()
    gm.recompile()
    return bn_names, feat_name, classifier


def hook_module(module: nn.Module, rec: Recorder, input_shape) -> tuple[list[str], str | None, tuple | None]:
    """Forward hooks on BN modules and on the last Linear module that runs."""
    bn_names = []
    for name, m in module.named_modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats:
            def hook(mod, inp, out, name=name):
                if rec.active:
                    rec.record_bn(BNRecord(name, inp[0], mod.running_mean, mod.running_var))
            m.register_forward_hook(hook)
            bn_names.append(name)
    order: list[str] = []
    handles = [m.register_forward_pre_hook(lambda mod, inp, name=name: order.append(name))
               for name, m in module.named_modules() if isinstance(m, nn.Linear)]
    with torch.no_grad():
        try:
            module(torch.zeros(2, *input_shape))
        except Exception:
            pass  # reported properly by _check_forward
    for h in handles:
        h.remove()
    feat_name = order[-1] if order else None
    classifier = None
    if feat_name:
        lin = dict(module.named_modules())[feat_name]
        lin.register_forward_pre_hook(lambda mod, inp: rec.features.append(inp[0]) if rec.active else None)
        classifier = (lin.weight, lin.bias)
    return bn_names, feat_name, classifier
