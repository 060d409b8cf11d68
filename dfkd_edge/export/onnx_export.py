"""Student -> ONNX (opset 17, dynamic batch), then a parity check against PyTorch.

The TorchScript-based exporter (``dynamo=False``) is used: it is fast, folds BatchNorm into
the convolutions in eval mode and emits opset 17 directly; the dynamo exporter upgrades to
opset 18 and was slower on these small models.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dfkd_edge.backends import predict
from dfkd_edge.backends.base import predict_batch
from dfkd_edge.backends.onnxruntime import OrtRunner
from dfkd_edge.errors import PipelineError
from dfkd_edge.io import atomic_path

log = logging.getLogger(__name__)

OPSET = 17
INPUT_NAME, OUTPUT_NAME = "input", "logits"


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], path: str | Path) -> Path:
    # eval mode folds BatchNorm into the convolutions; a frozen program keeps its mode (ORT folds them)
    mode = torch.onnx.TrainingMode.EVAL if _eval(model) else torch.onnx.TrainingMode.PRESERVE
    path = Path(path)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (torch.zeros(1, *input_shape),), str(tmp), dynamo=False,
                          opset_version=OPSET, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                          do_constant_folding=True, training=mode)
        import onnx

        onnx.checker.check_model(str(tmp))
    return path


def _eval(model: nn.Module) -> bool:
    """Eval mode; False for a torch.export program's module, which is frozen in the mode it was
    exported in and refuses ``eval()`` (and ``train()``)."""
    try:
        model.eval()
        return True
    except NotImplementedError:
        return False


#: the parity check runs this many held-out synthetic samples and as many draws of the input domain's noise
PARITY_EACH = 64


def check_parity(model: nn.Module, onnx_path: str | Path, inputs: np.ndarray, atol: float = 1e-3,
                 rtol: float = 1e-3) -> dict:
    """Max abs diff between PyTorch and ONNX Runtime logits on ``inputs``; raises beyond tolerance.

    The tolerance scales with the logits' magnitude: |diff| <= atol + rtol * max|logit|.
    """
    with torch.inference_mode():
        _eval(model)
        step = predict_batch(inputs)
        ref = np.concatenate([model(torch.from_numpy(inputs[i:i + step])).numpy()
                              for i in range(0, len(inputs), step)], 0)
    with OrtRunner(onnx_path, threads=1) as r:
        got = predict(r, inputs)
    diff = float(np.abs(ref - got).max())
    bound = atol + rtol * float(np.abs(ref).max())
    result = {"max_abs_diff": diff, "tolerance": bound, "samples": int(len(inputs)),
              "argmax_agreement": float((ref.argmax(1) == got.argmax(1)).mean())}
    if not diff <= bound:
        raise PipelineError(f"ONNX parity check failed: max |torch - onnxruntime| = {diff:.3g} > {bound:.3g} "
                            f"on {len(inputs)} inputs; the exported graph does not compute the student")
    return result
