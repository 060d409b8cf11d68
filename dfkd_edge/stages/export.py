"""export: the student as fp32 ONNX, checked against PyTorch on held-out synthetic samples and on
noise drawn from the teacher's input domain (parity.json)."""

from __future__ import annotations

import numpy as np
import torch

from dfkd_edge.export.onnx_export import OPSET, check_parity, export_onnx
from dfkd_edge.io import atomic_write_json
from dfkd_edge.runner import Stage
from dfkd_edge.stages.common import load_student
from dfkd_edge.stages.files import ONNX_FP32, PARITY_JSON, STUDENT_JSON, STUDENT_PT, TRANSFER_SET


class Export(Stage):
    name, command = "export", "export"

    def params(self, s) -> dict:
        return {"opset": OPSET}

    def reads(self, s) -> list[str]:
        return [STUDENT_PT, STUDENT_JSON, TRANSFER_SET]

    def writes(self, s) -> list[str]:
        return [ONNX_FP32, PARITY_JSON]

    def run(self, s) -> None:
        student = load_student(s.run.out)
        export_onnx(student, s.spec.input_shape, s.run.path(ONNX_FP32))
        noise = s.teacher.domain.draw(64, s.spec.input_shape, torch.Generator().manual_seed(s.cfg.seed)).numpy()
        parity_x = np.concatenate([s.x_hold[:64], noise.astype(np.float32)])
        atomic_write_json(s.run.path(PARITY_JSON), check_parity(student, s.run.path(ONNX_FP32), parity_x))
