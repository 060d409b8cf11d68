"""Load a teacher without unpickling arbitrary objects, and inspect it into a TeacherSpec.

Three safe formats are accepted:

* TorchScript (``torch.jit.save``): loaded with ``torch.jit.load``; converted to an FX graph
  (``torch._export.converter``) so that BatchNorm inputs and the classifier's input features
  can be tapped -- forward hooks do not fire inside a ScriptModule.
* ``torch.export`` programs (``.pt2``): loaded with ``torch.export.load``.
* a factory ``package.module:function`` plus a state_dict loaded with ``weights_only=True``.

Whatever the format, the rest of the tool sees a :class:`~dfkd_edge.teacher_model.Teacher`
(dfkd_edge.teacher_model); its taps are dfkd_edge.taps.
"""

from __future__ import annotations

import json
import warnings
import zipfile
from pathlib import Path

import torch
from torch import nn

from dfkd_edge.errors import UserError, first_line
from dfkd_edge.export.onnx_model import is_onnx
from dfkd_edge.export.onnx_torch import load_onnx_module
from dfkd_edge.models.registry import checked_module, import_factory
from dfkd_edge.taps import BatchChunked
from dfkd_edge.teacher_model import RANK_KIND, Teacher, inspect_module

#: Name of the JSON file dfkd-edge embeds in TorchScript archives it writes (input shape etc.).
META_FILE = "dfkd_edge.json"


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
    if len(input_shape) not in RANK_KIND:
        raise UserError(f"input shape {input_shape} is not (F), (C,L) or (C,H,W)")

    if fmt == "exported-program" and static_batch is not None:
        module = BatchChunked(module, static_batch, input_shape)

    for p in module.parameters():
        p.requires_grad_(False)
    if runtime is not None:
        _eval(runtime)
    _eval(module)
    return inspect_module(module, runtime, backend, path, fmt, input_shape)


def _eval(m: nn.Module) -> None:
    try:
        m.eval()
    except (NotImplementedError, RuntimeError):  # exported GraphModules may refuse train/eval
        pass


def _load_factory(path: Path, factory: str) -> nn.Module:
    module = checked_module(import_factory(factory, "--factory")(), factory, "--factory")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # UnpicklingError for non-tensor objects, RuntimeError for truncation
        raise UserError(
            f"{path} is not a state_dict readable with weights_only=True ({first_line(e)}); "
            "save it with torch.save(model.state_dict(), path)") from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise UserError(f"{path} holds a {type(state).__name__}, not a state_dict")
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise UserError(f"state_dict {path.name} does not fit {factory}: {first_line(e)}") from None
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
        raise UserError(f"{path} looks like TorchScript but cannot be loaded ({first_line(e)}); "
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
                        f"({first_line(e)}); is the file truncated?") from None
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


def save_torchscript(module: nn.Module, path: str | Path, input_shape: tuple[int, ...], **meta) -> None:
    """Script (or trace) a module and save it with its input shape embedded (see META_FILE)."""
    module = module.eval()
    try:
        scripted = torch.jit.script(module)
    except Exception:
        scripted = torch.jit.trace(module, torch.zeros(1, *input_shape))
    info = {"input_shape": list(input_shape), **meta}
    torch.jit.save(scripted, str(path), _extra_files={META_FILE: json.dumps(info)})


__all__ = ["META_FILE", "load_teacher", "save_torchscript"]
