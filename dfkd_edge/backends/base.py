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


def predict(runner: Runner, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits for all of ``x``, in batches."""
    return np.concatenate([runner.infer(x[i:i + batch_size]) for i in range(0, len(x), batch_size)], 0)
