"""The stages of ``convert`` in a row, each reading only the files the stages before it wrote.

inspect -> synthesize -> distill -> export -> calibrate -> targets -> profile -> evaluate -> report

``targets`` writes what each non-host target needs (TensorRT: the S8S8 Q/DQ ONNX, an fp16 ONNX,
a calibration cache per TensorRT version, ``build_<target>.sh``); ``profile`` measures the host
and estimates the targets it cannot reach (a roofline; rows say ``estimated``).

``manifest.json`` is rewritten (atomically) after every stage: the config, the versions of
everything that shapes the result, each stage's seconds and the sha256 of each file it wrote.
``report.json`` follows the schema in docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

import dfkd_edge
from dfkd_edge.backends import predict
from dfkd_edge.backends.onnxruntime import OrtRunner
from dfkd_edge.backends.torch_eager import TorchRunner
from dfkd_edge.compute import Compute, resolve as resolve_compute
from dfkd_edge.distill import KDConfig, distill
from dfkd_edge.distributed import Dist
from dfkd_edge.distill.kd import check_mode
from dfkd_edge.distill.vkd import (VKDConfig, fit_virtual_generator, generator_fidelity, load_virtual_generator,
                                   save_virtual_generator)
from dfkd_edge.errors import PipelineError, UserError, require_positive
from dfkd_edge.export.onnx_export import OPSET, check_parity, export_onnx
from dfkd_edge.export.quantize import CalibConfig, calibrate, calibration_subset
from dfkd_edge.io import atomic_path, atomic_write_json, atomic_write_text, sha256
from dfkd_edge.models import create_student
from dfkd_edge.models.students import build_from_recipe, count_params
from dfkd_edge.progress import NullProgress, Progress
from dfkd_edge.quality import assess
from dfkd_edge.report import REPORT_FILES, SCHEMA_VERSION, write_report
from dfkd_edge.synthesis import create_synthesizer, resolve_method
from dfkd_edge.synthesis.base import choose_auto
from dfkd_edge.synthesis.store import TransferSetFile
from dfkd_edge.targets import HOST_TARGET, TargetProfile, host_info, load_profile, measure_interleaved
from dfkd_edge.targets.estimate import estimate_rows
from dfkd_edge.teacher import Teacher, load_teacher

log = logging.getLogger(__name__)

# File names in the output directory (the contract between stages).
TEACHER_JSON = "teacher.json"
TRANSFER_SET = "transfer_set.npz"
STUDENT_PT, STUDENT_JSON = "student.pt", "student.json"
ONNX_FP32, ONNX_INT8 = "student_fp32.onnx", "student_int8.onnx"
CALIBRATION_JSON, PARITY_JSON = "calibration.json", "parity.json"
PARTIAL = ".partial"  # per-batch synthesis checkpoints, removed when the transfer set is written
LATENCY_JSON = "latency.json"
ONNX_TRT_QDQ, ONNX_FP16 = "student_trt_qdq.onnx", "student_fp16.onnx"
TARGETS_JSON = "targets.json"
VIRTUAL_PT, VIRTUAL_JSON = "virtual_generator.pt", "virtual_generator.json"  # --distill vkd | kd+vkd
KD_BASELINE_PT = "student_kd_baseline.pt"  # plain KD from the same transfer set, for the comparison
HEADERS_PT, HEADERS_JSON = "student_headers.pt", "student_headers.json"  # several teachers: before aggregation
AGGREGATION_JSON = "aggregation.json"  # several teachers: mean, or attention trained on --few-shot-data


def build_script_name(target: str) -> str:
    return f"build_{target}.sh"


def calib_cache_name(trt_version: str) -> str:
    return f"student_fp32.trt-{trt_version}.calib.cache"
MANIFEST = "manifest.json"  # report files: dfkd_edge.report.REPORT_FILES


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
    samples: int = 2048
    holdout: int = 256
    synth_batch: int = 256
    iterations: int = 200
    student: str = "auto"
    width: int | None = None
    kd: KDConfig = field(default_factory=KDConfig)
    vkd: VKDConfig = field(default_factory=VKDConfig)
    compare_kd: bool = True  # with --distill vkd | kd+vkd: also train plain KD and report both
    calib: CalibConfig = field(default_factory=CalibConfig)
    eval_data: str | None = None
    eval_name: str | None = None
    seed: int = 0
    threads: int = 0  # 0: min(4, cores); under torchrun, synthesis and distillation: cores / local ranks
    device: str = "auto"  # where synthesis and distillation run (dfkd_edge.compute)
    precision: str = "auto"
    channels_last: str = "auto"
    compile: str = "auto"
    latency_budget_s: float = 1.0
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

    @property
    def teacher_paths(self) -> list[str]:
        return [self.teacher, *self.more_teachers]


def versions() -> dict:
    import onnx
    import onnxruntime

    return {"dfkd_edge": dfkd_edge.__version__, "python": platform.python_version(), "torch": torch.__version__,
            "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "numpy": np.__version__}


def validate_config(cfg: ConvertConfig, dist: Dist | None = None) -> None:
    """Checks that need no teacher: fail before minutes of work, with exit code 2."""
    method = resolve_method(cfg.method)  # UserError on an unknown name
    check_mode(cfg.kd)
    cfg.compute(dist or Dist())  # UserError for a device or precision this machine cannot give
    if dist is not None and dist.enabled:
        from dfkd_edge.synthesis import METHODS

        if cfg.more_teachers or METHODS[method].needs_student:
            what = "several teachers" if cfg.more_teachers else f"--method {method}"
            raise UserError(f"{what} trains the student during synthesis, which runs in one process; start it "
                            "without torchrun (data-parallel: deepinversion, soft-target, reused-generator, gaussian)")
    if cfg.more_teachers:
        if cfg.method != "auto":
            raise UserError(f"--method {cfg.method} applies to one teacher; with {len(cfg.teacher_paths)} teachers "
                            "the student is trained with CDFKD-MFS's adversarial generator (leave --method out)")
        if cfg.kd.mode != "kd":
            raise UserError(f"--distill {cfg.kd.mode} applies to one teacher; leave it out with several teachers")
        if len(set(map(os.path.abspath, cfg.teacher_paths))) != len(cfg.teacher_paths):
            raise UserError("the same teacher file is given twice; give each teacher once")
    elif cfg.few_shot_data:
        raise UserError("--few-shot-data trains the attention over several teachers' headers; it needs two or more "
                        "teachers")
    if not cfg.targets:
        raise UserError("give at least one --target")
    names = [load_profile(t).name for t in cfg.targets]  # UserError on an unknown name or a bad file
    if len(set(names)) != len(names):
        raise UserError(f"--target given twice: {', '.join(sorted(n for n in set(names) if names.count(n) > 1))}")
    _check_numbers(cfg)


def _check_numbers(cfg: ConvertConfig) -> None:
    """Every number option in its valid range, one line naming the range (exit 2)."""
    require_positive((("--samples", cfg.samples), ("--synth-batch", cfg.synth_batch), ("--epochs", cfg.kd.epochs),
                      ("--vkd-epochs", cfg.vkd.epochs), ("--iterations", cfg.iterations),
                      ("--batch-size", cfg.kd.batch_size), ("--temperature", cfg.kd.temperature),
                      ("--calib-samples", cfg.calib.samples), ("--latency-budget", cfg.latency_budget_s)))
    if cfg.holdout < 16:
        raise UserError(f"--holdout must be at least 16 (fidelity is measured on it), got {cfg.holdout}")
    if not cfg.kd.mixup >= 0:
        raise UserError(f"--mixup must be 0 (off) or positive (the Beta(a, a) parameter), got {cfg.kd.mixup}")
    if cfg.threads < 0:
        raise UserError(f"--threads must be 0 (min(4, cores)) or a positive count, got {cfg.threads}")
    if cfg.width is not None and cfg.width < 1:
        raise UserError(f"--width must be a positive channel count (leave it out to size the student from the "
                        f"teacher), got {cfg.width}")


def prepare_out_dir(out: Path, force: bool, resume: bool = False, marker: str = MANIFEST) -> None:
    """A writable output directory; one holding an earlier run (``marker``) needs --force or --resume."""
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".dfkd-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write to output directory {out} ({e.strerror or e}); choose a writable --out") from None
    if force and resume:
        raise UserError("--force and --resume contradict each other: --force starts over, --resume continues")
    if (out / marker).exists() and not (force or resume):
        raise UserError(f"{out} already holds a dfkd-edge run ({marker}); pass "
                        + ("--resume to finish it, " if marker == MANIFEST else "")
                        + "--force to overwrite it, or choose another --out")
    if force:
        shutil.rmtree(out / PARTIAL, ignore_errors=True)
    if force or resume:  # a killed run leaves the temp files of the writes it was inside (dfkd_edge.io)
        for tmp in out.rglob(".*.tmp"):
            tmp.unlink(missing_ok=True)


class Run:
    """One convert run: the output directory, the manifest, stage keys, timing and resume.

    A stage's key hashes its own config, the sha256 of the files it reads and the library
    versions. With ``--resume`` a stage is skipped when the previous manifest holds the same key
    and every file it wrote is still there with the same sha256; otherwise it runs again (and so
    do the stages after it, whose inputs then change)."""

    def __init__(self, cfg: ConvertConfig, progress: Progress | None = None) -> None:
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.progress = progress or NullProgress()
        self.timings: dict[str, float] = {}
        self.manifest = {"schema": 1, "tool": "dfkd-edge", "config": cfg.to_dict(), "versions": versions(),
                         "host": host_info(cfg.resolved_threads()), "stages": {}, "complete": False}
        self.previous: dict = {}
        self._digests: dict[str, tuple[int, int, str]] = {}
        if cfg.resume and (self.out / MANIFEST).exists():
            try:
                self.previous = json.loads((self.out / MANIFEST).read_text()).get("stages", {})
            except (ValueError, OSError):
                log.warning("manifest.json is unreadable; every stage runs again")

    def digest(self, path: str | Path) -> str:
        """sha256 of a file, computed once per (size, mtime): stage keys and records reuse it."""
        p = Path(path) if Path(path).is_absolute() else self.out / path
        st = p.stat()
        cached = self._digests.get(str(p))
        if cached and cached[:2] == (st.st_size, st.st_mtime_ns):
            return cached[2]
        d = sha256(p)
        self._digests[str(p)] = (st.st_size, st.st_mtime_ns, d)
        return d

    def key(self, config: dict, inputs: list[str], external: list[str] | None = None) -> str:
        doc = {"config": config, "versions": self.manifest["versions"],
               "inputs": {f: self.digest(f) for f in inputs},
               "external": {str(p): self.digest(Path(p).resolve()) for p in (external or [])}}
        return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()

    def finished(self, name: str, key: str) -> bool:
        """True (and the stage recorded as resumed) when a previous run finished it with this key."""
        prev = self.previous.get(name)
        if not prev or prev.get("key") != key:
            return False
        for f, digest in prev.get("files", {}).items():
            if not (self.out / f).is_file() or self.digest(f) != digest:
                return False
        self.manifest["stages"][name] = {**prev, "resumed": True}
        self.timings[name] = 0.0
        atomic_write_json(self.out / MANIFEST, self.manifest)
        return True

    def stage(self, name: str, seconds: float, files: list[str], key: str = "") -> None:
        self.timings[name] = round(seconds, 3)
        self.manifest["stages"][name] = {"key": key, "seconds": round(seconds, 3),
                                         "files": {f: self.digest(f) for f in files}}
        atomic_write_json(self.out / MANIFEST, self.manifest)

    def path(self, name: str) -> Path:
        return self.out / name


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def _settle(cfg: ConvertConfig) -> None:
    cfg.kd.seed = cfg.calib.seed = cfg.vkd.seed = cfg.seed  # one --seed drives every stage (in the manifest)
    cfg.vkd.temperature = cfg.kd.temperature  # the generator mimics the softening the student learns at


def convert(cfg: ConvertConfig, progress: Progress | None = None, dist: Dist | None = None) -> dict:
    """Run every stage (skipping finished ones with ``cfg.resume``); returns the report dict.

    Under torchrun this is rank 0 (the leader, dfkd_edge.distributed); the other ranks run
    :func:`follow`."""
    dist = dist or Dist()
    try:
        return _convert(cfg, progress, dist)
    except Exception as e:
        if dist.ready and not dist.busy:  # the followers wait for a command: tell them to stop
            dist.command("abort", kind=type(e).__name__, message=str(e).splitlines()[0] if str(e) else "")
        raise


def _convert(cfg: ConvertConfig, progress: Progress | None, dist: Dist) -> dict:
    try:
        validate_config(cfg, dist)
        prepare_out_dir(Path(cfg.out), cfg.force, cfg.resume)
    except Exception as e:
        dist.agree(e)
        raise
    threads = cfg.resolved_threads()
    _settle(cfg)
    cfg.calib.threads = threads
    compute = cfg.compute(dist)
    run = Run(cfg, progress)
    run.manifest["compute"] = compute.to_dict()
    run.manifest["distributed"] = dist.to_dict()
    torch.set_num_threads(cfg.train_threads(dist))
    t_all = time.perf_counter()
    method = resolve_method(cfg.method)

    # inspect (always: the later stages need the loaded teacher)
    t0 = time.perf_counter()
    multi = bool(cfg.more_teachers)
    try:
        teacher, spec, eval_xy, recipe, few_shot = _inspect(cfg, run, multi)
    except Exception as e:
        dist.agree(e)
        raise
    dist.agree(None)
    run.stage("inspect", time.perf_counter() - t0, [TEACHER_JSON])
    auto_why = None
    if cfg.method == "auto":
        method, auto_why = choose_auto(teacher)
    if multi:
        from dfkd_edge.distill.multi import MultiTeacherConfig, MultiTeacherSynthesizer

    # synthesize (adversarial methods train the student here too: synthesis and KD interleave)
    t0 = time.perf_counter()
    synth_cfg = {"method": method, "samples": cfg.samples, "holdout": cfg.holdout, "batch": cfg.synth_batch,
                 "iterations": cfg.iterations, "seed": cfg.seed, "domain": teacher.domain.to_dict()}
    _seed_all(cfg.seed)
    if multi:
        synth = MultiTeacherSynthesizer(teacher, MultiTeacherConfig(iterations=cfg.iterations,
                                                                    batch_size=cfg.synth_batch, seed=cfg.seed))
        method = synth_cfg["method"] = synth.name
    else:
        synth = create_synthesizer(method, teacher, batch_size=cfg.synth_batch, seed=cfg.seed,
                                   iterations=cfg.iterations)
    if synth.needs_student and cfg.kd.mode != "kd":
        raise UserError(f"--distill {cfg.kd.mode} needs a transfer set to distill from, but --method {method} "
                        "trains the student during synthesis; use --method deepinversion or soft-target")
    outputs = [TRANSFER_SET] + ([HEADERS_PT, HEADERS_JSON] if multi else
                                [STUDENT_PT, STUDENT_JSON] if synth.needs_student else [])
    scaled = not synth.needs_student  # runs on compute's device, data-parallel under torchrun
    if scaled:
        teacher.to(compute)
    elif compute.is_cuda:
        log.warning("--method %s runs on the CPU (deepinversion, soft-target, reused-generator, gaussian and KD "
                    "use the GPU)", method)
    key = run.key({**synth_cfg, "student": recipe if synth.needs_student else None, **_scale_key(dist, compute)},
                  [TEACHER_JSON], cfg.teacher_paths)
    if not run.finished("synthesize", key):
        # batches are checkpointed and the transfer set is streamed to disk: memory follows the batch size
        stream = {"checkpoint_dir": run.path(PARTIAL) / f"synthesize-{key[:16]}", "out_path": run.path(TRANSFER_SET)}
        if synth.needs_student:
            _seed_all(cfg.seed)
            trained = build_from_recipe(recipe)
            synth.train_student(trained, cfg.samples, holdout=cfg.holdout, progress=run.progress, **stream)
            if multi:
                _save_student(run, trained, recipe, {"loss": [synth.history[-1]]}, HEADERS_PT, HEADERS_JSON)
            else:
                _save_student(run, trained, recipe, {"loss": [None], "trained_by": method})
        else:
            synth_kw = {"batch_size": cfg.synth_batch, "seed": cfg.seed, "iterations": cfg.iterations}
            with dist.collective():
                dist.command("synthesize", method=method, kwargs=synth_kw, n=cfg.samples, holdout=cfg.holdout,
                             checkpoint_dir=str(stream["checkpoint_dir"]))
                synth.synthesize(cfg.samples, holdout=cfg.holdout, progress=run.progress, dist=dist,
                                 compute=compute, **stream)
        run.stage("synthesize", time.perf_counter() - t0, outputs, key)
    # outside the branch: a kill between the manifest entry and this line left them, and a resumed
    # run skips the stage; once the transfer set is recorded, its checkpoints are garbage
    shutil.rmtree(run.path(PARTIAL), ignore_errors=True)
    ts = TransferSetFile(run.path(TRANSFER_SET))
    x_train, l_train = ts.train  # rows read from disk batch by batch
    x_hold, l_hold = ts.held_out

    # aggregate (several teachers): the headers' mean, or attention trained on the few labelled samples
    aggregation = None
    if multi:
        t0 = time.perf_counter()
        key = run.key({"few_shot": bool(few_shot)}, [HEADERS_PT, HEADERS_JSON],
                      [cfg.few_shot_data] if cfg.few_shot_data else [])
        if not run.finished("aggregate", key):
            doc = aggregate_headers(run, few_shot, cfg.seed)
            atomic_write_json(run.path(AGGREGATION_JSON), doc)
            run.stage("aggregate", time.perf_counter() - t0, [STUDENT_PT, STUDENT_JSON, AGGREGATION_JSON], key)
        aggregation = json.loads(run.path(AGGREGATION_JSON).read_text())

    # virtual: the class-conditional generator of the teacher's softened outputs (VKD)
    uses_vkd = cfg.kd.mode != "kd" and not synth.needs_student
    if uses_vkd:
        t0 = time.perf_counter()
        key = run.key({"vkd": cfg.vkd.to_dict()}, [TRANSFER_SET])
        if not run.finished("virtual", key):
            _seed_all(cfg.seed)
            # the stored logits; the teacher runs only with cfg.vkd.mixup > 0 (mixed pairs, Python API)
            vk = fit_virtual_generator(l_train, cfg.vkd, progress=run.progress, x=x_train, teacher=teacher)
            save_virtual_generator(run.path(VIRTUAL_PT), vk.generator)
            fid = generator_fidelity(vk.generator, l_hold, l_train, seed=cfg.seed)
            atomic_write_json(run.path(VIRTUAL_JSON), {"config": cfg.vkd.to_dict(), "fidelity": fid,
                                                       "seconds": round(time.perf_counter() - t0, 3)})
            run.stage("virtual", time.perf_counter() - t0, [VIRTUAL_PT, VIRTUAL_JSON], key)

    # distill (vkd: the teacher is not passed, so it cannot run)
    t0 = time.perf_counter()
    if not synth.needs_student:
        key = run.key({"kd": cfg.kd.to_dict(), "student": recipe, **_scale_key(dist, compute)},
                      [TRANSFER_SET] + ([VIRTUAL_PT] if uses_vkd else []), cfg.teacher_paths)
        if not run.finished("distill", key):
            _seed_all(cfg.seed)
            student = build_from_recipe(recipe)
            history = _distill_everywhere(run, dist, compute, student, recipe, x_train, l_train, cfg.kd,
                                          teacher, VIRTUAL_PT if uses_vkd else None)
            _save_student(run, student, recipe, history)
            run.stage("distill", time.perf_counter() - t0, [STUDENT_PT, STUDENT_JSON], key)
    if uses_vkd and cfg.compare_kd:  # plain KD from the same transfer set, for the report's comparison
        t0 = time.perf_counter()
        kd_cfg = KDConfig(**{**asdict(cfg.kd), "mode": "kd"})
        key = run.key({"kd": kd_cfg.to_dict(), "student": recipe, **_scale_key(dist, compute)}, [TRANSFER_SET],
                      cfg.teacher_paths)
        if not run.finished("distill-kd-baseline", key):
            _seed_all(cfg.seed)
            baseline = build_from_recipe(recipe)
            _distill_everywhere(run, dist, compute, baseline, recipe, x_train, l_train, kd_cfg, teacher, None)
            with atomic_path(run.path(KD_BASELINE_PT)) as tmp:
                torch.save(baseline.state_dict(), tmp)
            run.stage("distill-kd-baseline", time.perf_counter() - t0, [KD_BASELINE_PT], key)
    if scaled:
        teacher.to(Compute())  # back on the CPU: evaluation and the teacher's latency rows run there
    dist.command("done")  # the followers' part is over; the rest is the leader's
    torch.set_num_threads(threads)
    student = load_student(run.out)
    recipe = json.loads(run.path(STUDENT_JSON).read_text())

    # export
    t0 = time.perf_counter()
    key = run.key({"opset": OPSET}, [STUDENT_PT, STUDENT_JSON, TRANSFER_SET])
    if not run.finished("export", key):
        export_onnx(student, spec.input_shape, run.path(ONNX_FP32))
        noise = teacher.domain.draw(64, spec.input_shape, torch.Generator().manual_seed(cfg.seed)).numpy()
        parity_x = np.concatenate([x_hold[:64], noise.astype(np.float32)])
        atomic_write_json(run.path(PARITY_JSON), check_parity(student, run.path(ONNX_FP32), parity_x))
        run.stage("export", time.perf_counter() - t0, [ONNX_FP32, PARITY_JSON], key)
    parity = json.loads(run.path(PARITY_JSON).read_text())

    # calibrate
    t0 = time.perf_counter()
    calib_cfg = {k: v for k, v in asdict(cfg.calib).items() if k != "threads"}
    key = run.key({**calib_cfg, "formats": list(cfg.calib.formats)}, [ONNX_FP32, TRANSFER_SET],
                  [cfg.eval_data] if cfg.eval_data else [])
    if not run.finished("calibrate", key):
        calib_x = calibration_subset(x_train, cfg.calib.samples, cfg.seed)
        calib = calibrate(run.path(ONNX_FP32), run.path(ONNX_INT8), calib_x, x_hold, l_hold, cfg.calib,
                          progress=run.progress, extra_check_x=eval_xy[0] if eval_xy is not None else None)
        atomic_write_json(run.path(CALIBRATION_JSON), calib)
        run.stage("calibrate", time.perf_counter() - t0, [ONNX_INT8, CALIBRATION_JSON], key)
    calib = json.loads(run.path(CALIBRATION_JSON).read_text())

    # targets: per-target artifacts (TensorRT: Q/DQ ONNX, fp16 ONNX, calibration cache, build script)
    t0 = time.perf_counter()
    profiles = [load_profile(t) for t in cfg.targets]
    trt = [p for p in profiles if p.engine == "tensorrt"]
    target_doc = {"profiles": {p.name: p.to_dict() for p in profiles}}
    if trt:
        key = run.key({"targets": [p.to_dict() for p in trt], "calib": calib_cfg}, [ONNX_FP32, TRANSFER_SET],
                      [p.path for p in trt if p.path.endswith(".toml")])
        if not run.finished("targets", key):
            calib_x = calibration_subset(x_train, cfg.calib.samples, cfg.seed)
            written = write_tensorrt_artifacts(run, trt, spec.input_shape, calib_x, x_hold, threads)
            run.stage("targets", time.perf_counter() - t0, written, key)
        target_doc["tensorrt"] = json.loads(run.path(TARGETS_JSON).read_text())["tensorrt"]

    # profile: measured on the host, estimated for every other target
    t0 = time.perf_counter()
    key = run.key({"threads": threads, "budget_s": cfg.latency_budget_s,
                   "estimate": [p.to_dict() for p in profiles if not p.is_host]},
                  [TEACHER_JSON, STUDENT_PT, ONNX_FP32, ONNX_INT8], cfg.teacher_paths)
    if not run.finished("profile", key):
        rows = [r.to_dict() for r in profile_host(teacher, student, run.path(ONNX_FP32), run.path(ONNX_INT8),
                                                  spec.input_shape, threads, cfg.latency_budget_s, run.progress)]
        estimates = {}
        for p in profiles:
            if not p.is_host:
                est_rows, estimates[p.name] = estimate_rows(run.path(ONNX_FP32), p)
                rows += est_rows
        atomic_write_json(run.path(LATENCY_JSON), {"rows": rows, "estimates": estimates})
        run.stage("profile", time.perf_counter() - t0, [LATENCY_JSON], key)
    lat_doc = json.loads(run.path(LATENCY_JSON).read_text())
    rows = lat_doc["rows"]
    target_doc["estimates"] = lat_doc["estimates"]

    # evaluate (always: cheap, and eval data lives outside the output directory)
    t0 = time.perf_counter()
    quality = evaluate(teacher, run.path(ONNX_FP32), run.path(ONNX_INT8), x_hold, l_hold, eval_xy, threads)
    quality["accuracy"]["dataset"] = (cfg.eval_name or Path(cfg.eval_data).name) if cfg.eval_data else None
    baseline = _kd_baseline(run, recipe) if uses_vkd else None  # read once: the comparison and the verdict
    distillation = distillation_summary(run, student, x_hold, l_hold, eval_xy, uses_vkd,
                                        method if synth.needs_student else None, baseline)
    verdict = assess(teacher, student, np.asarray(l_train), x_hold, l_hold, quality["fidelity"],
                     teacher.domain.source, cfg.seed, baseline)
    run.timings["evaluate"] = round(time.perf_counter() - t0, 3)

    # report
    run.timings["total_s"] = round(time.perf_counter() - t_all, 3)
    quality["quality"] = verdict
    report = build_report(run, {**spec.to_dict(), "input_domain": teacher.domain.to_dict()}, recipe, ts, calib,
                          parity, rows, quality, profiles, target_doc)
    report["distillation"] = distillation
    report["synthesis"]["auto"] = {"method": method, "why": auto_why} if auto_why else None
    report["compute"] = {**compute.to_dict(), "applies_to": "synthesis and distillation" if scaled else
                         f"nothing: --method {method} runs on the CPU", "threads_per_rank": cfg.train_threads(dist)}
    report["distributed"] = dist.to_dict()
    if multi:
        report["multi_teacher"] = multi_teacher_summary(teacher, student, x_hold, l_hold, eval_xy, aggregation)
    written = write_report(run.out, report)
    run.manifest["complete"] = True
    run.stage("report", 0.0, written)
    return report


def _inspect(cfg: ConvertConfig, run: Run, multi: bool):
    """Load the teacher(s), eval and few-shot data; choose the student recipe; write teacher.json."""
    if multi:
        from dfkd_edge.distill.multi import Ensemble

        teacher = Ensemble([load_teacher(p, cfg.input_shape, cfg.factory) for p in cfg.teacher_paths])
    else:
        teacher = load_teacher(cfg.teacher, cfg.input_shape, cfg.factory)
    spec = teacher.spec
    eval_xy = None
    if cfg.eval_data:  # before the domain fit: a file that does not fit is refused at once
        from dfkd_edge.data.evaldata import load_eval_data

        eval_xy = load_eval_data(cfg.eval_data, spec.input_shape, spec.num_classes)
    _set_domain(teacher, cfg)
    # the student is chosen (and validated) before minutes of synthesis, built later
    _, recipe = create_student(cfg.student, spec.input_shape, spec.num_classes, spec.num_params, cfg.width)
    few_shot = None
    if multi:
        recipe = _multi_recipe(recipe, teacher, cfg)
        if cfg.few_shot_data:
            from dfkd_edge.data.evaldata import load_eval_data

            few_shot = load_eval_data(cfg.few_shot_data, spec.input_shape, spec.num_classes)
    atomic_write_json(run.path(TEACHER_JSON), {**spec.to_dict(), "input_domain": teacher.domain.to_dict(),
                                               **({"members": [t.spec.to_dict() for t in teacher.members]}
                                                  if multi else {})})
    return teacher, spec, eval_xy, recipe, few_shot


def _set_domain(teacher, cfg: ConvertConfig) -> None:
    """The input domain every method synthesizes in (dfkd_edge.domain): the user's, else read from the
    teacher; set on the teacher (and on each member of several)."""
    from dfkd_edge.domain import infer_domain, user_domain

    user = user_domain(teacher.spec.input_shape, cfg.input_mean, cfg.input_std, cfg.input_range)
    domain = infer_domain(teacher, user, seed=cfg.seed)
    teacher.domain = domain
    for t in getattr(teacher, "members", []):
        t.domain = domain


def _scale_key(dist: Dist, compute: Compute) -> dict:
    """What of the scale-out changes a stage's result: the rank count (each rank has its own random
    stream) and the arithmetic (device kind, precision)."""
    return {"world_size": dist.world, "device": compute.torch_device.type, "precision": compute.precision}


def _distill_everywhere(run: Run, dist: Dist, compute: Compute, student, recipe: dict, x, logits, kd: KDConfig,
                        teacher, virtual_file: str | None) -> dict:
    """distill() on this rank and, under torchrun, on every follower (DDP): they are sent the recipe,
    the config, the virtual generator's file and, once, the training rows."""
    virtual = load_virtual_generator(run.path(virtual_file)) if virtual_file else None
    with dist.collective():
        if dist.enabled:
            dist.command("distill", recipe=recipe, kd=kd.to_dict(),
                         virtual=run.path(virtual_file).read_bytes() if virtual_file else None)
            x, logits = dist.share_rows(x, logits, run.digest(TRANSFER_SET), None)
        return distill(student, x, logits, kd, teacher=None if kd.mode == "vkd" else teacher, progress=run.progress,
                       virtual=virtual, dist=dist, compute=compute)


