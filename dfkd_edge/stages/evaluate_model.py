"""evaluate (quantize): the int8 model against the model itself: top-1 agreement of the ONNX fp32 and
int8 models with the PyTorch model on held-out synthetic samples (and on the eval inputs), accuracy on
--eval-data when given, and the data-free verdict on the calibration (dfkd_edge.quality). Runs every
time: it is cheap, and eval data lives outside the run directory."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from dfkd_edge.backends import predict
from dfkd_edge.backends.onnxruntime import OrtRunner
from dfkd_edge.export.quantize import weighted_agreement
from dfkd_edge.quality import assess_calibration, at_least_doubtful
from dfkd_edge.stages.common import calibration_check_reason
from dfkd_edge.runner import Stage


class EvaluateModel(Stage):
    name, command, always, record = "evaluate", "quantize", True, False

    def run(self, s) -> None:
        cfg = s.cfg
        doc = evaluate_model(s.teacher, s.run.path(s.files.onnx_fp32), s.run.path(s.files.onnx_int8), s.x_hold,
                             s.l_hold, s.eval_xy, s.threads)
        doc["accuracy"]["dataset"] = (cfg.eval_name or Path(cfg.eval_data).name) if cfg.eval_data else None
        doc["quality"] = at_least_doubtful(
            assess_calibration(s.teacher, np.asarray(s.l_train), s.x_hold, doc["fidelity"],
                               doc["fidelity"].get("model_int8_eval_inputs_weighted"), s.teacher.domain,
                               cfg.calib.min_agreement),
            None if cfg.eval_data else calibration_check_reason(s.run))
        s.quality = doc


def evaluate_model(model, fp32: Path, int8: Path, x_hold: np.ndarray, l_hold: np.ndarray, eval_xy,
                   threads: int) -> dict:
    """``accuracy`` {dataset, model, model_fp32, model_int8} (PyTorch, ONNX fp32 and int8 on the eval
    data, or None) and ``fidelity``: top-1 agreement of the ONNX models with the PyTorch model on the
    held-out synthetic samples, and weighted by the model's probabilities (``*_weighted``: the measure the int8
    guardrail holds, dfkd_edge.export.quantize.weighted_agreement; ``model_int8_eval_inputs``: top-1 agreement on
    the eval inputs, labels not needed, and ``_weighted`` the same there)."""
    top1 = l_hold.argmax(1)
    with OrtRunner(fp32, threads) as r32, OrtRunner(int8, threads, "int8") as r8:
        p32, p8 = predict(r32, x_hold).argmax(1), predict(r8, x_hold).argmax(1)
        fid = {"model_fp32": float((p32 == top1).mean()), "model_int8": float((p8 == top1).mean()),
               "model_fp32_weighted": weighted_agreement(l_hold, p32),
               "model_int8_weighted": weighted_agreement(l_hold, p8),
               "model_int8_eval_inputs": None, "samples": int(len(x_hold))}
        acc = {"dataset": None, "model": None, "model_fp32": None, "model_int8": None}
        if eval_xy is not None:
            x, y = eval_xy
            ref = model.logits(torch.from_numpy(x)).numpy()
            p32, p8 = predict(r32, x).argmax(1), predict(r8, x).argmax(1)
            acc.update(model=float((ref.argmax(1) == y).mean()), model_fp32=float((p32 == y).mean()),
                       model_int8=float((p8 == y).mean()), samples=int(len(y)))
            fid["model_int8_eval_inputs"] = float((p8 == ref.argmax(1)).mean())
            fid["model_int8_eval_inputs_weighted"] = weighted_agreement(ref, p8)
    return {"accuracy": acc, "fidelity": fid}
