"""virtual (--distill vkd | kd+vkd): the class-conditional generator of the teacher's softened
outputs (VKD, Kim 2022), trained on the transfer set's stored logits."""

from __future__ import annotations

import time

from dfkd_edge.distill.vkd import fit_virtual_generator, generator_fidelity, save_virtual_generator
from dfkd_edge.io import atomic_write_json
from dfkd_edge.runner import Stage
from dfkd_edge.stages.common import seed_all
from dfkd_edge.stages.files import TRANSFER_SET, VIRTUAL_JSON, VIRTUAL_PT


class Virtual(Stage):
    name, command = "virtual", "distill"

    def applies(self, s) -> bool:
        return s.uses_vkd

    def params(self, s) -> dict:
        return {"vkd": s.cfg.vkd.to_dict()}

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