def follow(cfg: ConvertConfig, dist: Dist) -> None:
    """A follower rank under torchrun: load the teacher, then do the leader's commands (synthesize,
    distill) until it says done. Writes nothing into --out but its own synthesis checkpoints."""
    from dfkd_edge.distributed import Workdir

    try:
        validate_config(cfg, dist)
        _settle(cfg)
        teacher = load_teacher(cfg.teacher, cfg.input_shape, cfg.factory)
        _set_domain(teacher, cfg)
    except Exception as e:
        dist.agree(e)
        raise
    dist.agree(None)
    torch.set_num_threads(cfg.train_threads(dist))
    compute = cfg.compute(dist)
    teacher.to(compute)
    work = Workdir()
    checkpoints = []
    try:
        while True:
            name, p = dist.next_command()
            if name == "synthesize":
                synth = create_synthesizer(p["method"], teacher, **p["kwargs"])
                checkpoints.append(Path(p["checkpoint_dir"]) / f"rank-{dist.rank}")
                synth.synthesize(p["n"], holdout=p["holdout"], checkpoint_dir=p["checkpoint_dir"], dist=dist,
                                 compute=compute)
            elif name == "distill":
                virtual = None
                if p["virtual"] is not None:
                    (work.path / VIRTUAL_PT).write_bytes(p["virtual"])
                    virtual = load_virtual_generator(work.path / VIRTUAL_PT)
                x, logits = dist.share_rows(None, None, "", work.path)
                kd = KDConfig(**p["kd"])
                _seed_all(cfg.seed)
                distill(build_from_recipe(p["recipe"]), x, logits, kd, teacher=None if kd.mode == "vkd" else teacher,
                        virtual=virtual, dist=dist, compute=compute)
            elif name == "done":
                for c in checkpoints:  # the leader has the transfer set; on a shared disk it removed these
                    shutil.rmtree(c, ignore_errors=True)
                return
            elif name == "abort":
                err = UserError if p["kind"] == "UserError" else PipelineError
                raise err(f"rank 0 stopped: {p['message']}")
            else:
                raise PipelineError(f"unknown command from rank 0: {name!r}")
    finally:
        work.close()


