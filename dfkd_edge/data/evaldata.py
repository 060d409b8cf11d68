"""Eval data: ``.npz`` with ``x`` (inputs exactly as the teacher consumes them) and ``y`` (int labels)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from dfkd_edge.errors import UserError

FORMAT_HINT = "an .npz with x (N, *input_shape) float and y (N,) integer labels, e.g. np.savez(path, x=x, y=y)"


def load_eval_data(path: str | Path, input_shape: tuple[int, ...], num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"eval data {path} does not exist; give {FORMAT_HINT}")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("x", "y") if k not in z.files]
            if missing:
                raise UserError(f"eval data {path.name} lacks array(s) {', '.join(missing)} (has: "
                                f"{', '.join(z.files) or 'none'}); give {FORMAT_HINT}")
            x, y = z["x"], z["y"]
    except UserError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise UserError(f"eval data {path.name} is not a readable .npz ({e}); give {FORMAT_HINT}") from None
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise UserError(f"eval data x has dtype {x.dtype}; it must be numeric (float32)")
    if tuple(x.shape[1:]) != tuple(input_shape):
        raise UserError(f"eval data x has shape {tuple(x.shape)} but the teacher takes (N, "
                        f"{', '.join(map(str, input_shape))}); preprocess it exactly as the teacher consumes it")
    if y.ndim != 1 or len(y) != len(x):
        raise UserError(f"eval data y has shape {tuple(y.shape)}; it must be ({len(x)},), one label per x")
    if len(x) == 0:
        raise UserError(f"eval data {path.name} is empty")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0):
            y = y.astype(np.int64)
        else:
            raise UserError(f"eval data y has dtype {y.dtype}; labels must be integers")
    if y.min() < 0 or y.max() >= num_classes:
        raise UserError(f"eval data labels span {int(y.min())}..{int(y.max())} but the teacher has "
                        f"{num_classes} classes (0..{num_classes - 1})")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise UserError("eval data x holds NaN or Inf values")
    return x, y.astype(np.int64)
