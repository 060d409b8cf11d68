"""build: the TensorRT targets' artifacts (dfkd_edge.backends.tensorrt.artifacts) from the run's fp32 ONNX,
calibrated on the transfer set and checked on its held-out samples. Engines are built on the device
(TensorRT engines are not portable)."""

from __future__ import annotations

from dfkd_edge.backends.tensorrt.artifacts import write_tensorrt_artifacts
from dfkd_edge.export.quantize import calibration_subset
from dfkd_edge.runfiles import TRANSFER_SET
from dfkd_edge.runner import Stage
from dfkd_edge.stages.calibrate import calib_params
from dfkd_edge.stages.common import deadline
from dfkd_edge.targets import load_profile


def tensorrt_profiles(cfg) -> list:
    return [p for p in (load_profile(t) for t in cfg.targets) if p.engine == "tensorrt"]


class Build(Stage):
    name, command = "build", "build"

    def applies(self, s) -> bool:
        return bool(tensorrt_profiles(s.cfg))

    def params(self, s) -> dict:
        return {"targets": [p.to_dict() for p in tensorrt_profiles(s.cfg)], "calib": calib_params(s.cfg)}

    def reads(self, s) -> list[str]:
        return [s.files.onnx_fp32, TRANSFER_SET]

    def external(self, s) -> list[str]:
        return [p.path for p in tensorrt_profiles(s.cfg) if p.path.endswith(".toml")]

    def writes(self, s) -> list[str]:
        return s.built

    def run(self, s) -> None:
        calib_x = calibration_subset(s.x_train, s.cfg.calib.samples, s.cfg.seed)
        s.built = write_tensorrt_artifacts(s.run.out, tensorrt_profiles(s.cfg), s.spec.input_shape, calib_x,
                                           s.x_hold, s.cfg.calib, s.threads, s.files, deadline(s))
