"""Flows: lists of stages (dfkd_edge.stages) the runner (dfkd_edge.runner) runs over a run directory.

``convert`` is every stage in a row:

inspect -> synthesize -> [aggregate] -> [virtual] -> [virtual-set] -> distill -> [distill-kd-baseline] -> export ->
calibrate -> [build] -> profile -> evaluate -> report

``quantize`` (the user's own model in int8) shares the synthesis, calibration, build and profile stages:

inspect -> synthesize (a calibration-sized set) -> export (the model) -> calibrate -> calibration-sources ->
[build] -> profile -> evaluate -> report

A stage command (``dfkd-edge synthesize | distill | export | calibrate | build | report``) runs
the stages whose ``command`` it is, over a run directory whose earlier stages are finished, with
the config the manifest recorded and its own options on top (:func:`run_command`). Under
torchrun, rank 0 runs the flow (the leader) and the other ranks :func:`follow` it through the
distributed stages (synthesize, distill).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import torch

from dfkd_edge.config import ConvertConfig, settle, validate_config
from dfkd_edge.distill import KDConfig, distill
from dfkd_edge.distill.vkd import load_virtual_generator
from dfkd_edge.distributed import Dist, Workdir
from dfkd_edge.errors import PipelineError, UserError
from dfkd_edge.models.students import build_from_recipe
from dfkd_edge.progress import Progress
from dfkd_edge.runfiles import MANIFEST, MODEL_FILES, STUDENT_FILES, VIRTUAL_PT, Artifacts
from dfkd_edge.runner import Run, State, clean_temporaries, prepare_out_dir, run_stages
from dfkd_edge.stages.aggregate import Aggregate
from dfkd_edge.stages.build import Build, tensorrt_profiles
from dfkd_edge.stages.calibrate import Calibrate
from dfkd_edge.stages.common import seed_all
from dfkd_edge.stages.distill import Distill, DistillKDBaseline
from dfkd_edge.stages.evaluate import Evaluate
from dfkd_edge.stages.evaluate_model import EvaluateModel
from dfkd_edge.stages.export import Export, ExportModel
from dfkd_edge.stages.inspect import Inspect, InspectModel, load_teachers, set_domain
from dfkd_edge.stages.profile import Profile
from dfkd_edge.stages.report import Report, ReportModel
from dfkd_edge.stages.sources import CalibrationSources
from dfkd_edge.stages.synthesize import Synthesize
from dfkd_edge.stages.virtual import Virtual, VirtualSet
from dfkd_edge.synthesis import METHODS, create_synthesizer, resolve_method

CONVERT = [Inspect(), Synthesize(), Aggregate(), Virtual(), VirtualSet(), Distill(), DistillKDBaseline(), Export(), Calibrate(),
           Build(), Profile(), Evaluate(), Report()]
#: the user's own model in int8 (``dfkd-edge quantize``): no student; the same calibration, build and profile
QUANTIZE = [InspectModel(), Synthesize(), ExportModel(), Calibrate(), CalibrationSources(), Build(), Profile(),
            EvaluateModel(), ReportModel()]
COMMANDS = ("synthesize", "distill", "export", "calibrate", "build", "report")  # in the flow's order


def _state(cfg: ConvertConfig, run: Run, dist: Dist, files: Artifacts = STUDENT_FILES) -> State:
    threads = cfg.resolved_threads()
    compute = cfg.compute(dist)
    run.manifest["compute"] = compute.to_dict()
    run.manifest["distributed"] = dist.to_dict()
    return State(cfg=cfg, run=run, dist=dist, compute=compute, threads=threads, files=files,
                 multi=bool(cfg.more_teachers), t_all=time.perf_counter())


def convert(cfg: ConvertConfig, progress: Progress | None = None, dist: Dist | None = None) -> dict:
    """Run every stage (skipping finished ones with ``cfg.resume``); returns the report dict."""
    dist = dist or Dist()
    return _leading(dist, lambda: _convert(cfg, progress, dist))


def _leading(dist: Dist, work):
    """Run ``work`` as the leader: when it fails, the followers waiting for a command are told to stop."""
    try:
        return work()
    except Exception as e:
        if dist.ready and not dist.busy:
            dist.command("abort", kind=type(e).__name__, message=str(e).splitlines()[0] if str(e) else "")
        raise


def _convert(cfg: ConvertConfig, progress: Progress | None, dist: Dist) -> dict:
    try:
        validate_config(cfg, dist)
        prepare_out_dir(Path(cfg.out), cfg.force, cfg.resume)
        same_flow(Path(cfg.out), "convert", cfg.resume)
    except Exception as e:
        dist.agree(e)
        raise
    settle(cfg)
    run = Run(cfg, progress)
    s = _state(cfg, run, dist)
    torch.set_num_threads(cfg.train_threads(dist))
    run_stages(run, s, CONVERT)
    return s.report


def quantize(cfg: ConvertConfig, progress: Progress | None = None) -> dict:
    """The user's own model (``cfg.teacher``) in int8, calibrated on samples synthesized from it
    (``cfg.samples`` of them, + ``cfg.holdout`` to check it); returns the report dict."""
    validate_quantize(cfg)
    prepare_out_dir(Path(cfg.out), cfg.force, cfg.resume)
    same_flow(Path(cfg.out), "quantize", cfg.resume)
    settle(cfg)
    dist = Dist()
    run = Run(cfg, progress)
    run.manifest["flow"] = "quantize"
    s = _state(cfg, run, dist, MODEL_FILES)
    torch.set_num_threads(cfg.train_threads(dist))
    run_stages(run, s, QUANTIZE)
    return s.report


def validate_quantize(cfg: ConvertConfig) -> None:
    """convert's checks, and what quantize adds: one model, a method that makes a calibration set."""
    validate_config(cfg)
    if cfg.more_teachers:
        raise UserError("quantize takes one model; give several teachers to `dfkd-edge convert`")
    method = resolve_method(cfg.method)
    if method not in METHODS or METHODS[method].needs_student:
        raise UserError(f"--method {cfg.method} trains a student; quantize synthesizes its calibration set with "
                        "auto, deepinversion, soft-target or gaussian")


