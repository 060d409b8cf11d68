"""Eval data: ``.npz`` with ``x`` (inputs exactly as the teacher consumes them) and ``y`` (int labels)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from dfkd_edge.errors import UserError

FORMAT_HINT = "an .npz with x (N, *input_shape) float and y (N,) integer labels, e.g. np.savez(path, x=x, y=y)"


def load_eval_data(path: str | Path, input_shape: tuple[int, ...], num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    x, y = _read(path, ("x", "y"), FORMAT_HINT)
    x = _checked_x(x, input_shape, "eval data")
    if y.ndim != 1 or len(y) != len(x):
        raise UserError(f"eval data y has shape {tuple(y.shape)}; it must be ({len(x)},), one label per x")
    if not np.issubdtype(y.dtype, np.integer):
        if np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0):
            y = y.astype(np.int64)
        else:
            raise UserError(f"eval data y has dtype {y.dtype}; labels must be integers")
    if y.min() < 0 or y.max() >= num_classes:
        raise UserError(f"eval data labels span {int(y.min())}..{int(y.max())} but the teacher has "
                        f"{num_classes} classes (0..{num_classes - 1})")
    return x, y.astype(np.int64)


INPUTS_HINT = "an .npz with x (N, *input_shape) float (y, if there, is not needed), e.g. np.savez(path, x=x)"


def load_inputs(path: str | Path, input_shape: tuple[int, ...], what: str = "calibration data") -> np.ndarray:
    """The inputs ``x`` of an .npz (labels, if any, are not read): ``--calib-data``."""
    (x,) = _read(path, ("x",), INPUTS_HINT, what)
    return _checked_x(x, input_shape, what)


def _read(path: str | Path, keys: tuple[str, ...], hint: str, what: str = "eval data") -> tuple[np.ndarray, ...]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path} does not exist; give {hint}")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise UserError(f"{what} {path.name} lacks array(s) {', '.join(missing)} (has: "
                                f"{', '.join(z.files) or 'none'}); give {hint}")
            return tuple(z[k] for k in keys)
    except UserError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise UserError(f"{what} {path.name} is not a readable .npz ({e}); give {hint}") from None


def _checked_x(x: np.ndarray, input_shape: tuple[int, ...], what: str) -> np.ndarray:
    if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise UserError(f"{what} x has dtype {x.dtype}; it must be numeric (float32)")
    if tuple(x.shape[1:]) != tuple(input_shape):
        raise UserError(f"{what} x has shape {tuple(x.shape)} but the model takes (N, "
                        f"{', '.join(map(str, input_shape))}); preprocess it exactly as the model consumes it")
    if len(x) == 0:
        raise UserError(f"{what} is empty (x has no rows)")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise UserError(f"{what} x holds NaN or Inf values")
    return x
