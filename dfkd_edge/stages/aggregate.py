"""aggregate (several teachers, CDFKD-MFS): the final student from the multi-header one, with the mean of its
headers or with attention trained on the few labelled samples (--few-shot-data), the rest frozen."""

from __future__ import annotations

import json

import torch

from dfkd_edge.distill.multi import train_attention
from dfkd_edge.errors import PipelineError
from dfkd_edge.io import atomic_write_json
from dfkd_edge.models.students import build_from_recipe
from dfkd_edge.runfiles import AGGREGATION_JSON, HEADERS_JSON, HEADERS_PT, STUDENT_JSON, STUDENT_PT
from dfkd_edge.runner import Stage
from dfkd_edge.stages.common import save_student


class Aggregate(Stage):
    name, command = "aggregate", "distill"

    def applies(self, s) -> bool:
        return s.multihead

    def params(self, s) -> dict:
        return {"few_shot": bool(s.few_shot)}

    def reads(self, s) -> list[str]:
        return [HEADERS_PT, HEADERS_JSON]

    def external(self, s) -> list[str]:
        return [s.cfg.few_shot_data] if s.cfg.few_shot_data else []

    def writes(self, s) -> list[str]:
        return [STUDENT_PT, STUDENT_JSON, AGGREGATION_JSON]

    def run(self, s) -> None:
        atomic_write_json(s.run.path(AGGREGATION_JSON), aggregate_headers(s.run, s.few_shot, s.cfg.seed))

    def load(self, s) -> None:
        s.aggregation = json.loads(s.run.path(AGGREGATION_JSON).read_text())


def aggregate_headers(run, few_shot, seed: int) -> dict:
    """Writes the final student (student.pt/.json): the multi-header student with the mean of its
    headers, or with attention trained on ``few_shot`` (x, y), the rest frozen."""
    recipe = {k: v for k, v in json.loads(run.path(HEADERS_JSON).read_text()).items()
              if k not in ("num_params", "final_kd_loss")}
    state = torch.load(run.path(HEADERS_PT), map_location="cpu", weights_only=True)
    if few_shot is None:
        student = build_from_recipe(recipe)
        student.load_state_dict(state)
        save_student(run, student, recipe, {"loss": [None]})
        return {"method": "mean", "headers": recipe["headers"]}
    recipe["aggregation"] = "attention"
    student = build_from_recipe(recipe)
    missing, unexpected = student.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("attention.") for k in missing):
        raise PipelineError(f"the multi-header student's weights do not fit its recipe ({missing}, {unexpected})")
    result = train_attention(student, few_shot[0], few_shot[1], seed=seed)
    save_student(run, student, recipe, {"loss": [result["loss"][-1]]})
    return {"method": "attention", "headers": recipe["headers"], "few_shot_data": run.cfg.few_shot_data,
            "samples": result["samples"], "epochs": result["epochs"], "final_loss": result["loss"][-1],
            **{k: result[k] for k in ("checked", "kept", "held_out_nll_attention", "held_out_nll_mean") if k in result},
            "few_shot_accuracy": {"mean": result["accuracy_mean"], "attention": result["accuracy_attention"]}}
