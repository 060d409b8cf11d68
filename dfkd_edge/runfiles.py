"""File names in a run directory: the contract between stages (docs/ARCHITECTURE.md)."""

from dataclasses import dataclass


@dataclass(frozen=True)
class Artifacts:
    """The model files a flow ships: ``convert`` a student it distilled, ``quantize`` the user's own model.
    ``model`` is the files' prefix and the latency rows' ``model``."""

    model: str

    @property
    def onnx_fp32(self) -> str:
        return f"{self.model}_fp32.onnx"

    @property
    def onnx_int8(self) -> str:
        return f"{self.model}_int8.onnx"

    @property
    def onnx_trt_qdq(self) -> str:
        return f"{self.model}_trt_qdq.onnx"

    @property
    def onnx_fp16(self) -> str:
        return f"{self.model}_fp16.onnx"

    def calib_cache(self, trt_version: str) -> str:
        return f"{self.model}_fp32.trt-{trt_version}.calib.cache"


STUDENT_FILES, MODEL_FILES = Artifacts("student"), Artifacts("model")

MANIFEST = "manifest.json"  # report files: dfkd_edge.report.REPORT_FILES
TEACHER_JSON = "teacher.json"
TRANSFER_SET = "transfer_set.npz"
STUDENT_PT, STUDENT_JSON = "student.pt", "student.json"
STUDENT_CHOICE_JSON = "student_choice.json"  # --max-latency-ms: the candidates and the choice, kept for --resume
ONNX_FP32, ONNX_INT8 = STUDENT_FILES.onnx_fp32, STUDENT_FILES.onnx_int8
CALIBRATION_JSON, PARITY_JSON = "calibration.json", "parity.json"
PARTIAL = ".partial"  # checkpoints of unfinished stages (synthesis batches, distillation epochs)
LATENCY_JSON = "latency.json"
ONNX_TRT_QDQ, ONNX_FP16 = STUDENT_FILES.onnx_trt_qdq, STUDENT_FILES.onnx_fp16
TARGETS_JSON = "targets.json"
VIRTUAL_PT, VIRTUAL_JSON = "virtual_generator.pt", "virtual_generator.json"  # --distill vkd | kd+vkd
VIRTUAL_SET = "virtual_set.npz"  # --distill vkd | kd+vkd, --vkd-transfer virtual: the student's inputs
KD_BASELINE_PT = "student_kd_baseline.pt"  # plain KD from the same transfer set, for the comparison
HEADERS_PT, HEADERS_JSON = "student_headers.pt", "student_headers.json"  # several teachers: before aggregation
AGGREGATION_JSON = "aggregation.json"
CALIBRATION_SOURCES_JSON = "calibration_sources.json"  # quantize: the same model calibrated on other sources  # several teachers: mean, or attention trained on --few-shot-data


def build_script_name(target: str) -> str:
    return f"build_{target}.sh"


def calib_cache_name(trt_version: str) -> str:
    return STUDENT_FILES.calib_cache(trt_version)
