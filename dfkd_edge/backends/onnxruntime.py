from __future__ import annotations

from pathlib import Path

import numpy as np

from dfkd_edge.backends.base import Runner


class OrtRunner(Runner):
    """An ONNX Runtime session with a fixed thread count, on the CPU execution provider unless
    ``providers`` says otherwise (``backend`` names the first: onnxruntime-cpu, onnxruntime-cuda ...)."""

    def __init__(self, path: str | Path, threads: int, precision: str = "fp32",
                 providers: list[str] | None = None) -> None:
        self.path, self.threads, self.precision = str(path), threads, precision
        self.providers = list(providers or ["CPUExecutionProvider"])
        self.backend = "onnxruntime-" + self.providers[0].replace("ExecutionProvider", "").lower()
        self.session = None

    def activate(self) -> None:
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.log_severity_level = 3
        self.session = ort.InferenceSession(self.path, so, providers=self.providers)
        self._input = self.session.get_inputs()[0].name

    def infer(self, x: np.ndarray) -> np.ndarray:
        if self.session is None:
            self.activate()
        return self.session.run(None, {self._input: np.ascontiguousarray(x, dtype=np.float32)})[0]

    def deactivate(self) -> None:
        self.session = None
