"""synthesize: the transfer set from the teacher alone (dfkd_edge.synthesis), streamed to disk with
per-batch checkpoints under .partial/. Adversarial methods (and several teachers with CDFKD-MFS) train
the student here too: synthesis and KD interleave. Several teachers otherwise are inverted as their
ensemble (dfkd_edge.ensemble) like one teacher."""

from __future__ import annotations

import copy
import logging
import shutil
import tempfile
import time
from pathlib import Path

from dfkd_edge.compute import Compute
from dfkd_edge.cost import Probe, int8_forward_s, onnx_figures, onnx_forward_s, probe, saved_per_sample, weights_of
from dfkd_edge.errors import UserError
from dfkd_edge.export.onnx_export import export_onnx
from dfkd_edge.export.quantize import CalibConfig
from dfkd_edge.models.students import build_from_recipe
from dfkd_edge.config import budget_seconds
from dfkd_edge.plan import (budget_lines, fit_budget, lines as plan_lines, plan, student_probe, synthesis_batch,
                            synthesis_loop)
from dfkd_edge.runfiles import HEADERS_JSON, HEADERS_PT, PARTIAL, STUDENT_JSON, STUDENT_PT, TEACHER_JSON, TRANSFER_SET
from dfkd_edge.runner import Stage
from dfkd_edge.stages.common import save_student, scale_key, seed_all
from dfkd_edge.stages.export import shipped_module
from dfkd_edge.synthesis import METHODS, create_synthesizer
from dfkd_edge.synthesis.cdfkd_mfs import MultiTeacherConfig, MultiTeacherSynthesizer
from dfkd_edge.transfer_store import TransferSetFile

log = logging.getLogger(__name__)


class Synthesize(Stage):
    name, command, distributed = "synthesize", "synthesize", True

    def prepare(self, s) -> None:
        cfg = s.cfg
        needs_student = s.multihead or getattr(METHODS.get(s.method), "needs_student", False)
        if needs_student and cfg.kd.mode != "kd":
            raise UserError(f"--distill {cfg.kd.mode} needs a transfer set to distill from, but --method {s.method} "
                            "trains the student during synthesis; use --method deepinversion or soft-target")
        s.scaled = not needs_student  # runs on compute's device, data-parallel under torchrun
        s.uses_vkd = cfg.kd.mode != "kd" and not needs_student
        if s.scaled:
            s.teacher.to(s.compute)
        _configure(s, cfg.synth_batch)  # a synthesizer the options cannot make fails here, before the plan
        make_plan(s)  # --time-budget may cut the samples and steps
        _configure(s, synthesis_batch(cfg.synth_batch, s.probe.saved_bytes))
        if not s.scaled and s.compute.is_cuda:
            log.warning("--method %s runs on the CPU (deepinversion, soft-target, reused-generator, gaussian and KD "
                        "use the GPU)", s.method)

    def params(self, s) -> dict:
        return {**s.synth_cfg, "student": s.recipe if s.synth.needs_student else None, **scale_key(s)}

    def after_distributed(self, s) -> None:
        if s.scaled:
            s.teacher.to(Compute())  # back on the CPU: evaluation and the teacher's latency rows run there

    def reads(self, s) -> list[str]:
        return [TEACHER_JSON]

    def external(self, s) -> list[str]:
        return s.cfg.teacher_paths

    def extra(self, s) -> dict:
        """The decisions this stage's result follows (dfkd_edge.stages.inspect.decide), recorded with it."""
        return {"decided": {"method": s.method, "auto_why": s.auto_why, "student": s.recipe}}

    def writes(self, s) -> list[str]:
        return [TRANSFER_SET] + ([HEADERS_PT, HEADERS_JSON] if s.multihead else
                                 [STUDENT_PT, STUDENT_JSON] if s.synth.needs_student else [])

    def run(self, s) -> None:
        cfg, run = s.cfg, s.run
        # batches are checkpointed and the transfer set is streamed to disk: memory follows the batch size
        stream = {"checkpoint_dir": run.path(PARTIAL) / f"synthesize-{s.stage_key[:16]}", "out_path": run.path(TRANSFER_SET)}
        if s.synth.needs_student:
            seed_all(cfg.seed)
            trained = build_from_recipe(s.recipe)
            s.synth.train_student(trained, cfg.samples, holdout=cfg.holdout, progress=run.progress, **stream)
            if s.multihead:
                save_student(run, trained, s.recipe, {"loss": [s.synth.history[-1]]}, HEADERS_PT, HEADERS_JSON)
            else:
                save_student(run, trained, s.recipe, {"loss": [None], "trained_by": s.method})
            return
        with s.dist.collective():
            s.dist.command("synthesize", method=s.method, kwargs=_synth_kwargs(cfg, s.synth_cfg["batch"]), n=cfg.samples,
                           holdout=cfg.holdout, checkpoint_dir=str(stream["checkpoint_dir"]))
            s.synth.synthesize(cfg.samples, holdout=cfg.holdout, progress=run.progress, dist=s.dist,
                               compute=s.compute, **stream)

    def load(self, s) -> None:
        # whether it ran or was skipped: a kill between the manifest entry and the cleanup left the
        # checkpoints, and once the transfer set is recorded they are garbage
        for d in s.run.path(PARTIAL).glob("synthesize-*"):
            shutil.rmtree(d, ignore_errors=True)
        s.ts = TransferSetFile(s.run.path(TRANSFER_SET))
        s.x_train, s.l_train = s.ts.train  # rows read from disk batch by batch
        s.x_hold, s.l_hold = s.ts.held_out


