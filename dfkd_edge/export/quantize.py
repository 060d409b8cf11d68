"""int8 calibration with synthesized samples, through onnxruntime.quantization.

Calibration data: a seeded subset of the transfer set's training part (the teacher's data is
never seen). Static quantization, per-channel weights. Which int8 format is fastest on ONNX
Runtime's CPU provider depends on the model and the CPU (probes here: U8S8 Q/DQ about 3x
faster than fp32 on a ResNet-18, S8S8 Q/DQ slower than fp32; tiny models can be slower in
int8 than fp32 at all), so every candidate format is built and timed, and the fastest one whose
top-1 agreement with the teacher stays within ``max_fidelity_drop`` of the fp32 model's is kept.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dfkd_edge.backends import predict
from dfkd_edge.backends.onnxruntime import OrtRunner
from dfkd_edge.errors import UserError
from dfkd_edge.progress import NullProgress, Progress
from dfkd_edge.targets.host import time_runner

log = logging.getLogger(__name__)

#: name -> (quant format, activation type, weight type)
CANDIDATES = {
    "qdq-u8s8": ("QDQ", "QUInt8", "QInt8"),
    "qoperator-u8s8": ("QOperator", "QUInt8", "QInt8"),
    "qdq-s8s8": ("QDQ", "QInt8", "QInt8"),
}
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


@dataclass
class CalibConfig:
    samples: int = 256
    method: str = "minmax"
    formats: tuple[str, ...] = tuple(CANDIDATES)
    per_channel: bool = True
    max_fidelity_drop: float = 0.01
    seed: int = 0
    threads: int = 1


class _Reader:
    """onnxruntime CalibrationDataReader over an array, in batches."""

    def __init__(self, name: str, x: np.ndarray, batch: int = 32) -> None:
        self.name, self.x, self.batch, self.i = name, x, batch, 0

    def get_next(self):
        if self.i >= len(self.x):
            return None
        b = self.x[self.i:self.i + self.batch]
        self.i += self.batch
        return {self.name: b}

    def rewind(self) -> None:
        self.i = 0


def calibration_subset(x: np.ndarray, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(x), size=min(n, len(x)), replace=False)
    return np.ascontiguousarray(x[np.sort(idx)], dtype=np.float32)


def quantize_one(fp32_path: Path, out_path: Path, calib: np.ndarray, fmt: str, cfg: CalibConfig) -> None:
    import onnxruntime.quantization as q

    qformat, act, wt = CANDIDATES[fmt]
    method = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
              "percentile": q.CalibrationMethod.Percentile}[cfg.method]
    import onnx

    name = onnx.load(str(fp32_path)).graph.input[0].name
    q.quantize_static(str(fp32_path), str(out_path), _Reader(name, calib),
                      quant_format=getattr(q.QuantFormat, qformat), activation_type=getattr(q.QuantType, act),
                      weight_type=getattr(q.QuantType, wt), per_channel=cfg.per_channel,
                      calibrate_method=method)


def calibrate(fp32_path: str | Path, out_path: str | Path, calib_x: np.ndarray, heldout_x: np.ndarray,
              heldout_teacher: np.ndarray, cfg: CalibConfig, progress: Progress | None = None) -> dict:
    """Build each candidate int8 model, measure it, keep the best at ``out_path``; returns a record."""
    progress = progress or NullProgress()
    if cfg.method not in CALIBRATION_METHODS:
        raise UserError(f"unknown calibration method {cfg.method!r}; known: {', '.join(CALIBRATION_METHODS)}")
    unknown = [f for f in cfg.formats if f not in CANDIDATES]
    if unknown:
        raise UserError(f"unknown int8 format(s) {unknown}; known: {', '.join(CANDIDATES)}")
    from onnxruntime.quantization import quant_pre_process

    fp32_path, out_path = Path(fp32_path), Path(out_path)
    work = Path(tempfile.mkdtemp(prefix=".calib-", dir=out_path.parent))
    try:
        pre = work / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=False)
        teacher_top1 = heldout_teacher.argmax(1)
        x1 = heldout_x[:1]
        with OrtRunner(fp32_path, cfg.threads) as r:
            fp32_fid = float((predict(r, heldout_x).argmax(1) == teacher_top1).mean())
            fp32_ms = float(np.median(time_runner(r, x1, budget_s=0.5))) * 1000
        rows = []
        with progress.task("int8 calibration", total=len(cfg.formats)) as task:
            for fmt in cfg.formats:
                path = work / f"{fmt}.onnx"
                quantize_one(pre, path, calib_x, fmt, cfg)
                with OrtRunner(path, cfg.threads, precision="int8") as r:
                    fid = float((predict(r, heldout_x).argmax(1) == teacher_top1).mean())
                    ms = float(np.median(time_runner(r, x1, budget_s=0.5))) * 1000
                rows.append({"format": fmt, "fidelity": fid, "p50_ms_batch1": round(ms, 4),
                             "within_tolerance": fid >= fp32_fid - cfg.max_fidelity_drop})
                task.advance(1)
        ok = [r for r in rows if r["within_tolerance"]]
        chosen = min(ok, key=lambda r: r["p50_ms_batch1"]) if ok else max(rows, key=lambda r: r["fidelity"])
        shutil.move(str(work / f"{chosen['format']}.onnx"), str(out_path))
        if not ok:
            log.warning("no int8 format kept fidelity within %.1f points of fp32; keeping the most faithful (%s)",
                        100 * cfg.max_fidelity_drop, chosen["format"])
        return {"method": cfg.method, "samples": int(len(calib_x)), "per_channel": cfg.per_channel,
                "source": "synthesized transfer set", "chosen_format": chosen["format"],
                "reason": ("fastest at batch 1 among formats within "
                           f"{100 * cfg.max_fidelity_drop:.1f} points of fp32 fidelity") if ok
                else "no format within tolerance; most faithful kept",
                "fp32": {"fidelity": fp32_fid, "p50_ms_batch1": round(fp32_ms, 4)}, "candidates": rows}
    finally:
        shutil.rmtree(work, ignore_errors=True)
