"""evaluate: the student's quality: fidelity to the teacher on held-out synthetic samples (fp32 and
int8 ONNX), accuracy on --eval-data when given, the distillation summary and the data-free verdict
(dfkd_edge.quality). Runs every time: it is cheap, and eval data lives outside the run directory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from dfkd_edge.backends import predict
from dfkd_edge.backends.onnxruntime import OrtRunner
from dfkd_edge.distill.vkd import load_virtual_generator
from dfkd_edge.models.students import build_from_recipe, count_params
from dfkd_edge.plan import below_floors_reason
from dfkd_edge.quality import assess, at_least_doubtful, module_logits
from dfkd_edge.runner import Stage
from dfkd_edge.stages.common import calibration_check_reason, load_student
from dfkd_edge.runfiles import (KD_BASELINE_PT, ONNX_FP32, ONNX_INT8, STUDENT_JSON, TRANSFER_SET,
                                VIRTUAL_JSON, VIRTUAL_PT, VIRTUAL_SET)
from dfkd_edge.transfer_store import TransferSetFile


class Evaluate(Stage):
    name, command, always, record = "evaluate", "report", True, False

    def run(self, s) -> None:
        cfg, run = s.cfg, s.run
        s.student = load_student(run.out)
        s.student_doc = json.loads(run.path(STUDENT_JSON).read_text())
        quality = evaluate(s.teacher, run.path(ONNX_FP32), run.path(ONNX_INT8), s.x_hold, s.l_hold, s.eval_xy,
                           s.threads)
        quality["accuracy"]["dataset"] = (cfg.eval_name or Path(cfg.eval_data).name) if cfg.eval_data else None
        baseline = kd_baseline(run, s.student_doc) if s.uses_vkd else None  # read once: comparison and verdict
        s.distillation = distillation_summary(run, s.student, s.x_hold, s.l_hold, s.eval_xy, s.uses_vkd,
                                              s.method if s.synth.needs_student else None, baseline)
        quality["quality"] = at_least_doubtful(
            assess(s.teacher, s.student, np.asarray(s.l_train), s.x_hold, s.l_hold, quality["fidelity"],
                   s.teacher.domain, cfg.seed, baseline),
            below_floors_reason((run.manifest.get("plan") or {}).get("budget")), calibration_check_reason(run))
        s.quality = quality
        s.multi_teacher = (multi_teacher_summary(s.teacher, s.student, s.x_hold, s.l_hold, s.eval_xy, s.aggregation)
                           if s.multi else None)


def multi_teacher_summary(ensemble, student, x_hold: np.ndarray, l_hold: np.ndarray, eval_xy,
                          aggregation: dict | None) -> dict:
    """report.json's ``multi_teacher``: each teacher, the ensemble and the student (accuracy on eval
    data; fidelity = top-1 agreement on held-out synthetic samples). A CDFKD-MFS student adds each
    header (fidelity to its own teacher) and its aggregations (mean, and attention when trained); a
    student distilled from the ensemble has no headers (``headers`` empty, ``student``). PyTorch fp32."""
    def acc(logits, y):
        return float((logits.argmax(1).numpy() == y).mean())

    xh = torch.from_numpy(x_hold)
    xe = torch.from_numpy(eval_xy[0]) if eval_xy is not None else None
    with torch.no_grad():
        t_hold = [t.logits(xh) for t in ensemble.members]
        t_eval = [t.logits(xe) for t in ensemble.members] if xe is not None else None
        doc = {"aggregation": aggregation, "teachers": [], "headers": []}
        for i, t in enumerate(ensemble.members):
            doc["teachers"].append({"path": t.spec.path, "num_params": t.spec.num_params,
                                    "accuracy": acc(t_eval[i], eval_xy[1]) if xe is not None else None,
                                    "agreement_with_ensemble": acc(t_hold[i], l_hold.argmax(1))})
        # the ensemble's logits are the mean of its members' (Ensemble.logits): no second pass over them
        doc["ensemble"] = {"accuracy": acc(torch.stack(t_eval).mean(0), eval_xy[1]) if xe is not None else None}
        if not hasattr(student, "header_outputs"):  # one student distilled from the ensemble
            doc["student"] = {"accuracy": acc(module_logits(student, xe), eval_xy[1]) if xe is not None else None,
                              "fidelity": acc(module_logits(student, xh), l_hold.argmax(1))}
            return doc
        h_hold = student.header_outputs(xh)[0]
        h_eval = student.header_outputs(xe)[0] if xe is not None else None
        for i, t in enumerate(ensemble.members):
            doc["headers"].append({"header": i, "teacher": t.spec.path,
                                   "accuracy": acc(h_eval[i], eval_xy[1]) if xe is not None else None,
                                   "fidelity_to_its_teacher": acc(h_hold[i], t_hold[i].argmax(1).numpy())})
        mean_hold = torch.stack(h_hold).mean(0)
        doc["student_mean"] = {"accuracy": acc(torch.stack(h_eval).mean(0), eval_xy[1]) if xe is not None else None,
                               "fidelity": acc(mean_hold, l_hold.argmax(1))}
        if student.attention is not None:  # the headers' outputs above, aggregated: no second forward
            doc["student_attention"] = {
                "accuracy": acc(student.aggregate(h_eval), eval_xy[1]) if xe is not None else None,
                "fidelity": acc(student.aggregate(h_hold), l_hold.argmax(1))}
    return doc


def _torch_quality(model: torch.nn.Module, x_hold: np.ndarray, l_hold: np.ndarray, eval_xy) -> dict:
    """fp32 PyTorch figures of one student: accuracy on eval data (or None), fidelity on held-out."""
    fid = float((module_logits(model, torch.from_numpy(x_hold)).argmax(1).numpy() == l_hold.argmax(1)).mean())
    acc = None
    if eval_xy is not None:
        acc = float((module_logits(model, torch.from_numpy(eval_xy[0])).argmax(1).numpy() == eval_xy[1]).mean())
    return {"accuracy": acc, "fidelity": fid}


def kd_baseline(run, recipe: dict) -> torch.nn.Module | None:
    """The plain-KD student trained beside a VKD one for comparison; None when there is none."""
    if not run.path(KD_BASELINE_PT).is_file():
        return None
    baseline = build_from_recipe(recipe)
    baseline.load_state_dict(torch.load(run.path(KD_BASELINE_PT), map_location="cpu", weights_only=True))
    return baseline.eval()


def distillation_summary(run, student: torch.nn.Module, x_hold: np.ndarray, l_hold: np.ndarray,
                         eval_xy, uses_vkd: bool, trained_by: str | None,
                         baseline: torch.nn.Module | None = None) -> dict:
    """report.json's ``distillation``: the mode, the soft-target sources' weights, the virtual
    generator's fidelity and, with VKD, the student next to ``baseline`` (plain KD from the same transfer set)."""
    kd = run.cfg.kd
    if trained_by:  # adversarial: the student was trained during synthesis
        return {"mode": f"{trained_by} (during synthesis)", "weights": None, "teacher_run_during_training": True,
                "virtual_generator": None, "comparison": None}
    weights = {"kd": {"kd": 1.0, "vkd": 0.0}, "vkd": {"kd": 0.0, "vkd": 1.0},
               "kd+vkd": {"kd": 1 - kd.vkd_weight, "vkd": kd.vkd_weight}}[kd.mode]
    doc = {"mode": kd.mode, "weights": weights, "temperature": kd.temperature,
           "teacher_run_during_training": kd.mode != "vkd" and kd.mixup > 0, "virtual_generator": None,
           "comparison": None}
    if uses_vkd:
        vdoc = json.loads(run.path(VIRTUAL_JSON).read_text())
        doc["virtual_generator"] = {"file": VIRTUAL_PT, "fidelity": vdoc["fidelity"], "config": vdoc["config"],
                                    "parameters": count_params(load_virtual_generator(run.path(VIRTUAL_PT))),
                                    "size_bytes": run.path(VIRTUAL_PT).stat().st_size}
        doc["inputs"] = _inputs(run)
        if baseline is not None:
            doc["comparison"] = {"measured_with": "PyTorch fp32, same student and seed; plain KD from the transfer set",
                                 kd.mode: _torch_quality(student, x_hold, l_hold, eval_xy),
                                 "kd": {**_torch_quality(baseline, x_hold, l_hold, eval_xy),
                                        "file": KD_BASELINE_PT}}
    return doc


