"""distill: the student from the transfer set (dfkd_edge.distill): KD from the teacher, VKD from the
virtual generator, or both (with --vkd-transfer virtual, on the set synthesized for the generator's
targets, ``virtual-set``). Checkpointed every epoch under .partial/ (single process), so a
resumed run continues where it stopped. ``distill-kd-baseline``: with vkd, plain KD of the same
student from the transfer set, for the report's comparison."""

from __future__ import annotations

import shutil
from dataclasses import asdict

import torch

from dfkd_edge.distill import KDConfig, distill
from dfkd_edge.distill.vkd import load_virtual_generator
from dfkd_edge.io import atomic_path
from dfkd_edge.models.students import build_from_recipe
from dfkd_edge.plan import distill_micro_batch
from dfkd_edge.runner import Stage
from dfkd_edge.stages.common import save_student, scale_key, seed_all
from dfkd_edge.runfiles import (KD_BASELINE_PT, PARTIAL, STUDENT_JSON, STUDENT_PT, TRANSFER_SET, VIRTUAL_PT,
                                    VIRTUAL_SET)


class Distill(Stage):
    name, command, distributed = "distill", "distill", True

    def applies(self, s) -> bool:
        return not s.synth.needs_student

    def kd(self, s) -> KDConfig:
        return s.cfg.kd

    def virtual(self, s) -> str | None:
        return VIRTUAL_PT if s.uses_vkd else None

    def inputs(self, s) -> str:
        """The file the student's inputs (and stored logits) come from."""
        return VIRTUAL_SET if self.virtual(s) and s.cfg.vkd.transfer == "virtual" else TRANSFER_SET

    def params(self, s) -> dict:
        return {"kd": self.kd(s).to_dict(), "student": s.recipe, **scale_key(s)}

    def reads(self, s) -> list[str]:
        return list(dict.fromkeys([TRANSFER_SET, self.inputs(s)] + ([VIRTUAL_PT] if self.virtual(s) else [])))

    def external(self, s) -> list[str]:
        return s.cfg.teacher_paths

    def writes(self, s) -> list[str]:
        return [STUDENT_PT, STUDENT_JSON]

    def run(self, s) -> None:
        seed_all(s.cfg.seed)
        student = build_from_recipe(s.recipe)
        history = distill_everywhere(s, student, self.kd(s), self.virtual(s), self._checkpoints(s), self.inputs(s))
        self.save(s, student, history)

    def save(self, s, student, history: dict) -> None:
        save_student(s.run, student, s.recipe, history)

    def _checkpoints(self, s):
        return s.run.path(PARTIAL) / f"{self.name}-{s.stage_key[:16]}"

    def load(self, s) -> None:
        for d in s.run.path(PARTIAL).glob(f"{self.name}-*"):  # this stage's epochs: the result is recorded
            shutil.rmtree(d, ignore_errors=True)


class DistillKDBaseline(Distill):
    name = "distill-kd-baseline"

    def applies(self, s) -> bool:
        return s.uses_vkd and s.cfg.compare_kd

    def kd(self, s) -> KDConfig:
        return KDConfig(**{**asdict(s.cfg.kd), "mode": "kd"})

    def virtual(self, s) -> str | None:
        return None

    def writes(self, s) -> list[str]:
        return [KD_BASELINE_PT]

    def save(self, s, student, history: dict) -> None:
        with atomic_path(s.run.path(KD_BASELINE_PT)) as tmp:
            torch.save(student.state_dict(), tmp)


def distill_everywhere(s, student, kd: KDConfig, virtual_file: str | None, checkpoints,
                       inputs: str = TRANSFER_SET) -> dict:
    """distill() on this rank and, under torchrun, on every follower (DDP): they are sent the recipe,
    the config, the virtual generator's file and, once, the training rows (of ``inputs``)."""
    run, dist = s.run, s.dist
    virtual = load_virtual_generator(run.path(virtual_file)) if virtual_file else None
    micro = distill_micro_batch(student, s.spec.input_shape, kd.batch_size)
    with dist.collective():
        x, logits = (s.x_train, s.l_train) if inputs == TRANSFER_SET else s.virtual_set.train
        if dist.enabled:
            dist.command("distill", recipe=s.recipe, kd=kd.to_dict(), micro=micro,
                         virtual=run.path(virtual_file).read_bytes() if virtual_file else None)
            x, logits = dist.share_rows(x, logits, run.digest(inputs), None)
        return distill(student, x, logits, kd, teacher=None if kd.mode == "vkd" else s.teacher,
                       progress=run.progress, virtual=virtual, dist=dist, compute=s.compute,
                       checkpoint_dir=None if dist.enabled else checkpoints, micro_batch=micro)