def _save_student(run: Run, student: torch.nn.Module, recipe: dict, history: dict,
                  pt: str = STUDENT_PT, js: str = STUDENT_JSON) -> None:
    with atomic_path(run.path(pt)) as tmp:
        torch.save(student.state_dict(), tmp)
    atomic_write_json(run.path(js), {**recipe, "num_params": count_params(student),
                                     "final_kd_loss": history["loss"][-1]})


def _multi_recipe(single: dict, ensemble, cfg: ConvertConfig) -> dict:
    """The multi-header student for these teachers: the family ``--student`` chose, one header per
    teacher, the widest width within 1/4 of the largest teacher's parameters (or ``--width``)."""
    from dfkd_edge.distill.multi import multi_student_width

    spec = ensemble.spec
    n = len(ensemble.members)
    width = cfg.width or multi_student_width(spec.input_shape, spec.num_classes,
                                             [t.spec.num_params for t in ensemble.members], n, single["name"])
    return {"name": "multihead", "family": single["name"], "input_shape": list(spec.input_shape),
            "num_classes": spec.num_classes, "width": int(width), "headers": n, "aggregation": "mean"}


def aggregate_headers(run: Run, few_shot, seed: int) -> dict:
    """Writes the final student (student.pt/.json): the multi-header student with the mean of its
    headers, or with attention trained on ``few_shot`` (x, y), the rest frozen."""
    from dfkd_edge.distill.multi import train_attention

    recipe = {k: v for k, v in json.loads(run.path(HEADERS_JSON).read_text()).items()
              if k not in ("num_params", "final_kd_loss")}
    state = torch.load(run.path(HEADERS_PT), map_location="cpu", weights_only=True)
    if few_shot is None:
        student = build_from_recipe(recipe)
        student.load_state_dict(state)
        _save_student(run, student, recipe, {"loss": [None]})
        return {"method": "mean", "headers": recipe["headers"]}
    recipe["aggregation"] = "attention"
    student = build_from_recipe(recipe)
    missing, unexpected = student.load_state_dict(state, strict=False)
    if unexpected or any(not k.startswith("attention.") for k in missing):
        raise PipelineError(f"the multi-header student's weights do not fit its recipe ({missing}, {unexpected})")
    result = train_attention(student, few_shot[0], few_shot[1], seed=seed)
    _save_student(run, student, recipe, {"loss": [result["loss"][-1]]})
    return {"method": "attention", "headers": recipe["headers"], "few_shot_data": run.cfg.few_shot_data,
            "samples": result["samples"], "epochs": result["epochs"], "final_loss": result["loss"][-1],
            **{k: result[k] for k in ("checked", "kept", "held_out_nll_attention", "held_out_nll_mean") if k in result},
            "few_shot_accuracy": {"mean": result["accuracy_mean"], "attention": result["accuracy_attention"]}}


