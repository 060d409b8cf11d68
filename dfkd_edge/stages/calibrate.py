"""calibrate: int8 ONNX for ONNX Runtime from synthesized calibration samples, in the format
measured fastest, with the guardrail that leaves sensitive layers in float (dfkd_edge.export.quantize).
The one calibration of both flows: convert's student and quantize's model (``s.files``)."""

from __future__ import annotations

from dataclasses import asdict

from dfkd_edge.export.quantize import calibrate, calibration_subset
from dfkd_edge.io import atomic_write_json
from dfkd_edge.runner import Stage
from dfkd_edge.stages.common import deadline
from dfkd_edge.runfiles import CALIBRATION_JSON, TRANSFER_SET


def calib_params(cfg) -> dict:
    """The calibration options that change its result (threads do not)."""
    d = {k: v for k, v in asdict(cfg.calib).items() if k != "threads"}
    return {**d, "formats": list(cfg.calib.formats)}


class Calibrate(Stage):
    name, command = "calibrate", "calibrate"

    def params(self, s) -> dict:
        return calib_params(s.cfg)

    def reads(self, s) -> list[str]:
        return [s.files.onnx_fp32, TRANSFER_SET]

    def writes(self, s) -> list[str]:
        return [s.files.onnx_int8, CALIBRATION_JSON]

    def run(self, s) -> None:
        cfg = s.cfg
        calib_x = calibration_subset(s.x_train, cfg.calib.samples, cfg.seed)
        calib = calibrate(s.run.path(s.files.onnx_fp32), s.run.path(s.files.onnx_int8), calib_x, s.x_hold, s.l_hold, cfg.calib,
                          progress=s.run.progress, deadline=deadline(s))
        atomic_write_json(s.run.path(CALIBRATION_JSON), calib)
