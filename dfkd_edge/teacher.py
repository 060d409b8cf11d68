"""Load a teacher without unpickling arbitrary objects, and inspect it into a TeacherSpec.

Three safe formats are accepted:

* TorchScript (``torch.jit.save``): loaded with ``torch.jit.load``; converted to an FX graph
  (``torch._export.converter``) so that BatchNorm inputs and the classifier's input features
  can be tapped -- forward hooks do not fire inside a ScriptModule.
* ``torch.export`` programs (``.pt2``): loaded with ``torch.export.load``.
* a factory ``package.module:function`` plus a state_dict loaded with ``weights_only=True``.

Whatever the format, the rest of the tool sees a :class:`Teacher`: a frozen module in eval
mode, its :class:`TeacherSpec`, and :meth:`Teacher.taps` to read BatchNorm inputs and the
penultimate features during a forward pass (synthesis needs both).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import warnings
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from dfkd_edge.errors import UserError
from dfkd_edge.export.onnx_model import is_onnx
from dfkd_edge.export.onnx_torch import load_onnx_module

log = logging.getLogger(__name__)

#: Name of the JSON file dfkd-edge embeds in TorchScript archives it writes (input shape etc.).
META_FILE = "dfkd_edge.json"

_BN_OPS = {
    torch.ops.aten.batch_norm.default,
    torch.ops.aten._native_batch_norm_legit_no_training.default,
    torch.ops.aten.native_batch_norm.default,
}
_LINEAR_OPS = {torch.ops.aten.linear.default}
_RANK_KIND = {1: "vector", 2: "signal", 3: "image"}


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
        return _RANK_KIND[len(self.input_shape)]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["kind"] = self.kind
        return d


@dataclass
class BNRecord:
    name: str
    x: torch.Tensor
    running_mean: torch.Tensor
    running_var: torch.Tensor


class _FirstBNSeen(Exception):
    """Raised by a BN tap to end a forward pass whose first BatchNorm input is all that is wanted."""


class _Recorder:
    def __init__(self) -> None:
        self.active = False
        self.stop_at_first = False  # Teacher.first_bn_input: the rest of the network need not run
        self.bn: list[BNRecord] = []
        self.features: list[torch.Tensor] = []

    def record_bn(self, r: BNRecord) -> None:
        self.bn.append(r)
        if self.stop_at_first:
            raise _FirstBNSeen

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


class _BNTap(nn.Module):
    """Pass-through node inserted before a BatchNorm op of an FX graph."""

    def __init__(self, rec: _Recorder, name: str) -> None:
        super().__init__()
        self.rec, self.layer = rec, name

    def forward(self, x, mean, var):  # noqa: D401
        if self.rec.active:
            self.rec.record_bn(BNRecord(self.layer, x, mean, var))
        return x


class _FeatTap(nn.Module):
    def __init__(self, rec: _Recorder) -> None:
        super().__init__()
        self.rec = rec

    def forward(self, x):
        if self.rec.active:
            self.rec.features.append(x)
        return x


class _BatchChunked(nn.Module):
    """Runs a program exported with a fixed batch size on any batch, chunk by chunk."""

    def __init__(self, inner: nn.Module, batch: int, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.inner, self.batch, self.input_shape = inner, batch, input_shape
        self.rec: _Recorder | None = None  # set when taps are installed; padding is trimmed from it

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


class Teacher:
    """A frozen, eval-mode teacher with its spec and BN/feature taps."""

    def __init__(self, module: nn.Module, spec: TeacherSpec, recorder: _Recorder,
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
        return self.module.batch if isinstance(self.module, _BatchChunked) else None

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
    def taps(self) -> Iterator[_Recorder]:
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
            except _FirstBNSeen:
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
    def logits(self, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """fp32 logits on the CPU, computed where the teacher is, ``batch_size`` rows at a time."""
        return torch.cat([self.module(x[i : i + batch_size].to(self.device)).float().cpu()
                          for i in range(0, len(x), batch_size)], 0)


# ----------------------------------------------------------------------------- parsing


def parse_input_shape(text: str | None) -> tuple[int, ...] | None:
    """'1,8,8' / '1x8x8' / '30' -> tuple, without the batch dimension."""
    if text is None or str(text).strip() == "":
        return None
    parts = str(text).replace("x", ",").replace(" ", "").strip("()[]").split(",")
    try:
        dims = tuple(int(p) for p in parts if p != "")
    except ValueError:
        raise UserError(
            f"--input-shape {text!r} is not a list of integers; give it without the batch "
            "dimension, e.g. 30 (vectors), 1,40 (signals) or 1,8,8 (images)") from None
    if not dims or any(d <= 0 for d in dims):
        raise UserError(f"--input-shape {text!r} must hold positive integers, e.g. 1,8,8")
    if len(dims) not in _RANK_KIND:
        raise UserError(
            f"--input-shape {text!r} has {len(dims)} dimensions; supported are 1 (F), 2 (C,L) "
            "or 3 (C,H,W), without the batch dimension")
    return dims


# ----------------------------------------------------------------------------- loading


def _is_onnx(path: Path) -> bool:
    return is_onnx(path)


def _archive_kind(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except zipfile.BadZipFile:
        return "not-zip"
    except OSError as e:
        raise UserError(f"cannot read teacher file {path}: {e.strerror or e}") from None
    if any("/code/" in n for n in names) and any(n.endswith("constants.pkl") for n in names):
        return "torchscript"
    if any(n.endswith("archive_format") for n in names) or any("/models/" in n and n.endswith(".json") for n in names):
        return "exported-program"
    if any(n.endswith("data.pkl") for n in names):
        return "pickle-zip"
    return "unknown-zip"


_SAFE_FORMATS = ("a TorchScript file (torch.jit.save), a torch.export program (.pt2, "
                 "torch.export.save), or a state_dict with --factory package.module:function")


def load_teacher(path: str | Path, input_shape: tuple[int, ...] | None = None,
                 factory: str | None = None) -> Teacher:
    """Load and inspect a teacher file; raises UserError (exit 2) on anything unusable."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"teacher file {path} does not exist; give the path of {_SAFE_FORMATS}")
    if path.is_dir():
        raise UserError(f"teacher path {path} is a directory; give the model file itself")
    if path.stat().st_size == 0:
        raise UserError(f"teacher file {path} is empty; give {_SAFE_FORMATS}")

    if factory:
        module, fmt, shape_in_file = _load_factory(path, factory), "state-dict", None
        runtime, backend = module, "torch-eager"
    else:
        kind = _archive_kind(path)
        if kind == "torchscript":
            module, shape_in_file = _load_torchscript(path)
            fmt, runtime, backend = "torchscript", module, "torchscript"
        elif kind == "exported-program":
            module, shape_in_file, static_batch = _load_exported(path)
            fmt, runtime, backend = "exported-program", None, "torch-eager"
        elif kind == "not-zip" and _is_onnx(path):  # an ONNX classifier, run by PyTorch operations

            module, shape_in_file = load_onnx_module(path)
            fmt, runtime, backend = "onnx", module, "torch-eager"
        elif kind == "pickle-zip":
            raise UserError(
                f"{path} is a pickled torch.save file; pickles can run code and are not loaded. "
                f"If it is a state_dict, add --factory package.module:function; otherwise save "
                f"{_SAFE_FORMATS.split(', or')[0]}")
        else:
            raise UserError(f"{path} is not a model file dfkd-edge can read; give {_SAFE_FORMATS}")

    if input_shape is None:
        input_shape = shape_in_file
    elif shape_in_file is not None and tuple(shape_in_file) != tuple(input_shape):
        raise UserError(
            f"--input-shape {','.join(map(str, input_shape))} differs from the shape recorded in "
            f"{path.name} ({','.join(map(str, shape_in_file))}); drop --input-shape or fix it")
    if input_shape is None:
        raise UserError(
            f"{path.name} does not record its input shape; pass --input-shape without the batch "
            "dimension, e.g. 30 (vectors), 1,40 (signals) or 1,8,8 (images)")
    input_shape = tuple(int(d) for d in input_shape)
    if len(input_shape) not in _RANK_KIND:
        raise UserError(f"input shape {input_shape} is not (F), (C,L) or (C,H,W)")

    if fmt == "exported-program" and static_batch is not None:
        module = _BatchChunked(module, static_batch, input_shape)

    for p in module.parameters():
        p.requires_grad_(False)
    if runtime is not None:
        _eval(runtime)
    _eval(module)
    return _inspect(module, runtime, backend, path, fmt, input_shape)