def multi_teacher_summary(ensemble, student, x_hold: np.ndarray, l_hold: np.ndarray, eval_xy,
                          aggregation: dict) -> dict:
    """report.json's ``multi_teacher``: each teacher, the ensemble, each header (accuracy on eval
    data; fidelity = top-1 agreement with its own teacher on held-out synthetic samples), and the
    student with the mean and (when trained) attention aggregation. PyTorch fp32."""
    def acc(logits, y):
        return float((logits.argmax(1).numpy() == y).mean())

    xh = torch.from_numpy(x_hold)
    with torch.no_grad():
        t_hold = [t.logits(xh) for t in ensemble.members]
        h_hold = student.header_outputs(xh)[0]
        doc = {"aggregation": aggregation, "teachers": [], "headers": []}
        xe = torch.from_numpy(eval_xy[0]) if eval_xy is not None else None
        h_eval = student.header_outputs(xe)[0] if xe is not None else None
        for i, t in enumerate(ensemble.members):
            doc["teachers"].append({"path": t.spec.path, "num_params": t.spec.num_params,
                                    "accuracy": acc(t.logits(xe), eval_xy[1]) if xe is not None else None,
                                    "agreement_with_ensemble": acc(t_hold[i], l_hold.argmax(1))})
            doc["headers"].append({"header": i, "teacher": t.spec.path,
                                   "accuracy": acc(h_eval[i], eval_xy[1]) if xe is not None else None,
                                   "fidelity_to_its_teacher": acc(h_hold[i], t_hold[i].argmax(1).numpy())})
        doc["ensemble"] = {"accuracy": acc(ensemble.logits(xe), eval_xy[1]) if xe is not None else None}
        mean_hold = torch.stack(h_hold).mean(0)
        doc["student_mean"] = {"accuracy": acc(torch.stack(h_eval).mean(0), eval_xy[1]) if xe is not None else None,
                               "fidelity": acc(mean_hold, l_hold.argmax(1))}
        if student.attention is not None:  # the headers' outputs above, aggregated: no second forward
            doc["student_attention"] = {
                "accuracy": acc(student.aggregate(h_eval), eval_xy[1]) if xe is not None else None,
                "fidelity": acc(student.aggregate(h_hold), l_hold.argmax(1))}
    return doc


