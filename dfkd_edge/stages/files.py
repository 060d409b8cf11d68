"""File names in a run directory: the contract between stages (docs/ARCHITECTURE.md)."""

MANIFEST = "manifest.json"  # report files: dfkd_edge.report.REPORT_FILES
TEACHER_JSON = "teacher.json"
TRANSFER_SET = "transfer_set.npz"
STUDENT_PT, STUDENT_JSON = "student.pt", "student.json"
ONNX_FP32, ONNX_INT8 = "student_fp32.onnx", "student_int8.onnx"
CALIBRATION_JSON, PARITY_JSON = "calibration.json", "parity.json"
PARTIAL = ".partial"  # checkpoints of unfinished stages (synthesis batches, distillation epochs)
LATENCY_JSON = "latency.json"
ONNX_TRT_QDQ, ONNX_FP16 = "student_trt_qdq.onnx", "student_fp16.onnx"
TARGETS_JSON = "targets.json"
VIRTUAL_PT, VIRTUAL_JSON = "virtual_generator.pt", "virtual_generator.json"  # --distill vkd | kd+vkd
VIRTUAL_SET = "virtual_set.npz"  # --distill vkd | kd+vkd, --vkd-transfer virtual: the student's inputs
KD_BASELINE_PT = "student_kd_baseline.pt"  # plain KD from the same transfer set, for the comparison
HEADERS_PT, HEADERS_JSON = "student_headers.pt", "student_headers.json"  # several teachers: before aggregation
AGGREGATION_JSON = "aggregation.json"  # several teachers: mean, or attention trained on --few-shot-data


def build_script_name(target: str) -> str:
    return f"build_{target}.sh"


def calib_cache_name(trt_version: str) -> str:
    return f"student_fp32.trt-{trt_version}.calib.cache"
