"""Runs a list of stages (dfkd_edge.stages) over a run directory.

The runner owns what no stage should: ordering, stage keys, ``manifest.json``, resume, cleanup of
partial files, timings, progress, staleness and the torchrun roles. A stage declares what it
reads, what it writes and the options it depends on (its ``params``), and does its one job.

A stage's key hashes its params, the sha256 of the files it reads, the files outside the run it
reads (teachers, eval data) and the library versions. A stage is skipped when the manifest holds
the same key and every file it wrote is still there with the same sha256 (``--resume`` and the
stage commands); otherwise it runs again, and so do the stages after it whose inputs then change.
When a stage command runs a stage again, every recorded stage that reads (directly or through
others) what it wrote is marked ``stale`` in the manifest, and a later command that needs it names
the command that brings it up to date.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dfkd_edge.compute import Compute
from dfkd_edge.config import ConvertConfig
from dfkd_edge.distributed import Dist
from dfkd_edge.errors import UserError
from dfkd_edge.io import atomic_write_json, sha256
from dfkd_edge.killpoint import instant
from dfkd_edge.progress import NullProgress, Progress
from dfkd_edge.runfiles import MANIFEST, PARTIAL, Artifacts
from dfkd_edge.synthesis.base import Synthesizer
from dfkd_edge.targets import host_info
from dfkd_edge.teacher_model import TeacherSpec
from dfkd_edge.transfer_store import TransferSetFile
from dfkd_edge.version import __version__

log = logging.getLogger(__name__)


def versions() -> dict:
    import onnx
    import onnxruntime

    return {"dfkd_edge": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "numpy": np.__version__}


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
    if force or resume:
        clean_temporaries(out)


#: the work folders stages make in the run folder and remove when they end (calibration, the calibration
#: sources, the TensorRT Q/DQ model, the plan's ONNX probe): a killed run leaves them behind
WORK_DIRS = (".calib-", ".trt-", ".probe-")


def clean_temporaries(out: Path) -> None:
    """The temp files of the writes a killed run was inside (dfkd_edge.io), and the work folders of the stage
    it was in (``WORK_DIRS``)."""
    for tmp in out.rglob(".*.tmp"):
        tmp.unlink(missing_ok=True)
    for d in out.glob(".*"):
        if d.is_dir() and d.name.startswith(WORK_DIRS):
            shutil.rmtree(d, ignore_errors=True)


class _CountingProgress:
    """Progress that marks each reported step as an instant (dfkd_edge.killpoint)."""

    def __init__(self, inner: Progress) -> None:
        self.inner = inner

    def message(self, text: str) -> None:
        say = getattr(self.inner, "message", None)  # a user's own Progress may have none
        if say is not None:
            say(text)

    def task(self, description: str, total: int):
        import contextlib

        @contextlib.contextmanager
        def wrapped():
            with self.inner.task(description, total) as t:
                class _T:
                    def advance(self, n: int = 1, **fields) -> None:
                        t.advance(n, **fields)
                        instant()
                yield _T()
        return wrapped()


class Run:
    """One run directory: its manifest, stage keys, timing and resume (see the module docstring)."""

    def __init__(self, cfg: ConvertConfig, progress: Progress | None = None, previous: bool | None = None) -> None:
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.progress = _CountingProgress(progress or NullProgress())
        self.timings: dict[str, float] = {}
        self.manifest = {"schema": 1, "tool": "dfkd-edge", "config": cfg.to_dict(), "versions": versions(),
                         "host": host_info(cfg.resolved_threads()), "stages": {}, "complete": False}
        self.previous: dict = {}
        self.previous_plan: dict | None = None  # the plan (dfkd_edge.plan) the run recorded, with its probe
        self.held = False  # manifest writes wait for release() (a stage command until it is not refused)
        self._pending = False
        self._digests: dict[str, tuple[int, int, str]] = {}
        if (cfg.resume if previous is None else previous) and (self.out / MANIFEST).exists():
            try:
                doc = json.loads((self.out / MANIFEST).read_text())
                self.previous, self.previous_plan = doc.get("stages", {}), doc.get("plan")
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
        self.manifest["stages"][name].pop("stale", None)
        self.timings[name] = 0.0
        self.write_manifest()
        return True

    def stage(self, name: str, seconds: float, files: list[str], key: str = "", reads: list[str] = (),
              extra: dict | None = None) -> None:
        self.timings[name] = round(seconds, 3)
        self.manifest["stages"][name] = {"key": key, "seconds": round(seconds, 3), "reads": list(reads),
                                         "files": {f: self.digest(f) for f in files}, **(extra or {})}
        self.write_manifest()

    def hold(self) -> None:
        """Keep manifest writes in memory until ``release``: a command refused before any stage runs
        leaves the run directory as it was."""
        self.held = True

    def release(self) -> None:
        self.held = False
        if self._pending:
            self._pending = False
            self.write_manifest()

    def write_manifest(self) -> None:
        if self.held:
            self._pending = True
            return
        instant()
        atomic_write_json(self.out / MANIFEST, self.manifest)
        instant()

    def path(self, name: str) -> Path:
        return self.out / name


class Stage:
    """One stage: what it reads and writes, the options it depends on, its one job.

    ``prepare`` sets up what the key needs (it runs whether or not the stage is skipped); ``run``
    does the work and writes ``writes``; ``load`` reads its outputs into the state for the stages
    after it (after ``run`` or in place of it). ``always`` stages have no key and run every time
    (``evaluate``, ``report``); ``distributed`` ones run on every torchrun rank."""

    name = ""
    command = ""  # the CLI command that runs it (dfkd-edge COMMAND DIR)
    always = False
    distributed = False
    record = True  # an ``always`` stage with files of its own goes into the manifest

    def applies(self, s) -> bool:
        return True

    def prepare(self, s) -> None:
        pass

    def params(self, s) -> dict:
        return {}

    def reads(self, s) -> list[str]:
        return []

    def external(self, s) -> list[str]:
        return []

    def writes(self, s) -> list[str]:
        return []

    def run(self, s) -> None:
        raise NotImplementedError

    def load(self, s) -> None:
        pass

    def extra(self, s) -> dict:
        """More for the stage's manifest record (what ``load`` needs when the stage is skipped)."""
        return {}

    def after_distributed(self, s) -> None:
        """(distributed stages) The command's last distributed stage has run: put back what this stage moved for
        the distributed part (the stages after it run on the leader alone)."""

    def hint(self, out) -> str:
        """The command that runs this stage in ``out`` (synthesize starts a run: it takes the teacher)."""
        if self.command == "synthesize":
            return f"dfkd-edge synthesize TEACHER --out {out} --resume"
        return f"dfkd-edge {self.command} {out}"


