"""synthesize: the transfer set from the teacher alone (dfkd_edge.synthesis), streamed to disk with
per-batch checkpoints under .partial/. Adversarial methods (and several teachers with CDFKD-MFS) train
the student here too: synthesis and KD interleave. Several teachers otherwise are inverted as their
ensemble (dfkd_edge.ensemble) like one teacher."""

from __future__ import annotations

import logging
import shutil

from dfkd_edge.compute import Compute
from dfkd_edge.errors import UserError
from dfkd_edge.models.students import build_from_recipe
from dfkd_edge.runfiles import HEADERS_JSON, HEADERS_PT, PARTIAL, STUDENT_JSON, STUDENT_PT, TEACHER_JSON, TRANSFER_SET
from dfkd_edge.runner import Stage
from dfkd_edge.stages.common import save_student, scale_key, seed_all
from dfkd_edge.synthesis import create_synthesizer
from dfkd_edge.synthesis.cdfkd_mfs import MultiTeacherConfig, MultiTeacherSynthesizer
from dfkd_edge.transfer_store import TransferSetFile

log = logging.getLogger(__name__)


class Synthesize(Stage):
    name, command, distributed = "synthesize", "synthesize", True

    def prepare(self, s) -> None:
        cfg = s.cfg
        s.synth_cfg = {"method": s.method, "samples": cfg.samples, "holdout": cfg.holdout, "batch": cfg.synth_batch,
                       "iterations": cfg.iterations, "seed": cfg.seed, "start": cfg.synth_start,
                       "jitter": cfg.synth_jitter, "bn_units": cfg.synth_bn_units, "domain": s.teacher.domain.to_dict()}
        seed_all(cfg.seed)
        s.synth = _synthesizer(s)
        if s.synth.needs_student and cfg.kd.mode != "kd":
            raise UserError(f"--distill {cfg.kd.mode} needs a transfer set to distill from, but --method {s.method} "
                            "trains the student during synthesis; use --method deepinversion or soft-target")
        s.scaled = not s.synth.needs_student  # runs on compute's device, data-parallel under torchrun
        s.uses_vkd = cfg.kd.mode != "kd" and not s.synth.needs_student
        if s.scaled:
            s.teacher.to(s.compute)
        elif s.compute.is_cuda:
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
            s.dist.command("synthesize", method=s.method, kwargs=_synth_kwargs(cfg), n=cfg.samples,
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


def _synthesizer(s):
    cfg = s.cfg
    if s.multihead:
        return MultiTeacherSynthesizer(s.teacher, MultiTeacherConfig(iterations=cfg.iterations,
                                                                     batch_size=cfg.synth_batch, seed=cfg.seed))
    return create_synthesizer(s.method, s.teacher, **_synth_kwargs(cfg))


def _synth_kwargs(cfg) -> dict:
    """A transfer-set method's options (the same on every rank: followers build theirs from these)."""
    return {"batch_size": cfg.synth_batch, "seed": cfg.seed, "iterations": cfg.iterations, "start": cfg.synth_start,
            "jitter": cfg.synth_jitter, "bn_units": cfg.synth_bn_units}