def _eval(m: nn.Module) -> None:
    try:
        m.eval()
    except (NotImplementedError, RuntimeError):  # exported GraphModules may refuse train/eval
        pass


def _load_factory(path: Path, factory: str) -> nn.Module:
    if ":" not in factory:
        raise UserError(f"--factory {factory!r} must look like package.module:function")
    mod_name, fn_name = factory.split(":", 1)
    try:
        fn = getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as e:
        raise UserError(f"--factory {factory!r} cannot be imported ({e}); check it is on PYTHONPATH") from None
    module = fn()
    if not isinstance(module, nn.Module):
        raise UserError(f"--factory {factory!r} returned {type(module).__name__}, not a torch.nn.Module")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for non-tensor objects, RuntimeError for truncation
        raise UserError(
            f"{path} is not a state_dict readable with weights_only=True ({_first_line(e)}); "
            "save it with torch.save(model.state_dict(), path)") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"{path} holds a {type(state).__name__}, not a state_dict")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise UserError(f"state_dict {path.name} does not fit {factory}: {_first_line(e)}") from None
    return module


def _read_meta(extra: dict) -> dict:
    raw = extra.get(META_FILE) or b""
    if not raw:
        return {}
    try:
        meta = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return {}
    return meta if isinstance(meta, dict) else {}