@dataclass(slots=True)
class State:
    """What the stages hand each other in memory. Every field is declared here (a stage cannot hand over
    anything else); the files a stage writes are the contract, and each field that a later stage's result
    depends on is also written by the stage that decided it (teacher.json, transfer_set.npz, student.json,
    calibration.json, ...), so a later command reloads it instead of deciding again."""

    # the run (flows._state)
    cfg: ConvertConfig
    run: Run
    dist: Dist
    compute: Compute
    threads: int  # the leader's thread count for evaluation and latency
    files: Artifacts  # the names of the student's files (convert) or the user's model's (quantize)
    multi: bool = False  # several teachers
    t_all: float = 0.0  # perf_counter at the start, for the report's total
    stage_key: str | None = None  # the key of the stage running now
    probe: Any = None  # what one sample costs the teacher here (dfkd_edge.cost.Probe), recorded in the manifest
    plan: dict | None = None  # each stage's expected seconds and memory (dfkd_edge.plan), in the manifest
    # inspect: the teacher, what was read from it and what it decides (teacher.json)
    teacher: Any = None  # Teacher, or Ensemble for several teachers
    spec: TeacherSpec | None = None
    eval_xy: tuple | None = None  # (x, y) of --eval-data
    few_shot: tuple | None = None  # (x, y) of --few-shot-data
    calib_real: Any = None  # quantize's --calib-data inputs
    method: str | None = None  # the synthesis method (auto resolved)
    auto_why: str | None = None  # why auto chose it
    recipe: dict | None = None  # the student's recipe (family, width, ...)
    multihead: bool = False  # CDFKD-MFS: the student has one header per teacher
    # synthesize (transfer_set.npz)
    synth_cfg: dict | None = None
    synth: Synthesizer | None = None
    scaled: bool = False  # synthesis ran on compute's device (the teacher goes back to the CPU after it)
    uses_vkd: bool = False  # --distill vkd | kd+vkd with a transfer-set method
    ts: TransferSetFile | None = None
    x_train: Any = None
    l_train: Any = None
    x_hold: Any = None
    l_hold: Any = None
    virtual_set: TransferSetFile | None = None  # --vkd-transfer virtual
    # distill, aggregate, evaluate
    aggregation: dict | None = None  # CDFKD-MFS's headers' aggregation (aggregation.json)
    student: Any = None  # the student module (student.pt)
    student_doc: dict | None = None  # student.json
    distillation: dict | None = None
    multi_teacher: dict | None = None
    quality: dict | None = None
    calibration_sources: list | None = None  # quantize: the sources side by side
    # build, profile, report
    built: dict | None = None  # the TensorRT targets' artifacts
    profiles: list | None = None  # the targets' device profiles
    rows: list | None = None  # latency rows
    estimates: list | None = None
    written: list | None = None  # the report's files
    report: dict | None = None


