from __future__ import annotations

import numpy as np


class Runner:
    """Base runner: ``backend`` names the runtime, ``precision`` what it computes in."""

    backend = "base"
    precision = "fp32"

    def activate(self) -> None:
        pass

    def infer(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def deactivate(self) -> None:
        pass

    def __enter__(self) -> "Runner":
        self.activate()
        return self

    def __exit__(self, *exc) -> None:
        self.deactivate()


#: ``predict``'s batches hold at most this many input elements (256 samples up to 3x64x64, 27 at 3x224x224): a
#: runtime holds a batch's intermediate tensors, which grow with it (one batch of 256 MobileNetV2 samples at
#: 224x224 took ONNX Runtime past 10 GB)
PREDICT_ELEMENTS = 1 << 22


def predict_batch(x: np.ndarray, most: int = 256) -> int:
    return max(1, min(most, PREDICT_ELEMENTS // max(1, int(np.prod(x.shape[1:])))))


def predict(runner: Runner, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
    """Logits for all of ``x``, in batches (``predict_batch`` unless given)."""
    batch_size = batch_size or predict_batch(x)
    return np.concatenate([runner.infer(x[i:i + batch_size]) for i in range(0, len(x), batch_size)], 0)
