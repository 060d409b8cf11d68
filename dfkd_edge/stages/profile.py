"""profile: latency measured on the host (convert: the teacher in PyTorch, the student in PyTorch and
ONNX Runtime fp32/int8; quantize: the model in PyTorch and ONNX Runtime fp32/int8; batch 1 and 32,
interleaved) and estimated for every target it cannot reach (a roofline from the target's profile;
rows say ``estimated``)."""

from __future__ import annotations

import json

import numpy as np

from dfkd_edge.backends.onnxruntime import OrtRunner
from dfkd_edge.backends.torch_eager import TorchRunner
from dfkd_edge.io import atomic_write_json
from dfkd_edge.runner import Stage
from dfkd_edge.stages.common import load_student
from dfkd_edge.runfiles import LATENCY_JSON, STUDENT_PT, TEACHER_JSON
from dfkd_edge.targets import load_profile, measure_interleaved
from dfkd_edge.targets.estimate import estimate_rows


class Profile(Stage):
    name, command = "profile", "report"

    def params(self, s) -> dict:
        return {"threads": s.threads, "budget_s": s.cfg.latency_budget_s,
                "estimate": [p.to_dict() for p in s.profiles if not p.is_host]}

    def prepare(self, s) -> None:
        s.profiles = [load_profile(t) for t in s.cfg.targets]

    def reads(self, s) -> list[str]:
        shipped = [STUDENT_PT] if s.files.model == "student" else []
        return [TEACHER_JSON, *shipped, s.files.onnx_fp32, s.files.onnx_int8]

    def external(self, s) -> list[str]:
        return s.cfg.teacher_paths

    def writes(self, s) -> list[str]:
        return [LATENCY_JSON]

    def run(self, s) -> None:
        run = s.run
        fp32, int8 = run.path(s.files.onnx_fp32), run.path(s.files.onnx_int8)
        rows = [r.to_dict() for r in profile_host(host_runners(s, fp32, int8), s.spec.input_shape,
                                                  s.cfg.latency_budget_s, run.progress)]
        estimates = {}
        for p in s.profiles:
            if not p.is_host:
                est_rows, estimates[p.name] = estimate_rows(fp32, p, model=s.files.model)
                rows += est_rows
        atomic_write_json(run.path(LATENCY_JSON), {"rows": rows, "estimates": estimates})

    def load(self, s) -> None:
        doc = json.loads(s.run.path(LATENCY_JSON).read_text())
        s.rows, s.estimates = doc["rows"], doc["estimates"]


def host_runners(s, fp32, int8) -> list:
    """(row model, runner factory) of what the host times: the shipped model (``s.files.model``) in
    ONNX Runtime fp32 and int8, and in PyTorch (not an ONNX model alone: what runs it in PyTorch here is
    dfkd-edge's interpreter, not the user's network); convert adds its teacher in PyTorch."""
    teacher, threads, m = s.teacher, s.threads, s.files.model
    torch_row = (("teacher", lambda: TorchRunner(teacher.runtime, threads, backend=teacher.backend)),
                 ("student", lambda: TorchRunner(load_student(s.run.out), threads))) if m == "student" else (
                (m, lambda: TorchRunner(teacher.runtime, threads, backend=teacher.backend)),)
    if m != "student" and s.spec.format == "onnx":
        torch_row = ()
    return [*torch_row, (m, lambda: OrtRunner(fp32, threads, "fp32")), (m, lambda: OrtRunner(int8, threads, "int8"))]


def profile_host(runners: list, input_shape, budget_s: float, progress) -> list:
    rng = np.random.default_rng(0)
    rows = []
    with progress.task("latency (host)", total=2) as task:
        for batch in (1, 32):
            x = rng.standard_normal((batch, *input_shape)).astype(np.float32)
            rows += measure_interleaved([(model, make()) for model, make in runners], x,
                                        budget_s=budget_s * len(runners))
            task.advance(1)
    return rows