def _inputs(run) -> dict:
    """Where the VKD student's inputs came from."""
    if run.cfg.vkd.transfer == "virtual":
        return {"file": VIRTUAL_SET, "samples": len(TransferSetFile(run.path(VIRTUAL_SET))),
                "made_for": "the virtual generator's targets"}
    return {"file": TRANSFER_SET, "samples": len(TransferSetFile(run.path(TRANSFER_SET)).train_idx),
            "made_for": "the transfer set the generator learned from"}


def evaluate(teacher, fp32: Path, int8: Path, x_hold: np.ndarray, l_hold: np.ndarray, eval_xy,
             threads: int) -> dict:
    top1 = l_hold.argmax(1)
    with OrtRunner(fp32, threads) as r32, OrtRunner(int8, threads, "int8") as r8:
        fid = {"student_fp32": float((predict(r32, x_hold).argmax(1) == top1).mean()),
               "student_int8": float((predict(r8, x_hold).argmax(1) == top1).mean()),
               "samples": int(len(x_hold))}
        acc = {"dataset": None, "teacher": None, "student_fp32": None, "student_int8": None}
        if eval_xy is not None:
            x, y = eval_xy
            acc.update(teacher=float((teacher.logits(torch.from_numpy(x)).numpy().argmax(1) == y).mean()),
                       student_fp32=float((predict(r32, x).argmax(1) == y).mean()),
                       student_int8=float((predict(r8, x).argmax(1) == y).mean()), samples=int(len(y)))
    return {"accuracy": acc, "fidelity": fid}
