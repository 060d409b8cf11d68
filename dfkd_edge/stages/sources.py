"""calibration-sources (quantize): the same model calibrated on other sources, side by side with the
synthesized set that ships: Gaussian N(0, 1) noise (what calibration tools fall back to without data)
and, with --calib-data, the user's real inputs. Each source goes through the same calibration and
guardrail in the format that shipped (so only the source differs); its int8 model is measured on the
same inputs as the shipped one and dropped."""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from dfkd_edge.backends import predict
from dfkd_edge.backends.onnxruntime import OrtRunner
from dfkd_edge.export.quantize import calibrate, calibration_subset
from dfkd_edge.io import atomic_write_json
from dfkd_edge.runner import Stage
from dfkd_edge.stages.common import deadline
from dfkd_edge.stages.calibrate import calib_params
from dfkd_edge.runfiles import CALIBRATION_JSON, CALIBRATION_SOURCES_JSON, TRANSFER_SET

#: where each source's samples come from, in words (report.json and the report)
SOURCES = {"synthetic": "synthesized from the model (what ships)",
           "gaussian": "Gaussian N(0, 1) noise (what calibration falls back to without data)",
           "real": "real inputs (--calib-data)"}


class CalibrationSources(Stage):
    name, command = "calibration-sources", "quantize"

    def params(self, s) -> dict:
        return calib_params(s.cfg)

    def reads(self, s) -> list[str]:
        return [s.files.onnx_fp32, s.files.onnx_int8, TRANSFER_SET, CALIBRATION_JSON]

    def external(self, s) -> list[str]:
        return [p for p in (s.cfg.calib_data, s.cfg.eval_data) if p]

    def writes(self, s) -> list[str]:
        return [CALIBRATION_SOURCES_JSON]

    def run(self, s) -> None:
        shipped = json.loads(s.run.path(CALIBRATION_JSON).read_text())
        check_x, check_name = check_set(s)
        fp32 = s.run.path(s.files.onnx_fp32)
        with OrtRunner(fp32, s.threads, "fp32") as r:
            fp32_logits = predict(r, check_x)
        measure = lambda source, path, rec: _measure(source, path, rec, check_x, fp32_logits, s)  # noqa: E731
        rows = [measure("synthetic", s.run.path(s.files.onnx_int8), shipped)]
        cfg = replace(s.cfg.calib, formats=(shipped["chosen_format"],))
        n = shipped["samples"]
        others = [("gaussian", np.random.default_rng(s.cfg.seed).standard_normal((n, *s.spec.input_shape)))]
        if s.calib_real is not None:
            others.append(("real", calibration_subset(s.calib_real, n, s.cfg.seed)))
        work = Path(tempfile.mkdtemp(prefix=".calib-sources-", dir=s.run.out))
        try:
            with s.run.progress.task("calibration sources", total=len(others)) as task:
                for source, x in others:
                    path = work / f"{source}.onnx"
                    rec = calibrate(fp32, path, np.asarray(x, np.float32), s.x_hold, s.l_hold, cfg,
                                    progress=s.run.progress, deadline=deadline(s))
                    rows.append(measure(source, path, rec))
                    task.advance(1)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        atomic_write_json(s.run.path(CALIBRATION_SOURCES_JSON),
                          {"agreement_measured_on": check_name, "format": shipped["chosen_format"], "sources": rows})

    def load(self, s) -> None:
        s.calibration_sources = json.loads(s.run.path(CALIBRATION_SOURCES_JSON).read_text())


def check_set(s) -> tuple[np.ndarray, str]:
    """The inputs every source's int8 model is compared with fp32 on: the eval inputs when given (real),
    else the held-out synthetic samples."""
    if s.eval_xy is not None:
        return s.eval_xy[0], f"the {len(s.eval_xy[0])} inputs of the eval data"
    return s.x_hold, f"{len(s.x_hold)} held-out synthetic samples"


def output_kl(p_logits: np.ndarray, q_logits: np.ndarray) -> float:
    """Mean KL(softmax(p) || softmax(q)) in nats: how far the int8 model's output distribution is from
    fp32's on the same inputs. Top-1 agreement is 100% on most models whatever the source; this still
    separates sources (on the zoo, synthetic calibration's is 1-3x real calibration's)."""
    import torch
    import torch.nn.functional as F

    log_p = F.log_softmax(torch.from_numpy(np.asarray(p_logits, np.float64)), 1)
    log_q = F.log_softmax(torch.from_numpy(np.asarray(q_logits, np.float64)), 1)
    return float(F.kl_div(log_q, log_p, log_target=True, reduction="batchmean"))


def _measure(source: str, path: Path, rec: dict, check_x: np.ndarray, fp32_logits: np.ndarray, s) -> dict:
    with OrtRunner(path, s.threads, "int8") as r:
        logits = predict(r, check_x)
    top1 = logits.argmax(1)
    # with eval data the check set is its inputs (check_set): the same predictions give the accuracy
    accuracy = None if s.eval_xy is None else float((top1 == s.eval_xy[1]).mean())
    guard = rec["guardrail"]
    return {"source": source, "from": SOURCES[source], "samples": rec["samples"], "format": rec["chosen_format"],
            "accuracy": accuracy, "agreement_with_fp32": float((top1 == fp32_logits.argmax(1)).mean()),
            "output_kl_to_fp32": round(output_kl(fp32_logits, logits), 6),
            "float_layers": list(guard.get("excluded", [])), "guardrail_held": bool(guard.get("held", True))}