def load_student(out: Path) -> torch.nn.Module:
    recipe = json.loads((out / STUDENT_JSON).read_text())
    student = build_from_recipe(recipe)
    student.load_state_dict(torch.load(out / STUDENT_PT, map_location="cpu", weights_only=True))
    return student.eval()


def _torch_quality(model: torch.nn.Module, x_hold: np.ndarray, l_hold: np.ndarray, eval_xy) -> dict:
    """fp32 PyTorch figures of one student: accuracy on eval data (or None), fidelity on held-out."""
    with torch.no_grad():
        fid = float((model(torch.from_numpy(x_hold)).argmax(1).numpy() == l_hold.argmax(1)).mean())
        acc = None
        if eval_xy is not None:
            acc = float((model(torch.from_numpy(eval_xy[0])).argmax(1).numpy() == eval_xy[1]).mean())
    return {"accuracy": acc, "fidelity": fid}


def _kd_baseline(run: Run, recipe: dict) -> torch.nn.Module | None:
    """The plain-KD student trained beside a VKD one for comparison; None when there is none."""
    if not run.path(KD_BASELINE_PT).is_file():
        return None
    baseline = build_from_recipe(recipe)
    baseline.load_state_dict(torch.load(run.path(KD_BASELINE_PT), map_location="cpu", weights_only=True))
    return baseline.eval()