def _load_torchscript(path: Path) -> tuple[nn.Module, tuple[int, ...] | None]:
    extra = {META_FILE: ""}
    try:
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as e:
        raise UserError(f"{path} looks like TorchScript but cannot be loaded ({_first_line(e)}); "
                        "is the file truncated?") from None
    shape = _read_meta(extra).get("input_shape")
    return module, (tuple(int(d) for d in shape) if shape else None)


def _load_exported(path: Path) -> tuple[nn.Module, tuple[int, ...] | None, int | None]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ep = torch.export.load(str(path))
    except Exception as e:
        raise UserError(f"{path} looks like a torch.export program but cannot be loaded "
                        f"({_first_line(e)}); is the file truncated?") from None
    user_inputs = list(ep.graph_signature.user_inputs)
    placeholders = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    if len(user_inputs) != 1:
        raise UserError(f"{path.name} takes {len(user_inputs)} inputs; a classifier with one input is expected")
    val = placeholders[user_inputs[0]].meta.get("val")
    shape, static_batch = None, None
    if val is not None:
        dims = list(val.shape)
        if all(isinstance(d, int) for d in dims[1:]):
            shape = tuple(int(d) for d in dims[1:])
        if isinstance(dims[0], int):
            static_batch = int(dims[0])
    return ep.module(), shape, static_batch


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


# ----------------------------------------------------------------------------- inspection


def _to_fx(runtime: nn.Module, input_shape: tuple[int, ...]) -> nn.Module | None:
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
                    "BatchNorm statistics and features will not be tapped", _first_line(e))
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


def _tap_graph(gm: torch.fx.GraphModule, rec: _Recorder) -> tuple[list[str], str | None, tuple | None]:
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
            gm.add_submodule(tap_name, _BNTap(rec, name))
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
        gm.add_submodule("_dfkd_feat_tap", _FeatTap(rec))
        with graph.inserting_before(last_linear):
            tapped = graph.call_module("_dfkd_feat_tap", (inp,))
        last_linear.replace_input_with(inp, tapped)
    graph.lint()
    gm.recompile()
    return bn_names, feat_name, classifier


def _hook_module(module: nn.Module, rec: _Recorder, input_shape) -> tuple[list[str], str | None, tuple | None]:
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


def _check_forward(module: nn.Module, input_shape: tuple[int, ...], path: Path) -> int:
    shape_txt = ",".join(map(str, input_shape))
    x = torch.randn(2, *input_shape)
    try:
        with torch.no_grad():
            out = module(x)
    except Exception as e:
        raise UserError(f"the teacher rejected inputs of shape (N,{shape_txt}): {_first_line(e)}; "
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


def _inspect(module: nn.Module, runtime: nn.Module | None, backend: str, path: Path, fmt: str,
             input_shape: tuple[int, ...]) -> Teacher:
    _check_weights(runtime if runtime is not None else module, path)
    num_classes = _check_forward(runtime if runtime is not None else module, input_shape, path)
    rec = _Recorder()
    taps = True
    if fmt == "torchscript":
        fx = _to_fx(module, input_shape)
        if fx is None:
            taps, bn_names, feat, classifier = False, [], None, None
            work = module
        else:
            work = fx
            bn_names, feat, classifier = _tap_graph(fx, rec)
    elif isinstance(module, torch.fx.GraphModule):
        work = module
        bn_names, feat, classifier = _tap_graph(module, rec)
    elif isinstance(module, _BatchChunked) and isinstance(module.inner, torch.fx.GraphModule):
        work = module
        module.rec = rec
        bn_names, feat, classifier = _tap_graph(module.inner, rec)
    else:
        work = module
        bn_names, feat, classifier = _hook_module(module, rec, input_shape)

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


def save_torchscript(module: nn.Module, path: str | Path, input_shape: tuple[int, ...], **meta) -> None:
    """Script (or trace) a module and save it with its input shape embedded (see META_FILE)."""
    module = module.eval()
    try:
        scripted = torch.jit.script(module)
    except Exception:
        scripted = torch.jit.trace(module, torch.zeros(1, *input_shape))
    info = {"input_shape": list(input_shape), **meta}
    torch.jit.save(scripted, str(path), _extra_files={META_FILE: json.dumps(info)})




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


__all__ = ["Teacher", "TeacherSpec", "BNLayer", "check_compatible", "load_teacher", "parse_input_shape",
           "save_torchscript"]
