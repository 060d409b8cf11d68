"""Device profiles: TOML files shipped with the package (``targets/profiles/``) or given by path.

A profile says what runs on a device (TensorRT major versions, ONNX Runtime execution
providers), in which precisions, and how fast the device is on paper (peak int8/fp16/fp32
compute, memory bandwidth: each figure with its source in ``[sources]``), plus how its latency is
estimated when the device cannot be reached (``[estimate]``: the fitted model a Jetson profile names with
``fit``, or the four assumptions of a plain roofline).

A GPU profile gives its peaks at the GPU's highest clock (``gpu_mhz``, ``sms``) and, per power mode,
the clock, the SMs left ungated and the memory bandwidth (``[power.mode."NAME"]``); ``NAME:MODE`` as a
target (``jetson-orin-nano:MAXN_SUPER``) loads the profile at that mode, plain ``NAME`` at its default.
Sized names (``jetson-orin-nano-8gb``) are aliases of the profiles that have always carried the bare
name (``ALIASES``).
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field, replace
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
#: sized names of the modules whose shipped profile has the bare name (the size users most often have)
ALIASES = {"jetson-orin-nano-8gb": "jetson-orin-nano", "jetson-orin-nx-16gb": "jetson-orin-nx",
           "jetson-agx-orin-64gb": "jetson-agx-orin"}


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
    fit: str | None = None  # the fitted latency model (targets/fits/NAME.toml) its estimate uses
    gpu_mhz: float | None = None  # the clock the peaks are given at
    sms: int | None = None  # streaming multiprocessors at that clock
    mode: str | None = None  # the power mode the peaks and bandwidth are at
    mode_table: dict[str, dict] = field(default_factory=dict)  # mode -> gpu_mhz, sms, bandwidth_gbs

    @property
    def is_host(self) -> bool:
        return self.kind == "host"

    @property
    def can_estimate(self) -> bool:
        return bool(self.peak) and self.bandwidth_gbs is not None and (bool(self.estimate) or bool(self.fit))

    def at_mode(self, mode: str) -> "TargetProfile":
        """This profile at power mode ``mode``: peaks scaled by its clock and ungated SMs, its bandwidth."""
        if mode not in self.mode_table:
            known = ", ".join(self.mode_table) or "none with clocks"
            raise UserError(f"target {self.name}: no power mode {mode!r} with clocks (known: {known})")
        m = self.mode_table[mode]
        scale = (m["gpu_mhz"] / self.gpu_mhz) * (m["sms"] / self.sms)
        return replace(self, peak={k: v * scale for k, v in self.peak.items()}, bandwidth_gbs=m["bandwidth_gbs"],
                       gpu_mhz=m["gpu_mhz"], sms=m["sms"], mode=mode)

    def to_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "kind": self.kind, "engine": self.engine,
                "precisions": list(self.precisions), "tensorrt": list(self.tensorrt) if self.tensorrt else None,
                "tensorrt_version": self.tensorrt_version, "onnxruntime_ep": list(self.onnxruntime_ep),
                "threads": self.threads, "dla_cores": self.dla_cores,
                "peak_ops_per_s": self.peak, "bandwidth_gbs": self.bandwidth_gbs,
                "power_modes": list(self.power_modes), "default_power_mode": self.default_power_mode,
                "estimate_assumptions": self.estimate, "fit": self.fit, "gpu_mhz": self.gpu_mhz, "sms": self.sms,
                "mode": self.mode, "sources": self.sources, "path": self.path}


def _profiles_dir():
    return resources.files("dfkd_edge.targets") / "profiles"


def builtin_names() -> list[str]:
    return sorted([p.name[:-5] for p in _profiles_dir().iterdir() if p.name.endswith(".toml")] + list(ALIASES))


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
    fit = est.get("fit")
    if fit is not None and (not isinstance(fit, str) or not _NAME.match(fit)):
        raise _bad(where, f"[estimate] fit must name a fitted model (targets/fits/NAME.toml), got {fit!r}")
    if kind != "host" and not (peak and mem.get("bandwidth_gbs") and (len(estimate) == 4 or fit)):
        raise _bad(where, "a device profile needs [compute] peaks, [memory] bandwidth_gbs and either [estimate] "
                          "fit (a fitted model) or the four [estimate] assumptions (compute_efficiency, "
                          "bandwidth_efficiency, kernel_overhead_us, fixed_overhead_us): they make its estimated "
                          "latency")
    gpu_mhz, sms = _number(comp, "gpu_mhz", where), comp.get("sms")
    if fit and (gpu_mhz is None or not isinstance(sms, int) or sms <= 0):
        raise _bad(where, "a fitted GPU estimate needs [compute] gpu_mhz and sms (a positive integer)")
    modes = {}
    for m, t in power.get("mode", {}).items():
        if not isinstance(t, dict) or not isinstance(t.get("sms"), int) or t["sms"] <= 0:
            raise _bad(where, f"[power.mode.{m!r}] needs gpu_mhz, sms (a positive integer) and bandwidth_gbs")
        modes[m] = {"gpu_mhz": _number(t, "gpu_mhz", where), "sms": t["sms"],
                    "bandwidth_gbs": _number(t, "bandwidth_gbs", where)}
        if None in modes[m].values():
            raise _bad(where, f"[power.mode.{m!r}] needs gpu_mhz, sms and bandwidth_gbs")
        if gpu_mhz is None or sms is None:
            raise _bad(where, "power modes with clocks need [compute] gpu_mhz and sms")
    return TargetProfile(
        name=name, description=str(doc.get("description", "")), kind=kind, engine=engine, precisions=precisions,
        tensorrt=tuple(trt) if engine == "tensorrt" else None, tensorrt_version=rt.get("tensorrt_version"),
        onnxruntime_ep=tuple(rt.get("onnxruntime_ep", ("CPUExecutionProvider",))), threads=rt.get("threads"),
        dla_cores=int(rt.get("dla_cores", 0)), peak=peak, bandwidth_gbs=_number(mem, "bandwidth_gbs", where),
        power_modes=tuple(power.get("modes", ())), default_power_mode=power.get("default"), estimate=estimate,
        sources={str(k): str(v) for k, v in doc.get("sources", {}).items()}, path=where, fit=fit, gpu_mhz=gpu_mhz,
        sms=sms, mode_table=modes)


def load_profile(spec: str) -> TargetProfile:
    """A shipped profile by name, or a user's TOML file by path (anything ending in .toml), at its default power
    mode, or at ``MODE`` for ``NAME:MODE``."""
    name_or_path, _, mode = spec.rpartition(":") if ":" in spec else (spec, "", "")
    profile = _load(name_or_path)
    if not profile.mode_table:
        if mode:
            raise UserError(f"target {profile.name} has no power modes with clocks; drop ':{mode}'")
        return profile
    return profile.at_mode(mode or profile.default_power_mode or next(iter(profile.mode_table)))


def _load(name_or_path: str) -> TargetProfile:
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
    text = (_profiles_dir() / f"{ALIASES.get(name_or_path, name_or_path)}.toml").read_text()
    profile = parse_profile(tomllib.loads(text), f"{name_or_path} (built in)")
    return replace(profile, name=name_or_path)


def list_profiles() -> list[TargetProfile]:
    return [load_profile(n) for n in builtin_names()]


def profile_text(name_or_path: str) -> str:
    """The TOML behind a profile, as shipped (for ``targets show``)."""
    if name_or_path.split(":", 1)[0].endswith(".toml") or "/" in name_or_path:
        load_profile(name_or_path)
        return Path(name_or_path.rsplit(":", 1)[0] if ":" in name_or_path else name_or_path).read_text()
    load_profile(name_or_path)
    name_or_path = name_or_path.split(":", 1)[0]  # a power mode is a section of the one file
    return (_profiles_dir() / f"{ALIASES.get(name_or_path, name_or_path)}.toml").read_text()