def distillation_summary(run: Run, student: torch.nn.Module, x_hold: np.ndarray, l_hold: np.ndarray,
                         eval_xy, uses_vkd: bool, trained_by: str | None,
                         baseline: torch.nn.Module | None = None) -> dict:
    """report.json's ``distillation``: the mode, the soft-target sources' weights, the virtual
    generator's fidelity and, with VKD, the student next to ``baseline`` (plain KD from the same transfer set)."""
    kd = run.cfg.kd
    if trained_by:  # adversarial: the student was trained during synthesis
        return {"mode": f"{trained_by} (during synthesis)", "weights": None, "teacher_run_during_training": True,
                "virtual_generator": None, "comparison": None}
    weights = {"kd": {"kd": 1.0, "vkd": 0.0}, "vkd": {"kd": 0.0, "vkd": 1.0},
               "kd+vkd": {"kd": 1 - kd.vkd_weight, "vkd": kd.vkd_weight}}[kd.mode]
    doc = {"mode": kd.mode, "weights": weights, "temperature": kd.temperature,
           "teacher_run_during_training": kd.mode != "vkd" and kd.mixup > 0, "virtual_generator": None,
           "comparison": None}
    if uses_vkd:
        vdoc = json.loads(run.path(VIRTUAL_JSON).read_text())
        doc["virtual_generator"] = {"file": VIRTUAL_PT, "fidelity": vdoc["fidelity"], "config": vdoc["config"],
                                    "parameters": count_params(load_virtual_generator(run.path(VIRTUAL_PT))),
                                    "size_bytes": run.path(VIRTUAL_PT).stat().st_size}
        if baseline is not None:
            doc["comparison"] = {"measured_with": "PyTorch fp32, same student, transfer set and seed",
                                 kd.mode: _torch_quality(student, x_hold, l_hold, eval_xy),
                                 "kd": {**_torch_quality(baseline, x_hold, l_hold, eval_xy),
                                        "file": KD_BASELINE_PT}}
    return doc