def run_stages(run: Run, s: State, stages: list[Stage], require: set[str] = frozenset(), announce=None) -> list[str]:
    """Run ``stages`` in order, skipping finished ones. A stage named in ``require`` must already be
    finished (a stage command's inputs): if it is not, UserError names the command to run first.
    ``announce(stage, ran)`` is told what each stage did (the stage commands print it). Returns the
    names of the keyed stages that ran."""
    ran = []
    for st in stages:
        if not st.applies(s):
            continue
        st.prepare(s)
        t0 = time.perf_counter()
        if st.always:
            run.release()
            st.run(s)
            if st.record:
                run.stage(st.name, time.perf_counter() - t0, st.writes(s), reads=st.reads(s))
            else:
                run.timings[st.name] = round(time.perf_counter() - t0, 3)
        else:
            key = run.key(st.params(s), st.reads(s), st.external(s))
            done = run.finished(st.name, key)
            if not done and st.name in require:
                raise UserError(_missing(run, st))
            if not done:
                s.stage_key = key
                run.release()
                st.run(s)
                run.stage(st.name, time.perf_counter() - t0, st.writes(s), key, st.reads(s), st.extra(s))
                mark_stale(run, st.name)
                ran.append(st.name)
            if announce:
                announce(st, not done)
        st.load(s)
        _after(run, s, st, stages)
    run.release()
    partial = run.path(PARTIAL)
    if partial.is_dir() and not any(partial.iterdir()):
        partial.rmdir()
    return ran


def _after(run: Run, s: State, st: Stage, stages: list[Stage]) -> None:
    """Past the last distributed stage the followers' part is over: the distributed stages put back what they
    moved, the followers are told, and the thread count goes back to what the leader's stages use."""
    rest = stages[stages.index(st) + 1:]
    if st.distributed and not any(o.distributed and o.applies(s) for o in rest):
        for o in stages:
            if o.distributed and o.applies(s):
                o.after_distributed(s)
        s.dist.command("done")
        torch.set_num_threads(s.threads)


def _missing(run: Run, st: Stage) -> str:
    prev = run.previous.get(st.name)
    if prev and prev.get("stale"):
        why = f"the {st.name} stage is stale ({prev['stale']})"
    elif prev:
        why = f"the {st.name} stage is out of date (its inputs or options changed since it ran)"
    else:
        why = f"the {st.name} stage has not run in {run.out}"
    return f"{why}; run `{st.hint(run.out)}` first"


def mark_stale(run: Run, name: str) -> None:
    """Every stage recorded after ``name`` that reads, directly or through others, what ``name`` wrote
    is stale. (``convert`` starts a fresh manifest, so only a stage command, which carries the
    earlier records over, finds any.)"""
    stages = run.manifest["stages"]
    order = list(stages)
    if name not in stages:
        return
    dirty = set(stages[name].get("files", {}))
    changed = False
    for other in order[order.index(name) + 1:]:
        rec = stages[other]
        if dirty & set(rec.get("reads", [])):
            rec["stale"] = f"{name} ran again after it"
            dirty |= set(rec.get("files", {}))
            changed = True
    if changed:
        run.write_manifest()