def same_flow(out: Path, flow: str, resume: bool) -> None:
    """--resume finishes a run of the same command: UserError when ``out`` holds the other flow's run."""
    if not resume or not (out / MANIFEST).is_file():
        return
    try:
        recorded = json.loads((out / MANIFEST).read_text()).get("flow", "convert")
    except ValueError:
        return  # unreadable: Run starts over and says so
    if recorded != flow:
        raise UserError(f"{out} holds a `dfkd-edge {recorded}` run; --resume finishes it with `dfkd-edge {recorded}`, "
                        f"or pass --force to `dfkd-edge {flow}` to overwrite it")


def load_run_config(out: str | Path) -> ConvertConfig:
    """The config of the run in ``out`` (its manifest); UserError naming the first command when there is none."""
    out = Path(out)
    if not (out / MANIFEST).is_file():
        raise UserError(f"{out} holds no dfkd-edge run (no {MANIFEST}); run `dfkd-edge synthesize TEACHER --out "
                        f"{out}` (or `dfkd-edge convert`) first")
    try:
        doc = json.loads((out / MANIFEST).read_text())
        cfg = ConvertConfig.from_dict(doc["config"])
    except (ValueError, KeyError, TypeError) as e:
        raise UserError(f"{out / MANIFEST} is not a dfkd-edge manifest ({e}); run the flow again with --force") from None
    if doc.get("flow", "convert") != "convert":
        raise UserError(f"{out} holds a `dfkd-edge {doc['flow']}` run, whose stages have no commands of their own; "
                        f"finish or redo it with `dfkd-edge {doc['flow']} MODEL --out {out} --resume`")
    cfg.out, cfg.force, cfg.resume = str(out), False, False
    return cfg


def run_command(command: str, cfg: ConvertConfig, progress: Progress | None = None, dist: Dist | None = None,
                announce=None) -> State:
    """One stage command over ``cfg.out``: the stages before its own must be finished (UserError
    naming the command to run first); its own run when they are not up to date; none after them."""
    dist = dist or Dist()
    return _leading(dist, lambda: _command(command, cfg, progress, dist, announce))