def profile_host(teacher: Teacher, student: torch.nn.Module, fp32: Path, int8: Path, input_shape, threads: int,
                 budget_s: float, progress: Progress) -> list:
    runners = [("teacher", lambda: TorchRunner(teacher.runtime, threads, backend=teacher.backend)),
               ("student", lambda: TorchRunner(student, threads)),
               ("student", lambda: OrtRunner(fp32, threads, "fp32")),
               ("student", lambda: OrtRunner(int8, threads, "int8"))]
    rng = np.random.default_rng(0)
    rows = []
    with progress.task("latency (host)", total=2) as task:
        for batch in (1, 32):
            x = rng.standard_normal((batch, *input_shape)).astype(np.float32)
            rows += measure_interleaved([(model, make()) for model, make in runners], x,
                                        budget_s=budget_s * len(runners))
            task.advance(1)
    return rows


def write_tensorrt_artifacts(run: Run, profiles: list[TargetProfile], input_shape, calib_x: np.ndarray,
                             x_hold: np.ndarray, threads: int) -> list[str]:
    """The files TensorRT targets share (Q/DQ ONNX, fp16 ONNX, one calibration cache per TensorRT
    version tag) and each one's build script; ``targets.json`` records what was checked."""
    import onnx
    from onnxruntime.quantization import quant_pre_process
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from dfkd_edge.export.onnx_export import INPUT_NAME
    from dfkd_edge.export.quantize import guardrail
    from dfkd_edge.export.tensorrt_qdq import quantize_for_tensorrt, tensorrt_qdq_violations, write_calibration_cache
    from dfkd_edge.export.trt_script import write_build_script

    work = Path(tempfile.mkdtemp(prefix=".trt-", dir=run.out))
    try:
        pre = work / "pre.onnx"
        quant_pre_process(str(run.path(ONNX_FP32)), str(pre), skip_symbolic_shape=False)
        quantize_for_tensorrt(pre, run.path(ONNX_TRT_QDQ), calib_x, run.cfg.calib.method)
        with OrtRunner(run.path(ONNX_FP32), threads) as r32:
            fp32_top1 = predict(r32, x_hold).argmax(1)
        with OrtRunner(run.path(ONNX_TRT_QDQ), threads, "int8") as rq:
            agreement = float((predict(rq, x_hold).argmax(1) == fp32_top1).mean())
        guard = {"threshold": run.cfg.calib.min_agreement, "triggered": agreement < run.cfg.calib.min_agreement,
                 "agreement_before": agreement, "excluded": [], "held": True}
        if guard["triggered"]:  # leave the most sensitive layers in float (TensorRT runs them in fp16/fp32)
            cfg = CalibConfig(**{**asdict(run.cfg.calib), "threads": threads})
            final, found = guardrail(pre, "", calib_x, x_hold, fp32_top1, cfg, work, quantize=lambda out, ex:
                                     quantize_for_tensorrt(pre, out, calib_x, run.cfg.calib.method, exclude=ex))
            shutil.move(str(final), str(run.path(ONNX_TRT_QDQ)))
            agreement = found["agreement"]
            guard.update(excluded=found["excluded"], held=found["held"])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    violations = tensorrt_qdq_violations(run.path(ONNX_TRT_QDQ))
    if guard["triggered"] and any("nothing runs in int8" in v for v in violations):
        # the guardrail had to leave every layer in float: int8 buys nothing for TensorRT here (expected, not a
        # placement error); the recommendation then takes fp16 or fp32
        violations = [v for v in violations if "nothing runs in int8" not in v]
        guard["int8_usable"] = False
        log.warning("TensorRT int8: every layer had to stay in float to agree with fp32; the TensorRT targets "
                    "get fp16 or fp32")
    if violations:
        raise PipelineError("the TensorRT Q/DQ model breaks TensorRT's placement rules: " + "; ".join(violations[:5]))
    with atomic_path(run.path(ONNX_FP16)) as tmp:
        onnx.save(convert_float_to_float16(onnx.load(str(run.path(ONNX_FP32))), keep_io_types=True), str(tmp))
    written = [ONNX_TRT_QDQ, ONNX_FP16]
    caches = {}
    for p in profiles:
        if p.tensorrt[0] <= 10 and p.tensorrt_version not in caches:  # TensorRT 11 has no calibration caches
            caches[p.tensorrt_version] = calib_cache_name(p.tensorrt_version)
            write_calibration_cache(run.path(ONNX_FP32), calib_x, p.tensorrt_version,
                                    run.path(caches[p.tensorrt_version]))
            written.append(caches[p.tensorrt_version])
        files = {"qdq": ONNX_TRT_QDQ, "fp32": ONNX_FP32, "fp16": ONNX_FP16,
                 "cache": caches.get(p.tensorrt_version, "")}
        write_build_script(run.path(build_script_name(p.name)), p, files, INPUT_NAME, tuple(input_shape))
        written.append(build_script_name(p.name))
    doc = {"tensorrt": {"qdq_model": ONNX_TRT_QDQ, "fp16_model": ONNX_FP16, "qdq_rule_violations": violations,
                        "qdq_agreement_with_fp32": agreement, "agreement_samples": int(len(x_hold)),
                        "guardrail": guard,
                        "agreement_measured_with": "onnxruntime-cpu (TensorRT not available here)",
                        "calibration_caches": caches, "calibration_samples": int(len(calib_x)),
                        "build_scripts": {p.name: build_script_name(p.name) for p in profiles}}}
    atomic_write_json(run.path(TARGETS_JSON), doc)
    return written + [TARGETS_JSON]


