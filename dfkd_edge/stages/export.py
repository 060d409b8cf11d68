"""export: the student (convert) or the user's own model (quantize) as fp32 ONNX, checked against
PyTorch on held-out synthetic samples and on noise drawn from the input domain (parity.json)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import torch

from dfkd_edge.export.onnx_export import OPSET, PARITY_EACH, check_parity, export_onnx
from dfkd_edge.io import atomic_path, atomic_write_json
from dfkd_edge.runner import Stage
from dfkd_edge.stages.common import load_student
from dfkd_edge.errors import PipelineError, UserError
from dfkd_edge.runfiles import ONNX_FP32, PARITY_JSON, STUDENT_JSON, STUDENT_PT, TEACHER_JSON, TRANSFER_SET


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
        atomic_write_json(s.run.path(PARITY_JSON), check_parity(student, s.run.path(ONNX_FP32), parity_inputs(s)))


def parity_inputs(s) -> np.ndarray:
    """``PARITY_EACH`` held-out synthetic samples and as many draws of the input domain's noise."""
    noise = s.teacher.domain.draw(PARITY_EACH, s.spec.input_shape, torch.Generator().manual_seed(s.cfg.seed)).numpy()
    return np.concatenate([s.x_hold[:PARITY_EACH], noise.astype(np.float32)])


class ExportModel(Stage):
    """quantize: the user's own model as fp32 ONNX, with the same parity check; an ONNX MODEL (with its
    PyTorch ``--source``) is taken as it is and checked against the source."""

    name, command = "export", "quantize"

    def params(self, s) -> dict:
        return {"opset": OPSET}

    def reads(self, s) -> list[str]:
        return [TEACHER_JSON, TRANSFER_SET]

    def external(self, s) -> list[str]:
        return [s.cfg.teacher] + ([s.cfg.onnx_model] if s.cfg.onnx_model else [])

    def writes(self, s) -> list[str]:
        return [s.files.onnx_fp32, PARITY_JSON]

    def run(self, s) -> None:
        model, path = shipped_module(s.teacher), s.run.path(s.files.onnx_fp32)
        if s.cfg.onnx_model:  # the user's own graph, as it is: the PyTorch source only synthesized for it
            with atomic_path(path) as tmp:
                shutil.copyfile(s.cfg.onnx_model, tmp)
            try:
                parity = check_parity(model, path, parity_inputs(s))
            except PipelineError as e:
                raise UserError(f"{Path(s.cfg.onnx_model).name} and --source {Path(s.cfg.teacher).name} do not compute "
                                f"the same logits ({e}); give the PyTorch network the ONNX file was exported from") from None
            atomic_write_json(s.run.path(PARITY_JSON), {**parity, "onnx_model": str(s.cfg.onnx_model)})
            return
        try:
            export_onnx(model, s.spec.input_shape, path)
        except Exception as e:  # the user's graph: an op or construct the ONNX exporter cannot take
            path.unlink(missing_ok=True)
            raise UserError(f"{s.spec.path} could not be exported to ONNX ({type(e).__name__}: "
                            f"{str(e).splitlines()[0] if str(e) else ''}); a model with a dynamic batch "
                            "dimension and standard layers exports (re-run with --debug for the traceback)") from e
        atomic_write_json(s.run.path(PARITY_JSON), check_parity(model, path, parity_inputs(s)))


def shipped_module(teacher) -> torch.nn.Module:
    """The user's model as they shipped it, without the taps this tool puts into a graph it inspects:
    a torch.export program is loaded again (the graph the teacher runs carries the taps)."""
    if teacher.spec.format == "exported-program":
        return torch.export.load(teacher.spec.path).module()
    return teacher.runtime
