"""TensorRT: build an engine from ONNX (loader) and run it (runner), through TensorRT's Python API.

Feature-detected: nothing here imports ``tensorrt`` at module import time, and
:func:`tensorrt_status` says whether it can run (the package imports *and* a CUDA GPU is
visible through torch). Two code paths, chosen by the installed major version:

- TensorRT 8.x-10.x: weakly typed networks; int8 needs ``BuilderFlag.INT8`` (explicit Q/DQ
  graph, or implicit with a calibrator: here one that only replays our calibration cache),
  fp16 ``BuilderFlag.FP16``.
- TensorRT 11.x: implicit calibration and the precision flags are gone; networks are created
  ``STRONGLY_TYPED`` and take their precisions from the graph (Q/DQ for int8, an fp16 ONNX).

**Untested on a real TensorRT**: it cannot be installed on the development machines (the
registry has stubs only) and no GPU was lent. Written against the TensorRT 10/11 Python API
documentation (Builder, OnnxParser, IBuilderConfig, timing cache, IExecutionContext with
``set_tensor_address`` / ``execute_async_v3``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from dfkd_edge.backends.base import Runner
from dfkd_edge.errors import PipelineError, UserError
from dfkd_edge.targets.host import measure_interleaved

log = logging.getLogger(__name__)


def tensorrt_status() -> dict:
    """``{available, version, major, gpu, reason}``: whether engines can be built and timed here."""
    try:
        import tensorrt as trt  # noqa: F401

        version = getattr(trt, "__version__", None)
        if not version or not hasattr(trt, "Builder"):
            return {"available": False, "version": version, "major": None, "gpu": None,
                    "reason": "the installed 'tensorrt' package is a stub without the Builder API"}
    except Exception as e:  # ImportError, or a broken install raising anything at import
        return {"available": False, "version": None, "major": None, "gpu": None,
                "reason": f"tensorrt does not import ({type(e).__name__}: {e})"}
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # pragma: no cover
        gpu = None
    major = int(version.split(".")[0])
    return {"available": gpu is not None, "version": version, "major": major, "gpu": gpu,
            "reason": None if gpu else "tensorrt imports but no CUDA GPU is visible (torch.cuda)"}


def _require() -> tuple:
    st = tensorrt_status()
    if not st["available"]:
        raise UserError(f"TensorRT cannot run here: {st['reason']}; build on the device with the generated "
                        "build_<target>.sh, or profile there with --remote")
    import tensorrt as trt

    return trt, st


def _cache_calibrator(trt, cache: bytes):
    """An IInt8EntropyCalibrator2 that never calibrates: it replays a calibration cache (TensorRT <= 10)."""

    class CacheCalibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self) -> None:
            trt.IInt8EntropyCalibrator2.__init__(self)

        def get_batch_size(self) -> int:
            return 1

        def get_batch(self, names):  # no data: every tensor's scale is in the cache
            return None

        def read_calibration_cache(self) -> bytes:
            return cache

        def write_calibration_cache(self, cache_bytes) -> None:
            pass

    return CacheCalibrator()


def build_engine(onnx_path: str | Path, engine_path: str | Path, precision: str, input_shape: tuple[int, ...],
                 max_batch: int = 32, calibration_cache: str | Path | None = None,
                 timing_cache: str | Path | None = None, workspace_mb: int = 1024) -> dict:
    """Build a serialized engine; returns ``{engine, precision, tensorrt, strongly_typed, mode}``.

    ``precision``: ``int8`` (``onnx_path`` a Q/DQ model, or fp32 with ``calibration_cache`` on
    TensorRT <= 10), ``fp16`` (fp32 model on <= 10; an fp16 model on 11) or ``fp32``."""
    trt, st = _require()
    major = st["major"]
    if calibration_cache is not None and major >= 11:
        raise UserError("TensorRT 11 removed implicit int8 calibration: build int8 from the Q/DQ model instead")
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    strongly_typed = major >= 11
    flags = (1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)) if strongly_typed else 0
    if major < 10:  # TensorRT 8/9: explicit batch must be asked for
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise PipelineError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mb << 20)
    inp = network.get_input(0)
    profile = builder.create_optimization_profile()
    profile.set_shape(inp.name, (1, *input_shape), (1, *input_shape), (max_batch, *input_shape))
    config.add_optimization_profile(profile)
    mode = "strongly-typed" if strongly_typed else precision
    if not strongly_typed:
        if precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)
            config.set_flag(trt.BuilderFlag.FP16)  # float layers may fall back to fp16
            if calibration_cache is not None:
                config.int8_calibrator = _cache_calibrator(trt, Path(calibration_cache).read_bytes())
                config.set_calibration_profile(profile)
                mode = "int8-implicit-calibration-cache"
            else:
                mode = "int8-explicit-qdq"
        elif precision == "fp16":
            config.set_flag(trt.BuilderFlag.FP16)
    if timing_cache is not None:
        tc_path = Path(timing_cache)
        cache = config.create_timing_cache(tc_path.read_bytes() if tc_path.exists() else b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise PipelineError(f"TensorRT failed to build an engine from {onnx_path} ({precision})")
    Path(engine_path).write_bytes(bytes(serialized))
    if timing_cache is not None:
        Path(timing_cache).write_bytes(bytes(config.get_timing_cache().serialize()))
    return {"engine": str(engine_path), "precision": precision, "tensorrt": st["version"],
            "strongly_typed": strongly_typed, "mode": mode}


class TensorRTRunner(Runner):
    """Runs a serialized engine on the GPU; ``infer`` includes the host->device and device->host
    copies (what trtexec calls host latency). Buffers are torch CUDA tensors."""

    backend = "tensorrt"

    def __init__(self, engine_path: str | Path, precision: str) -> None:
        self.engine_path, self.precision = Path(engine_path), precision
        self.context = None

    def activate(self) -> None:
        trt, _ = _require()
        import torch

        self._torch = torch
        logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(logger)
        self.engine = self._runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self.engine is None:
            raise UserError(f"{self.engine_path} is not an engine this TensorRT/GPU can load "
                            "(engines are tied to the GPU model and TensorRT version they were built with)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self._in = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT][0]
        self._out = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT][0]
        self._stream = torch.cuda.Stream()

    def infer(self, x: np.ndarray) -> np.ndarray:
        if self.context is None:
            self.activate()
        torch = self._torch
        xin = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).cuda(non_blocking=False)
        self.context.set_input_shape(self._in, tuple(x.shape))
        out = torch.empty(tuple(self.context.get_tensor_shape(self._out)), dtype=torch.float32, device="cuda")
        self.context.set_tensor_address(self._in, xin.data_ptr())
        self.context.set_tensor_address(self._out, out.data_ptr())
        if not self.context.execute_async_v3(self._stream.cuda_stream):
            raise PipelineError("TensorRT execute_async_v3 failed")
        self._stream.synchronize()
        return out.cpu().numpy()

    def deactivate(self) -> None:
        self.context = None


def time_engine(engine_path: str | Path, precision: str, input_shape: tuple[int, ...], batches=(1, 32),
                budget_s: float = 1.0, device: str = "gpu") -> list:
    """Latency rows (kind ``measured``) of a built engine on this machine's GPU."""
    rng = np.random.default_rng(0)
    rows = []
    for b in batches:
        x = rng.standard_normal((b, *input_shape)).astype(np.float32)
        rows += measure_interleaved([("student", TensorRTRunner(engine_path, precision))], x, budget_s=budget_s,
                                    device=device)
    return rows