def evaluate(teacher: Teacher, fp32: Path, int8: Path, x_hold: np.ndarray, l_hold: np.ndarray, eval_xy,
             threads: int) -> dict:
    top1 = l_hold.argmax(1)
    with OrtRunner(fp32, threads) as r32, OrtRunner(int8, threads, "int8") as r8:
        fid = {"student_fp32": float((predict(r32, x_hold).argmax(1) == top1).mean()),
               "student_int8": float((predict(r8, x_hold).argmax(1) == top1).mean()),
               "samples": int(len(x_hold))}
        acc = {"dataset": None, "teacher": None, "student_fp32": None, "student_int8": None}
        if eval_xy is not None:
            x, y = eval_xy
            acc.update(teacher=float((teacher.logits(torch.from_numpy(x)).numpy().argmax(1) == y).mean()),
                       student_fp32=float((predict(r32, x).argmax(1) == y).mean()),
                       student_int8=float((predict(r8, x).argmax(1) == y).mean()), samples=int(len(y)))
    return {"accuracy": acc, "fidelity": fid}


def recommend(profile: TargetProfile, rows: list[dict], quality: dict, target_doc: dict) -> dict:
    """One engine per target: the fastest at batch 1 among those within 1 point of fp32 quality.

    Quality is accuracy on the eval data when given, else fidelity on held-out synthetic samples.
    Measured rows decide where the target was measured (host, or measured-remote rows merged by
    ``dfkd-edge profile --report``); otherwise estimated rows do, and the reason says so."""
    basis = "accuracy" if quality["accuracy"]["student_fp32"] is not None else "fidelity"
    q = quality[basis]
    ok_int8 = q["student_int8"] >= q["student_fp32"] - 0.01
    trt = profile.engine == "tensorrt"
    if trt:
        t = target_doc.get("tensorrt", {})
        ok_int8 = (ok_int8 and t.get("qdq_agreement_with_fp32", 0) >= 0.99
                   and t.get("guardrail", {}).get("int8_usable", True))
    device_rows = [r for r in rows if r["model"] == "student" and r["batch"] == 1
                   and r["backend"].startswith(("onnxruntime", "tensorrt"))
                   and (r["device"] == profile.name or r["device"].startswith(profile.name + " ("))]
    for kind in ("measured", "measured-remote", "estimated"):
        cands = [r for r in device_rows if r["kind"] == kind]
        if cands:
            break
    files = ({"int8": ONNX_TRT_QDQ, "fp16": ONNX_FP16, "fp32": ONNX_FP32} if trt
             else {"int8": ONNX_INT8, "fp32": ONNX_FP32, "fp16": ONNX_FP16})
    ok = [r for r in cands if r["precision"] != "int8" or ok_int8]
    if not ok:
        return {"target": profile.name, "file": files["fp32"], "precision": "fp32", "backend": "unknown",
                "kind": None, "reason": "no latency rows for this target"}
    best = min(ok, key=lambda r: r["p50_ms"])
    others = ", ".join(f"{r['precision']} {r['p50_ms']:.3g} ms" for r in cands)
    reason = (f"fastest {best['kind']} at batch 1 ({others}) within 1 point of fp32 {basis} "
              f"({100 * q['student_' + ('int8' if best['precision'] == 'int8' else 'fp32')]:.2f}% vs "
              f"{100 * q['student_fp32']:.2f}%)")
    if best["kind"] == "estimated":
        reason = "not measured: " + reason + "; roofline estimate from the target profile"
    if trt:
        reason += (f"; build the engine on the device with {build_script_name(profile.name)} "
                   "(TensorRT engines are not portable)")
    return {"target": profile.name, "file": files[best["precision"]], "precision": best["precision"],
            "backend": best["backend"], "kind": best["kind"], "reason": reason}


def with_verdict(rec: dict, verdict: dict) -> dict:
    """``status`` on a recommendation: the quality verdict; a reason that says so when it is not ok."""
    rec["status"] = verdict["verdict"]
    if verdict["verdict"] != "ok":
        rec["reason"] = (f"{verdict['verdict'].upper()}: the student's quality cannot be vouched for without real "
                         f"data ({verdict['reasons'][0]}); check it on labelled data (--eval-data) before shipping. "
                         + rec["reason"])
    return rec


def model_sizes(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(out.glob("*.onnx"))}


def build_report(run: Run, teacher: dict, recipe: dict, ts: TransferSetFile, calib: dict, parity: dict,
                 rows: list[dict], quality: dict, profiles: list[TargetProfile], target_doc: dict) -> dict:
    artifacts = sorted(p.name for p in run.out.iterdir() if p.is_file() and not p.name.startswith("."))
    artifacts = sorted(set(artifacts) | {*REPORT_FILES, MANIFEST})
    return {
        "schema": SCHEMA_VERSION,
        "teacher": teacher,
        "student": recipe,
        "synthesis": {"method": ts.method, "requested": run.cfg.method, "train": int((~ts.holdout).sum()),
                      "holdout": int(ts.holdout.sum())},
        "quality": quality["quality"],
        "accuracy": quality["accuracy"],
        "fidelity": quality["fidelity"],
        "latency": rows,
        "recommended": [with_verdict(recommend(p, rows, quality, target_doc), quality["quality"]) for p in profiles],
        "targets": target_doc,
        "model_sizes": model_sizes(run.out),
        "calibration": calib,
        "parity": parity,
        "host": run.manifest["host"],
        "timings": run.timings,
        "artifacts": artifacts,
        "versions": run.manifest["versions"],
    }
