"""Device profiles: TOML files shipped with the package (``targets/profiles/``) or given by path.

A profile says what runs on a device (TensorRT major versions, ONNX Runtime execution
providers), in which precisions, and how fast the device is on paper (peak int8/fp16/fp32
compute, memory bandwidth: each figure with its source in ``[sources]``), plus the assumptions
of the roofline estimate used when the device cannot be reached (``[estimate]``).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from dfkd_edge.errors import UserError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

KINDS = ("host", "jetson", "cpu")
ENGINES = ("tensorrt", "onnxruntime")
PRECISIONS = ("int8", "fp16", "fp32")
_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


@dataclass
class TargetProfile:
    name: str
    description: str
    kind: str
    engine: str
    precisions: tuple[str, ...]
    tensorrt: tuple[int, int] | None = None  # inclusive range of TensorRT majors
    tensorrt_version: str | None = None
    onnxruntime_ep: tuple[str, ...] = ("CPUExecutionProvider",)
    threads: int | None = None
    dla_cores: int = 0
    peak: dict[str, float] = field(default_factory=dict)  # precision -> ops/s
    bandwidth_gbs: float | None = None
    power_modes: tuple[str, ...] = ()
    default_power_mode: str | None = None
    estimate: dict[str, float] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    path: str = ""

    @property
    def is_host(self) -> bool:
        return self.kind == "host"

    @property
    def can_estimate(self) -> bool:
        return bool(self.peak) and self.bandwidth_gbs is not None and bool(self.estimate)

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "kind": self.kind, "engine": self.engine,
                "precisions": list(self.precisions), "tensorrt": list(self.tensorrt) if self.tensorrt else None,
                "tensorrt_version": self.tensorrt_version, "onnxruntime_ep": list(self.onnxruntime_ep),
                "threads": self.threads, "dla_cores": self.dla_cores,
                "peak_ops_per_s": self.peak, "bandwidth_gbs": self.bandwidth_gbs,
                "power_modes": list(self.power_modes), "default_power_mode": self.default_power_mode,
                "estimate_assumptions": self.estimate, "sources": self.sources, "path": self.path}


def _profiles_dir():
    return resources.files("dfkd_edge.targets") / "profiles"


def builtin_names() -> list[str]:
    return sorted(p.name[:-5] for p in _profiles_dir().iterdir() if p.name.endswith(".toml"))


def _bad(where: str, msg: str) -> UserError:
    return UserError(f"target profile {where}: {msg}")


def _number(d: dict, key: str, where: str, positive: bool = True) -> float | None:
    v = d.get(key)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (positive and v <= 0):
        raise _bad(where, f"{key} must be a positive number, got {v!r}")
    return float(v)


def parse_profile(doc: dict, where: str) -> TargetProfile:
    """A TargetProfile from a parsed TOML document; UserError naming the field on anything wrong."""
    name = doc.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise _bad(where, f"'name' must be lower-case letters, digits, '.', '_' or '-', got {name!r}")
    kind = doc.get("kind")
    if kind not in KINDS:
        raise _bad(where, f"'kind' must be one of {', '.join(KINDS)}, got {kind!r}")
    rt, comp, mem = doc.get("runtime", {}), doc.get("compute", {}), doc.get("memory", {})
    power, est = doc.get("power", {}), doc.get("estimate", {})
    engine = rt.get("engine")
    if engine not in ENGINES:
        raise _bad(where, f"[runtime] engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    precisions = tuple(comp.get("precisions", ()))
    if not precisions or any(p not in PRECISIONS for p in precisions):
        raise _bad(where, f"[compute] precisions must be a non-empty list of {', '.join(PRECISIONS)}")
    trt = rt.get("tensorrt")
    if engine == "tensorrt":
        if (not isinstance(trt, list) or len(trt) != 2 or not all(isinstance(v, int) for v in trt)
                or trt[0] > trt[1] or trt[0] < 8):
            raise _bad(where, "[runtime] tensorrt must be [lowest major, highest major], e.g. [10, 10]")
        ver = rt.get("tensorrt_version")
        if not isinstance(ver, str) or not re.match(r"^\d+\.\d+\.\d+$", ver):
            raise _bad(where, "[runtime] tensorrt_version must be 'major.minor.patch' (the calibration cache tag)")
    peak = {}
    for prec, key, scale in (("int8", "peak_int8_tops", 1e12), ("fp16", "peak_fp16_tflops", 1e12),
                             ("fp32", "peak_fp32_tflops", 1e12)):
        v = _number(comp, key, where)
        if v is not None:
            peak[prec] = v * scale
    estimate = {}
    for key in ("compute_efficiency", "bandwidth_efficiency"):
        v = _number(est, key, where)
        if v is not None:
            if v > 1:
                raise _bad(where, f"[estimate] {key} is a fraction of peak, at most 1, got {v}")
            estimate[key] = v
    for key in ("kernel_overhead_us", "fixed_overhead_us"):
        v = _number(est, key, where, positive=False)
        if v is not None:
            if v < 0:
                raise _bad(where, f"[estimate] {key} must be >= 0, got {v}")
            estimate[key] = v
    if kind != "host" and not (peak and mem.get("bandwidth_gbs") and len(estimate) == 4):
        raise _bad(where, "a device profile needs [compute] peaks, [memory] bandwidth_gbs and the four "
                          "[estimate] assumptions (compute_efficiency, bandwidth_efficiency, kernel_overhead_us, "
                          "fixed_overhead_us): they make its estimated latency")
    return TargetProfile(
        name=name, description=str(doc.get("description", "")), kind=kind, engine=engine, precisions=precisions,
        tensorrt=tuple(trt) if engine == "tensorrt" else None, tensorrt_version=rt.get("tensorrt_version"),
        onnxruntime_ep=tuple(rt.get("onnxruntime_ep", ("CPUExecutionProvider",))), threads=rt.get("threads"),
        dla_cores=int(rt.get("dla_cores", 0)), peak=peak, bandwidth_gbs=_number(mem, "bandwidth_gbs", where),
        power_modes=tuple(power.get("modes", ())), default_power_mode=power.get("default"), estimate=estimate,
        sources={str(k): str(v) for k, v in doc.get("sources", {}).items()}, path=where)


def load_profile(name_or_path: str) -> TargetProfile:
    """A shipped profile by name, or a user's TOML file by path (anything ending in .toml)."""
    if name_or_path.endswith(".toml") or "/" in name_or_path:
        p = Path(name_or_path)
        if not p.is_file():
            raise UserError(f"target profile {name_or_path} does not exist")
        try:
            doc = tomllib.loads(p.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
            raise _bad(str(p), f"not valid TOML ({e})") from None
        return parse_profile(doc, str(p))
    if name_or_path not in builtin_names():
        raise UserError(f"unknown --target {name_or_path!r}; known: {', '.join(builtin_names())} "
                        "(or the path of your own .toml profile; see `dfkd-edge targets show host-cpu`)")
    text = (_profiles_dir() / f"{name_or_path}.toml").read_text()
    return parse_profile(tomllib.loads(text), f"{name_or_path} (built in)")


def list_profiles() -> list[TargetProfile]:
    return [load_profile(n) for n in builtin_names()]


def profile_text(name_or_path: str) -> str:
    """The TOML behind a profile, as shipped (for ``targets show``)."""
    if name_or_path.endswith(".toml") or "/" in name_or_path:
        return Path(name_or_path).read_text()
    load_profile(name_or_path)
    return (_profiles_dir() / f"{name_or_path}.toml").read_text()
