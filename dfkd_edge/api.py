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
``--distill`` -> ``distill_mode``, ``--target`` -> ``targets``, a list); they are checked where the
CLI's are (dfkd_edge.config.validate_config): a bad value raises ``dfkd_edge.errors.UserError``
with the same one line, an unknown name ``TypeError``. A teacher given as an ``nn.Module`` (with
``input_shape``) is saved as TorchScript to ``OUT/teacher_module.pt`` and used from there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dfkd_edge import cli_options as opt
from dfkd_edge.cli import cli
from dfkd_edge.cli_options import config_from_options, convert_defaults, quantize_config, quantize_defaults
from dfkd_edge.errors import UserError
from dfkd_edge.flows import convert as run_convert, load_run_config, quantize as run_quantize, run_command
from dfkd_edge.io import atomic_path
from dfkd_edge.progress import NullProgress, Progress, RichProgress
from dfkd_edge.teacher import parse_input_shape, save_torchscript

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


def _defaults() -> dict:
    return convert_defaults()


def _options(given: dict, allowed: set[str] | None = None) -> dict:
    """The CLI's option dict from Python keywords (unknown ones: TypeError)."""
    names = set(_defaults())
    given = dict(given)
    if "target" in given:  # one target as a string
        given["targets"] = given.pop("target")
    if isinstance(given.get("targets"), str):
        given["targets"] = (given["targets"],)
    if given.get("input_shape") is not None and not isinstance(given["input_shape"], str):
        given["input_shape"] = ",".join(str(int(d)) for d in given["input_shape"])
    if "compile" in given:
        given["compile_"] = given.pop("compile")
    unknown = sorted(set(given) - (allowed if allowed is not None else names - {"out"}))
    if unknown:
        raise TypeError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(allowed or names))}")
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
        from rich.console import Console

        return RichProgress(Console(stderr=True))
    return progress or NullProgress()


def _result(out: str | Path, report: dict | None = None) -> Result:
    out = Path(out)
    files = {p.name: p for p in sorted(out.iterdir()) if p.is_file() and not p.name.startswith(".")}
    return Result(out=out, report=report, artifacts=files)


def convert(teacher, out: str | Path, progress=None, **options) -> Result:
    """Every stage, as ``dfkd-edge convert``: ``teacher`` a path, an ``nn.Module`` (with
    ``input_shape=``), or a list of them (several teachers)."""
    o = {**_defaults(), **_options(options), "out": str(out)}
    cfg = config_from_options(_teacher_paths(teacher, out, o.get("input_shape")), **o)
    return _result(out, run_convert(cfg, _progress(progress)))


def quantize(model, out: str | Path, progress=None, **options) -> Result:
    """The user's own ``model`` (a path, or an ``nn.Module`` with ``input_shape=``) in int8, calibrated
    on samples synthesized from it, as ``dfkd-edge quantize``."""
    defaults = quantize_defaults()
    o = {**defaults, **_options(options, set(defaults) - {"out"}), "out": str(out)}
    cfg = quantize_config(_teacher_paths(model, out, o.get("input_shape"))[0], **o)
    return _result(out, run_quantize(cfg, _progress(progress)))


def synthesize(teacher, out: str | Path, progress=None, **options) -> Result:
    """Start a run in ``out``: inspect and synthesize (``dfkd-edge synthesize``)."""
    o = {**_defaults(), **_options(options), "out": str(out)}
    cfg = config_from_options(_teacher_paths(teacher, out, o.get("input_shape")), **o)
    run_command("synthesize", cfg, _progress(progress))
    return _result(out)


def _stage(command: str, out: str | Path, progress, options: dict) -> Result:
    allowed = {p.name for p in cli.commands[command].params} - {"run_dir"}
    given = _options(options, allowed)  # an unknown option before anything else
    cfg = opt.overlay(load_run_config(out), given)
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
