from __future__ import annotations

import numpy as np
import torch
from torch import nn

from dfkd_edge.backends.base import Runner


class TorchRunner(Runner):
    """A torch module on the CPU, fp32, under inference_mode, with a fixed thread count."""

    precision = "fp32"

    def __init__(self, module: nn.Module, threads: int, backend: str = "torch-eager") -> None:
        self.module, self.threads, self.backend = module, threads, backend
        self._saved = None

    def activate(self) -> None:
        self._saved = torch.get_num_threads()
        torch.set_num_threads(self.threads)

    def infer(self, x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return self.module(torch.from_numpy(np.ascontiguousarray(x))).numpy()

    def deactivate(self) -> None:
        if self._saved:
            torch.set_num_threads(self._saved)
