"""Small helpers the stages share."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from dfkd_edge.io import atomic_path, atomic_write_json
from dfkd_edge.models.students import build_from_recipe, count_params
from dfkd_edge.quality import unresolved_check_reason
from dfkd_edge.runfiles import CALIBRATION_JSON, STUDENT_JSON, STUDENT_PT


def seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def scale_key(s) -> dict:
    """What of the scale-out changes a stage's result: the rank count (each rank has its own random
    stream) and the arithmetic (device kind, precision)."""
    return {"world_size": s.dist.world, "device": s.compute.torch_device.type, "precision": s.compute.precision}


def deadline(s) -> float | None:
    """The ``time.perf_counter()`` time by which the run's ``--time-budget`` is spent (the run's start plus the
    budget, less what the finished stages a resumed run skipped took the first time); None without a budget."""
    budget = (s.plan or {}).get("budget")
    if not budget:
        return None
    before = sum(st.get("seconds", 0.0) for st in s.run.manifest["stages"].values() if st.get("resumed"))
    return s.t_all + budget["budget_s"] - before


def save_student(run, student: torch.nn.Module, recipe: dict, history: dict, pt: str = STUDENT_PT,
                 js: str = STUDENT_JSON) -> None:
    with atomic_path(run.path(pt)) as tmp:
        torch.save(student.state_dict(), tmp)
    atomic_write_json(run.path(js), {**recipe, "num_params": count_params(student),
                                     "final_kd_loss": history["loss"][-1]})


def load_student(out: Path) -> torch.nn.Module:
    recipe = json.loads((Path(out) / STUDENT_JSON).read_text())
    student = build_from_recipe(recipe)
    student.load_state_dict(torch.load(Path(out) / STUDENT_PT, map_location="cpu", weights_only=True))
    return student.eval()


def calibration_check_reason(run) -> str | None:
    """``unresolved_check_reason`` of the run's calibration record, where there is one."""
    path = run.path(CALIBRATION_JSON)
    return unresolved_check_reason(json.loads(path.read_text())) if path.exists() else None
