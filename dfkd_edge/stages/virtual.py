"""virtual (--distill vkd | kd+vkd): the class-conditional generator of the teacher's softened
outputs (VKD, Kim 2022), trained on the transfer set's stored logits. ``virtual-set`` (with
``--vkd-transfer virtual``): the student's inputs, synthesized so that the teacher's outputs match
the generator's draws (dfkd_edge.synthesis.virtual_target), streamed to disk with per-batch
checkpoints under .partial/ like the transfer set."""

from __future__ import annotations

import shutil
import time

from dfkd_edge.distill.vkd import (fit_virtual_generator, generator_fidelity, load_virtual_generator,
                                   save_virtual_generator)
from dfkd_edge.io import atomic_write_json
from dfkd_edge.runfiles import PARTIAL, TEACHER_JSON, TRANSFER_SET, VIRTUAL_JSON, VIRTUAL_PT, VIRTUAL_SET
from dfkd_edge.runner import Stage
from dfkd_edge.stages.common import scale_key, seed_all
from dfkd_edge.transfer_store import TransferSetFile
from dfkd_edge.synthesis.virtual_target import VirtualTargetSynthesizer


class Virtual(Stage):
    name, command = "virtual", "distill"

    def applies(self, s) -> bool:
        return s.uses_vkd

    def params(self, s) -> dict:
        vkd = s.cfg.vkd.to_dict()
        vkd.pop("transfer")  # the student's inputs, not the generator's
        return {"vkd": vkd}

    def reads(self, s) -> list[str]:
        return [TRANSFER_SET]

    def writes(self, s) -> list[str]:
        return [VIRTUAL_PT, VIRTUAL_JSON]

    def run(self, s) -> None:
        t0 = time.perf_counter()
        cfg = s.cfg
        seed_all(cfg.seed)
        # the stored logits; the teacher runs only with cfg.vkd.mixup > 0 (mixed pairs, Python API)
        vk = fit_virtual_generator(s.l_train, cfg.vkd, progress=s.run.progress, x=s.x_train, teacher=s.teacher)
        save_virtual_generator(s.run.path(VIRTUAL_PT), vk.generator)
        fid = generator_fidelity(vk.generator, s.l_hold, s.l_train, seed=cfg.seed)
        atomic_write_json(s.run.path(VIRTUAL_JSON), {"config": cfg.vkd.to_dict(), "fidelity": fid,
                                                     "seconds": round(time.perf_counter() - t0, 3)})


class VirtualSet(Stage):
    name, command = "virtual-set", "distill"

    def applies(self, s) -> bool:
        return s.uses_vkd and s.cfg.vkd.transfer == "virtual"

    def params(self, s) -> dict:
        c = s.cfg
        return {"samples": c.samples, "batch": c.synth_batch, "iterations": c.iterations, "seed": c.seed,
                "start": c.synth_start, "domain": s.teacher.domain.to_dict(), **scale_key(s)}

    def reads(self, s) -> list[str]:
        return [VIRTUAL_PT, TEACHER_JSON]

    def external(self, s) -> list[str]:
        return s.cfg.teacher_paths

    def writes(self, s) -> list[str]:
        return [VIRTUAL_SET]

    def run(self, s) -> None:
        cfg, run = s.cfg, s.run
        seed_all(cfg.seed)
        synth = VirtualTargetSynthesizer(s.teacher, load_virtual_generator(run.path(VIRTUAL_PT)),
                                         batch_size=cfg.synth_batch, seed=cfg.seed, iterations=cfg.iterations,
                                         start=cfg.synth_start)
        synth.synthesize(cfg.samples, progress=run.progress, compute=s.compute,
                         checkpoint_dir=run.path(PARTIAL) / f"{self.name}-{s.stage_key[:16]}",
                         out_path=run.path(VIRTUAL_SET))

    def load(self, s) -> None:
        for d in s.run.path(PARTIAL).glob(f"{self.name}-*"):  # recorded: its batches are garbage
            shutil.rmtree(d, ignore_errors=True)
        s.virtual_set = TransferSetFile(s.run.path(VIRTUAL_SET))