def _configure(s, batch: int) -> None:
    cfg = s.cfg
    s.synth_cfg = {"method": s.method, "samples": cfg.samples, "holdout": cfg.holdout, "batch": batch,
                   "iterations": cfg.iterations, "seed": cfg.seed, "start": cfg.synth_start,
                   "jitter": cfg.synth_jitter, "bn_units": cfg.synth_bn_units, "domain": s.teacher.domain.to_dict()}
    seed_all(cfg.seed)
    s.synth = _synthesizer(s)


def _synthesizer(s):
    cfg, batch = s.cfg, s.synth_cfg["batch"]
    if s.multihead:
        return MultiTeacherSynthesizer(s.teacher, MultiTeacherConfig(iterations=cfg.iterations,
                                                                     batch_size=batch, seed=cfg.seed))
    return create_synthesizer(s.method, s.teacher, **_synth_kwargs(cfg, batch))


def _synth_kwargs(cfg, batch: int) -> dict:
    """A transfer-set method's options (the same on every rank: followers build theirs from these)."""
    return {"batch_size": batch, "seed": cfg.seed, "iterations": cfg.iterations, "start": cfg.synth_start,
            "jitter": cfg.synth_jitter, "bn_units": cfg.synth_bn_units}


def onnx_probe(p: Probe, module, shape: tuple[int, ...], threads: int, work: Path, calib: CalibConfig,
               onnx_file: str | None = None) -> None:
    """``p``'s ONNX Runtime figures: the network exported to ONNX as the export stage exports it (``onnx_file``:
    the user's own, timed as it is), timed under ONNX Runtime in fp32 and in each of ``calib``'s int8 formats. A
    network that does not export here is planned from its PyTorch passes (the export stage says why it fails); one
    whose int8 probe fails, from fp32's at the plan's shares."""
    try:
        with tempfile.TemporaryDirectory(prefix=".probe-", dir=work) as d:
            path = onnx_file
            if not path:
                module = module if all(t.device.type == "cpu" for t in module.parameters()) else (
                    copy.deepcopy(module).cpu())
                t0 = time.perf_counter()
                path = export_onnx(module, shape, Path(d) / "probe.onnx")
                p.export_s = round(time.perf_counter() - t0, 3)
            p.ort_forward_s = onnx_forward_s(path, shape, threads)
            p.onnx_bytes, p.activation_bytes = onnx_figures(path)
            try:
                p.int8_forward_s = int8_forward_s(path, shape, calib, threads, Path(d))
            except Exception as e:  # noqa: BLE001 - calibration says why where it fails for real
                log.debug("the int8 probe failed (%s: %s); the plan takes int8 at its shares of fp32",
                          type(e).__name__, e)
    except Exception as e:  # noqa: BLE001 - the plan falls back to PyTorch's passes
        log.debug("the ONNX Runtime probe failed (%s: %s); the plan uses PyTorch's passes", type(e).__name__, e)


def make_plan(s) -> None:
    """The probe of the teacher (and the student) here and the run's plan (dfkd_edge.plan), printed. A run that
    recorded a probe of the same teacher files keeps it: a resumed run's synthesis batch (cut by the probe's
    memory) and its stages' keys stay, on a busier machine too; the plan is made again from it."""
    flow = s.run.manifest.get("flow", "convert")
    teachers = {p: s.run.digest(Path(p).resolve()) for p in s.cfg.teacher_paths}
    recorded = s.run.previous_plan or {}
    fresh = not (recorded.get("probe") and recorded.get("teachers") == teachers)
    shape = tuple(s.spec.input_shape)
    student = None
    if fresh:  # timed at the batch synthesis will run, distillation's for the student
        compute = s.compute if s.scaled else Compute()
        saved = saved_per_sample(s.teacher, shape, compute, weights=weights_of(s.teacher))
        batch = min(synthesis_batch(s.cfg.synth_batch, saved), s.cfg.samples + s.cfg.holdout)
        loop = None if s.multihead else synthesis_loop(s.method, s.teacher, s.cfg, batch, compute)
        s.probe = probe(s.teacher, shape, batch, compute, saved, loop)
        if flow == "quantize":
            onnx_probe(s.probe, shipped_module(s.teacher), shape, s.threads, s.run.out, s.cfg.calib,
                       s.cfg.onnx_model)
        if s.recipe is not None and flow == "convert":
            net = build_from_recipe(s.recipe)
            student = student_probe(net.to(s.compute.torch_device), shape, s.cfg, s.compute)
            onnx_probe(student, build_from_recipe(s.recipe).eval(), shape, s.threads, s.run.out, s.cfg.calib)
    else:
        s.probe = Probe.from_dict(recorded["probe"])
        student = Probe.from_dict(recorded["student_probe"]) if recorded.get("student_probe") else None
    rows = len(s.eval_xy[0]) if s.eval_xy is not None else 0
    twice = s.uses_vkd and s.cfg.compare_kd

    def planned(cfg) -> dict:
        return plan(cfg, flow, s.method, s.probe, student, rows, twice)

    budget, limit = None, budget_seconds(s.cfg.time_budget)
    if limit is not None:  # the time already spent counts: a resumed run's recorded figure, else this run's
        spent = recorded.get("spent_before_s") if not fresh else time.perf_counter() - s.t_all
        budget = fit_budget(s.cfg, flow, limit, spent or 0.0, lambda c: planned(c)["total_s"])
        budget["spent_before_s"] = round(spent or 0.0, 1)
    s.plan = {**planned(s.cfg), "probe": s.probe.to_dict(), "student_probe": student.to_dict() if student else None,
              "teachers": teachers, "budget": budget, "spent_before_s": budget["spent_before_s"] if budget else None}
    s.run.manifest["plan"] = s.plan
    if fresh:
        for line in (budget_lines(budget) if budget else []) + plan_lines(s.plan, s.probe):
            s.run.progress.message(line)

