"""The options of a run (``ConvertConfig``) and the one place they are checked.

The CLI's commands (``convert``, each stage's command), the Python API (``dfkd_edge.api``) and
the benchmarks build a ``ConvertConfig`` and hand it to :func:`validate_config` before any work:
a bad option is ``UserError`` (exit 2) with one line naming the valid range.
"""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field, fields

from dfkd_edge.compute import Compute, resolve as resolve_compute
from dfkd_edge.distill import KDConfig
from dfkd_edge.distill.kd import check_mode
from dfkd_edge.distill.vkd import VKD_TRANSFERS, VKDConfig
from dfkd_edge.distributed import Dist
from dfkd_edge.errors import UserError, require_positive
from dfkd_edge.export.quantize import CalibConfig
from dfkd_edge.synthesis import METHODS, resolve_method
from dfkd_edge.synthesis.base import AUTO_METHOD, MULTI_METHOD
from dfkd_edge.synthesis.start import check_start
from dfkd_edge.targets import HOST_TARGET, load_profile
from dfkd_edge.targets.remote import REMOTE_PYTHON, TRTEXEC, Remote


@dataclass
class ConvertConfig:
    teacher: str
    out: str
    more_teachers: tuple[str, ...] = ()  # more than one teacher: CDFKD-MFS (dfkd_edge.distill.multi)
    few_shot_data: str | None = None  # several teachers: a few labelled samples -> attention aggregation
    input_shape: tuple[int, ...] | None = None
    factory: str | None = None
    input_range: str | None = None  # the user's word on the input domain (dfkd_edge.domain); else read
    input_mean: str | None = None
    input_std: str | None = None
    targets: tuple[str, ...] = (HOST_TARGET,)
    method: str = "auto"
    samples: int = 4096  # twice 2,048: 14 of 16 zoo teachers gained (docs/benchmarks.md)
    holdout: int = 256
    synth_batch: int = 256
    iterations: int = 200
    synth_start: str = "auto"  # where input optimisers start (dfkd_edge.synthesis.start.STARTS)
    synth_jitter: bool = False  # input optimisers: the teacher sees each step's batch moved (KD's moves)
    synth_bn_units: str = "auto"  # input optimisers' BN-statistics distance (dfkd_edge.synthesis.base.BN_UNITS)
    student: str = "auto"
    width: int | None = None
    student_factory: str | None = None  # package.module:function(input_shape, num_classes) -> nn.Module
    max_latency_ms: float | None = None  # the student: the most MACs whose int8 batch-1 p50 fits, on latency_on
    latency_on: str | None = None  # the target max_latency_ms is held on (default: the first device target)
    latency_remote: str | None = None  # [user@]host: max_latency_ms's candidates measured there over SSH
    ssh_config: str | None = None  # ``ssh -F`` for latency_remote
    remote_python: str = REMOTE_PYTHON  # latency_remote's Python (ONNX Runtime targets)
    trtexec: str = TRTEXEC  # latency_remote's trtexec (TensorRT targets)
    kd: KDConfig = field(default_factory=KDConfig)
    vkd: VKDConfig = field(default_factory=VKDConfig)
    compare_kd: bool = True  # with --distill vkd | kd+vkd: also train plain KD and report both
    calib: CalibConfig = field(default_factory=CalibConfig)
    eval_data: str | None = None
    calib_data: str | None = None  # quantize: real inputs to compare the synthesized calibration set with
    onnx_model: str | None = None  # quantize: the user's ONNX file to calibrate (``teacher``: its PyTorch source)
    eval_name: str | None = None
    seed: int = 0
    threads: int = 0  # 0: min(4, cores); under torchrun, synthesis and distillation: cores / local ranks
    device: str = "auto"  # where synthesis and distillation run (dfkd_edge.compute)
    precision: str = "auto"
    channels_last: str = "auto"
    compile: str = "auto"
    latency_budget_s: float = 1.0
    time_budget: str | None = None  # the whole run's time, "20m" (dfkd_edge.plan.fit_budget); None: the defaults
    force: bool = False
    resume: bool = False

    def resolved_threads(self) -> int:
        return self.threads or max(1, min(4, os.cpu_count() or 1))

    def train_threads(self, dist: Dist) -> int:
        """Threads per rank for synthesis and distillation: the node's cores shared by its ranks."""
        if not dist.enabled:
            return self.resolved_threads()
        return self.threads or max(1, (os.cpu_count() or 1) // max(1, dist.local_world))

    def compute(self, dist: Dist) -> Compute:
        return resolve_compute(self.device, self.precision, self.channels_last, self.compile, dist.local_rank)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["input_shape"] = list(self.input_shape) if self.input_shape else None
        d["calib"]["formats"] = list(self.calib.formats)
        d["targets"] = list(self.targets)
        d["more_teachers"] = list(self.more_teachers)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ConvertConfig":
        """The config a manifest recorded (``to_dict``); unknown keys are ignored."""
        known = {f.name for f in fields(cls)}
        o = {k: v for k, v in d.items() if k in known}
        nested = {"kd": KDConfig, "vkd": VKDConfig, "calib": CalibConfig}
        for k, kind in nested.items():
            if k in o:
                names = {f.name for f in fields(kind)}
                o[k] = kind(**{a: b for a, b in o[k].items() if a in names})
        o["calib"].formats = tuple(o["calib"].formats)
        for k in ("input_shape", "targets", "more_teachers"):
            if o.get(k) is not None:
                o[k] = tuple(o[k])
        return cls(**o)

    @property
    def teacher_paths(self) -> list[str]:
        return [self.teacher, *self.more_teachers]


#: quantize's synthesis steps per batch: convert's 200 calibrated no better on the zoo's 16 teachers, 3 seeds
#: (docs/benchmarks.md), and synthesis is most of quantize's time
QUANTIZE_ITERATIONS = 50


#: quantize plans its work to fit this time on the machine it runs on (``--time-budget``; ``off`` runs the defaults
#: in full): calibration should take minutes. Every zoo model's defaults plan well under it, so nothing is cut
#: there; a 224x224 network is cut towards the floors (plan.LEVERS), which calibrated as well on the models
#: measured (docs/benchmarks.md, "How much calibration does a model need?"). The plan lands within a few percent of
#: the run at 224x224, and a run adds about 25 s the plan does not hold (start-up, reading the model): at 7 minutes
#: MobileNetV2 at 224x224 finishes in under 8 on 2 cores.
QUANTIZE_TIME_BUDGET = "7m"
#: ``--time-budget`` that means none
NO_BUDGET = "off"


def quantize_base() -> ConvertConfig:
    """The config ``quantize`` starts from: convert's, with its own synthesis steps and time budget."""
    return ConvertConfig(teacher="", out="", iterations=QUANTIZE_ITERATIONS, time_budget=QUANTIZE_TIME_BUDGET)


def settle(cfg: ConvertConfig) -> None:
    """One --seed drives every stage (in the manifest); the virtual generator mimics the softening
    the student learns at; calibration runs on the run's threads."""
    cfg.kd.seed = cfg.calib.seed = cfg.vkd.seed = cfg.seed
    cfg.calib.threads = cfg.resolved_threads()
    cfg.vkd.temperature = cfg.kd.temperature


def validate_config(cfg: ConvertConfig, dist: Dist | None = None) -> None:
    """Checks that need no teacher: fail before minutes of work, with exit code 2."""
    method = resolve_method(cfg.method)  # UserError on an unknown name
    check_start(cfg.synth_start)
    check_mode(cfg.kd)
    if cfg.vkd.transfer not in VKD_TRANSFERS:
        raise UserError(f"--vkd-transfer must be one of {', '.join(VKD_TRANSFERS)}, got {cfg.vkd.transfer!r}")
    cfg.compute(dist or Dist())  # UserError for a device or precision this machine cannot give
    if dist is not None and dist.enabled:
        if cfg.more_teachers and (method == MULTI_METHOD or cfg.few_shot_data):
            raise UserError("CDFKD-MFS (several teachers with --method cdfkd-mfs or --few-shot-data) trains the student "
                            "during synthesis, which runs in one process; start it without torchrun (several teachers "
                            "are data-parallel with --method auto or deepinversion and no --few-shot-data)")
        if not cfg.more_teachers and (method not in METHODS or METHODS[method].needs_student):
            raise UserError(f"--method {method} trains the student during synthesis, which runs in one process; start "
                            "it without torchrun (data-parallel: deepinversion, soft-target, reused-generator, gaussian)")
    _check_teachers(cfg)
    if not cfg.targets:
        raise UserError("give at least one --target")
    names = [load_profile(t).name for t in cfg.targets]  # UserError on an unknown name or a bad file
    if len(set(names)) != len(names):
        raise UserError(f"--target given twice: {', '.join(sorted(n for n in set(names) if names.count(n) > 1))}")
    check_numbers(cfg)


def _check_teachers(cfg: ConvertConfig) -> None:
    several = ("auto", AUTO_METHOD, MULTI_METHOD)  # the ensemble route (dfkd_edge.ensemble) and CDFKD-MFS
    if cfg.more_teachers:
        if cfg.method not in several:
            raise UserError(f"--method {cfg.method} applies to one teacher; with {len(cfg.teacher_paths)} teachers use "
                            "auto (leave --method out), deepinversion or cdfkd-mfs")
        if cfg.few_shot_data and cfg.method == AUTO_METHOD:
            raise UserError("--few-shot-data trains the attention over CDFKD-MFS's headers; with --method deepinversion "
                            "the student has none (use --method cdfkd-mfs, or leave --method out)")
        if cfg.kd.mode != "kd":
            raise UserError(f"--distill {cfg.kd.mode} applies to one teacher; leave it out with several teachers")
        if len(set(map(os.path.abspath, cfg.teacher_paths))) != len(cfg.teacher_paths):
            raise UserError("the same teacher file is given twice; give each teacher once")
    elif cfg.few_shot_data:
        raise UserError("--few-shot-data trains the attention over several teachers' headers; it needs two or more "
                        "teachers")
    elif cfg.method == MULTI_METHOD:
        raise UserError("--method cdfkd-mfs distills several teachers into one multi-header student; give two or more "
                        "teachers")


_DURATION = re.compile(r"^(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?$")


def budget_seconds(text: str | None) -> float | None:
    """``--time-budget`` in seconds: ``20m``, ``1h30m``, ``900s`` or ``900``; None for None or ``off``; UserError
    otherwise."""
    if text is None or str(text).strip().lower() == NO_BUDGET:
        return None
    m = _DURATION.match(str(text).strip().lower())
    if not str(text).strip() or m is None or not any(m.groups()):
        raise UserError(f"--time-budget {text!r} is not a duration; give e.g. 20m, 1h30m or 900s, or {NO_BUDGET}")
    h, mi, s = (float(g) if g else 0.0 for g in m.groups())
    total = 3600 * h + 60 * mi + s
    if total <= 0:
        raise UserError(f"--time-budget must be positive, got {text!r}")
    return total


def check_numbers(cfg: ConvertConfig) -> None:
    """Every number option in its valid range, one line naming the range (exit 2)."""
    require_positive((("--samples", cfg.samples), ("--synth-batch", cfg.synth_batch), ("--epochs", cfg.kd.epochs),
                      ("--vkd-epochs", cfg.vkd.epochs), ("--iterations", cfg.iterations),
                      ("--batch-size", cfg.kd.batch_size), ("--temperature", cfg.kd.temperature),
                      ("--calib-samples", cfg.calib.samples), ("--latency-budget", cfg.latency_budget_s)))
    if cfg.holdout < 16:
        raise UserError(f"--holdout must be at least 16 (fidelity is measured on it), got {cfg.holdout}")
    if not cfg.kd.mixup >= 0:
        raise UserError(f"--mixup must be 0 (off) or positive (the Beta(a, a) parameter), got {cfg.kd.mixup}")
    if cfg.time_budget is not None:
        budget_seconds(cfg.time_budget)  # UserError on a bad duration
    if cfg.threads < 0:
        raise UserError(f"--threads must be 0 (min(4, cores)) or a positive count, got {cfg.threads}")
    if cfg.max_latency_ms is not None:
        if not cfg.max_latency_ms > 0:
            raise UserError(f"--max-latency-ms must be a positive number of milliseconds, got {cfg.max_latency_ms}")
        if cfg.width is not None or cfg.student_factory:
            raise UserError("--max-latency-ms chooses the student's family and width: leave out --width and "
                            "--student-factory (or leave out --max-latency-ms)")
    if cfg.latency_on is not None and cfg.max_latency_ms is None:
        raise UserError("--latency-on names the target --max-latency-ms is held on; give --max-latency-ms too")
    if cfg.latency_remote is not None:
        if cfg.max_latency_ms is None:
            raise UserError("--latency-remote names the device --max-latency-ms's candidates are measured on; give "
                            "--max-latency-ms too")
        Remote(cfg.latency_remote, cfg.ssh_config)  # UserError on a bad destination or a missing config
    elif cfg.ssh_config is not None:
        raise UserError("--ssh-config is for --latency-remote; give --latency-remote too")
    if cfg.student_factory is not None and (":" not in cfg.student_factory or cfg.width is not None):
        raise UserError(f"--student-factory must look like package.module:function (called with the input shape and "
                        f"the number of classes; no --width), got {cfg.student_factory!r}")
    if cfg.width is not None and cfg.width < 1:
        raise UserError(f"--width must be a positive channel count (leave it out to size the student from the "
                        f"teacher), got {cfg.width}")
