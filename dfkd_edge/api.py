"""The Python API: the CLI's flows for notebooks and scripts.

    import dfkd_edge
    r = dfkd_edge.convert("teacher.pt", out="build/", targets=["jetson-orin-nano"], eval_data="test.npz")
    r.report["quality"]["verdict"], r.artifacts["student_int8.onnx"]
    q = dfkd_edge.quantize("model.pt", out="q/", eval_data="test.npz")   # your own model in int8

    from dfkd_edge import api
    api.synthesize(model, out="run/", input_shape=(3, 32, 32))   # an nn.Module in memory
    api.distill("run/", width=16); api.export("run/"); api.calibrate("run/")
    r = api.report("run/")

Options are the CLI's long names with underscores (``--synth-batch`` -> ``synth_batch``,
``--distill`` -> ``distill_mode``, ``--target`` -> ``targets``, a list), with the same defaults: both are
made from dfkd_edge.options, which reads them from the stages' dataclasses. They are checked where the
CLI's are (dfkd_edge.config.validate_config): a bad value raises ``dfkd_edge.errors.UserError`` with the
CLI's line in Python's words (``epochs must be positive``, not ``--epochs``), an unknown name ``TypeError``.
A teacher given as an ``nn.Module`` (with
``input_shape``) is saved as TorchScript to ``OUT/teacher_module.pt`` and used from there.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

from dfkd_edge import options as opts
from dfkd_edge.errors import UserError
from dfkd_edge.flows import convert as run_convert, load_run_config, quantize as run_quantize, run_command
from dfkd_edge.io import atomic_path
from dfkd_edge.progress import NullProgress, Progress, for_stream
from dfkd_edge.options import parse_input_shape
from dfkd_edge.teacher import save_torchscript

MODULE_FILE = "teacher_module.pt"


@dataclass
class Result:
    """What a flow left in ``out``: the report (after ``convert`` and ``report``) and the files."""

    out: Path
    report: dict | None = None
    artifacts: dict[str, Path] = field(default_factory=dict)

    @property
    def verdict(self) -> str | None:
        return (self.report or {}).get("quality", {}).get("verdict")


def _in_python_words(f):
    """A UserError raised inside ``f`` names keyword arguments, not the CLI's flags."""
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except UserError as e:
            raise UserError(opts.in_python_words(str(e))) from e
    return wrapper


def _options(command: str, given: dict) -> dict:
    """``command``'s options from Python keywords (an unknown one: TypeError)."""
    given = dict(given)
    if "target" in given:  # one target, by the CLI's name
        given["targets"] = given.pop("target")
    known = set(opts.COMMANDS[command]) - {"out"}
    unknown = sorted(set(given) - known)
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return given


def _teacher_paths(teacher, out: str | Path, input_shape) -> list[str]:
    """Paths for ``teacher``: a path, several, or an nn.Module saved as TorchScript into ``out``."""
    import torch

    teachers = teacher if isinstance(teacher, (list, tuple)) else [teacher]
    paths = []
    for i, t in enumerate(teachers):
        if isinstance(t, torch.nn.Module):
            shape = parse_input_shape(input_shape) if isinstance(input_shape, str) else input_shape
            if not shape:
                raise UserError("a teacher given as an nn.Module needs input_shape=(C, H, W) (without the batch)")
            Path(out).mkdir(parents=True, exist_ok=True)
            path = Path(out) / (MODULE_FILE if len(teachers) == 1 else f"teacher_module_{i}.pt")
            was_training = t.training
            with atomic_path(path) as tmp:
                save_torchscript(t, tmp, tuple(shape))
            t.train(was_training)
            paths.append(str(path))
        else:
            paths.append(str(t))
    return paths


def _progress(progress) -> Progress:
    if progress is True:
        return for_stream()
    return progress or NullProgress()


def _result(out: str | Path, report: dict | None = None) -> Result:
    out = Path(out)
    files = {p.name: p for p in sorted(out.iterdir()) if p.is_file() and not p.name.startswith(".")}
    return Result(out=out, report=report, artifacts=files)


@_in_python_words
def convert(teacher, out: str | Path, progress=None, **options) -> Result:
    """Every stage, as ``dfkd-edge convert``: ``teacher`` a path, an ``nn.Module`` (with
    ``input_shape=``), or a list of them (several teachers)."""
    o = _options("convert", options)
    cfg = opts.config("convert", _teacher_paths(teacher, out, o.get("input_shape")), {**o, "out": str(out)})
    return _result(out, run_convert(cfg, _progress(progress)))


@_in_python_words
def quantize(model, out: str | Path, progress=None, **options) -> Result:
    """The user's own ``model`` (a path, or an ``nn.Module`` with ``input_shape=``) in int8, calibrated
    on samples synthesized from it, as ``dfkd-edge quantize``."""
    o = _options("quantize", options)
    cfg = opts.config("quantize", _teacher_paths(model, out, o.get("input_shape"))[0], {**o, "out": str(out)})
    return _result(out, run_quantize(cfg, _progress(progress)))


@_in_python_words
def synthesize(teacher, out: str | Path, progress=None, **options) -> Result:
    """Start a run in ``out``: inspect and synthesize (``dfkd-edge synthesize``)."""
    o = _options("synthesize", options)
    cfg = opts.config("synthesize", _teacher_paths(teacher, out, o.get("input_shape")), {**o, "out": str(out)})
    run_command("synthesize", cfg, _progress(progress))
    return _result(out)


@_in_python_words
def _stage(command: str, out: str | Path, progress, options: dict) -> Result:
    given = _options(command, options)  # an unknown option before anything else
    cfg = opts.overlay(load_run_config(out), given)
    s = run_command(command, cfg, _progress(progress))
    return _result(out, getattr(s, "report", None) if command == "report" else None)


def distill(out: str | Path, progress=None, **options) -> Result:
    """The student from the run's transfer set (``dfkd-edge distill``)."""
    return _stage("distill", out, progress, options)


def export(out: str | Path, progress=None, **options) -> Result:
    """fp32 ONNX with the parity check (``dfkd-edge export``)."""
    return _stage("export", out, progress, options)


def calibrate(out: str | Path, progress=None, **options) -> Result:
    """int8 ONNX calibrated on synthesized samples (``dfkd-edge calibrate``)."""
    return _stage("calibrate", out, progress, options)


def build(out: str | Path, progress=None, **options) -> Result:
    """The TensorRT targets' artifacts (``dfkd-edge build``)."""
    return _stage("build", out, progress, options)


def report(out: str | Path, progress=None, **options) -> Result:
    """Latency (when needed), evaluation and the report (``dfkd-edge report``)."""
    return _stage("report", out, progress, options)