def _command(command: str, cfg: ConvertConfig, progress, dist: Dist, announce) -> State:
    if command not in COMMANDS:
        raise ValueError(command)
    try:
        validate_config(cfg, dist)
        if command == "build" and not tensorrt_profiles(cfg):
            raise UserError(f"build writes the TensorRT targets' artifacts, and this run's targets "
                            f"({', '.join(cfg.targets)}) have none: give one with --target (dfkd-edge targets list)")
        if command == "synthesize":
            cfg.resume = cfg.resume or (not cfg.force and _same_teachers(cfg))
            prepare_out_dir(Path(cfg.out), cfg.force, cfg.resume)
        else:
            clean_temporaries(Path(cfg.out))
    except Exception as e:
        dist.agree(e)
        raise
    settle(cfg)
    run = Run(cfg, progress, previous=command != "synthesize" or cfg.resume)
    run.manifest["stages"] = dict(run.previous)  # later stages' records stay (and can go stale)
    run.hold()  # refused (a stage before this command's is missing or stale): nothing on disk changes
    s = _state(cfg, run, dist)
    torch.set_num_threads(cfg.train_threads(dist))
    last = max(i for i, st in enumerate(CONVERT) if st.command == command)
    mine = CONVERT.index(next(st for st in CONVERT if st.command == command))
    require = {st.name for st in CONVERT[:mine]}
    ran = run_stages(run, s, CONVERT[:last + 1], require=require, announce=announce)
    if ran and command != "report":  # the report no longer shows what the directory holds
        run.manifest["complete"] = False
        run.write_manifest()
    return s


def _same_teachers(cfg: ConvertConfig) -> bool:
    """``cfg.out`` holds a convert run of the same teacher files: ``synthesize`` continues it as the other stage
    commands do (its stages kept when their options and inputs are unchanged)."""
    try:
        recorded = load_run_config(cfg.out)
    except UserError:
        return False
    return [os.path.abspath(p) for p in recorded.teacher_paths] == [os.path.abspath(p) for p in cfg.teacher_paths]


def follow(cfg: ConvertConfig, dist: Dist) -> None:
    """A follower rank under torchrun: load the teacher, then do the leader's commands (synthesize,
    distill) until it says done. Writes nothing into --out but its own synthesis checkpoints."""
    try:
        validate_config(cfg, dist)
        settle(cfg)
        teacher = load_teachers(cfg)  # several: their Ensemble, inverted like one teacher
        set_domain(teacher, cfg)
    except Exception as e:
        dist.agree(e)
        raise
    dist.agree(None)
    torch.set_num_threads(cfg.train_threads(dist))
    compute = cfg.compute(dist)
    teacher.to(compute)
    work = Workdir()
    checkpoints = []
    try:
        while not _obey(cfg, dist, teacher, compute, work, checkpoints):
            pass
    finally:
        work.close()


def _obey(cfg: ConvertConfig, dist: Dist, teacher, compute, work, checkpoints: list) -> bool:
    """Carry out the leader's next command; True when the followers' part is over."""
    name, p = dist.next_command()
    if name == "synthesize":
        synth = create_synthesizer(p["method"], teacher, **p["kwargs"])
        checkpoints.append(Path(p["checkpoint_dir"]) / f"rank-{dist.rank}")
        synth.synthesize(p["n"], holdout=p["holdout"], checkpoint_dir=p["checkpoint_dir"], dist=dist, compute=compute)
    elif name == "distill":
        virtual = None
        if p["virtual"] is not None:
            (work.path / VIRTUAL_PT).write_bytes(p["virtual"])
            virtual = load_virtual_generator(work.path / VIRTUAL_PT)
        x, logits = dist.share_rows(None, None, "", work.path)
        kd = KDConfig(**p["kd"])
        seed_all(cfg.seed)
        distill(build_from_recipe(p["recipe"]), x, logits, kd, teacher=None if kd.mode == "vkd" else teacher,
                virtual=virtual, dist=dist, compute=compute, micro_batch=p["micro"])
    elif name == "done":
        for c in checkpoints:  # the leader has the transfer set; on a shared disk it removed these
            shutil.rmtree(c, ignore_errors=True)
        return True
    elif name == "abort":
        err = UserError if p["kind"] == "UserError" else PipelineError
        raise err(f"rank 0 stopped: {p['message']}")
    else:
        raise PipelineError(f"unknown command from rank 0: {name!r}")
    return False
