"""inspect: load the teacher(s), the eval and few-shot data; read the input domain; choose the
student recipe and the synthesis method; write teacher.json. The teacher is loaded every time (the
stages after it need it); the domain is fitted only when the teacher or the domain options changed."""

from __future__ import annotations

import contextlib
from dataclasses import asdict

from dfkd_edge.data.evaldata import load_eval_data, load_inputs
from dfkd_edge.distill.multi import multi_student_width
from dfkd_edge.domain import InputDomain, infer_domain, user_domain
from dfkd_edge.ensemble import Ensemble
from dfkd_edge.errors import PipelineError, UserError
from dfkd_edge.export.onnx_export import check_parity
from dfkd_edge.export.onnx_model import check_onnx_model
from dfkd_edge.io import atomic_write_json, read_if_made_from
from dfkd_edge.models import create_student
from dfkd_edge.models.students import RANK_FAMILIES, WIDTHS
from dfkd_edge.student_choice import DeviceTimer, choose_for_latency
from dfkd_edge.targets.profile import TargetProfile, load_profile
from dfkd_edge.targets.remote import Remote
from dfkd_edge.runfiles import PARTIAL, STUDENT_CHOICE_JSON, TEACHER_JSON
from dfkd_edge.runner import Stage
from dfkd_edge.stages.export import shipped_module
from dfkd_edge.synthesis import METHODS, resolve_method
from dfkd_edge.synthesis.base import MULTI_METHOD, choose_auto
from dfkd_edge.teacher import load_teacher
from dfkd_edge.version import __version__


class Inspect(Stage):
    """Keyed on the teacher files and the input-domain options: a finished inspect's domain (the
    exact values, kept in its manifest record) is reused instead of fitted again (seconds per run)."""

    name, command = "inspect", "synthesize"

    def prepare(self, s) -> None:
        with _agreeing(s.dist):
            s.teacher, s.eval_xy = load_teachers(s.cfg), None
            if s.cfg.eval_data:  # before the domain fit: a file that does not fit is refused at once

                s.eval_xy = load_eval_data(s.cfg.eval_data, s.teacher.spec.input_shape, s.teacher.spec.num_classes)
        s.spec = s.teacher.spec

    def params(self, s) -> dict:
        c = s.cfg
        return {"input_shape": c.input_shape, "factory": c.factory, "input_range": c.input_range,
                "input_mean": c.input_mean, "input_std": c.input_std, "seed": c.seed}

    def external(self, s) -> list[str]:
        return s.cfg.teacher_paths

    def writes(self, s) -> list[str]:
        return [TEACHER_JSON]

    def extra(self, s) -> dict:
        return {"input_domain": asdict(s.teacher.domain)}

    def run(self, s) -> None:
        with _agreeing(s.dist):
            set_domain(s.teacher, s.cfg)
        members = [t.spec.to_dict() for t in s.teacher.members] if s.multi else None
        atomic_write_json(s.run.path(TEACHER_JSON), {**s.spec.to_dict(), "input_domain": s.teacher.domain.to_dict(),
                                                     **({"members": members} if members else {})})

    def load(self, s) -> None:
        with _agreeing(s.dist):
            if s.teacher.domain is None:  # skipped: the domain its finished run fitted

                _put_domain(s.teacher, InputDomain.from_dict(s.run.manifest["stages"][self.name]["input_domain"]))
            decide(s)
        s.dist.agree(None)


def decide(s) -> None:
    """What the stages after inspect key on, decided from the options and what was read from the teacher, before
    minutes of synthesis (a bad ``--student`` or ``--method`` fails here): the synthesis method and, for
    ``auto``, why (the synthesize stage records both in its manifest record, transfer_set.npz holds the method);
    the student's recipe (student.json and the distill stage's key hold it); for CDFKD-MFS the multi-header
    recipe and the few-shot samples."""
    cfg = s.cfg
    s.method, s.auto_why = resolve_method(cfg.method), None
    if cfg.method == "auto":
        s.method, s.auto_why = choose_auto(s.teacher, few_shot=bool(cfg.few_shot_data))
    s.multihead = s.method == MULTI_METHOD  # several teachers, one header each (CDFKD-MFS)
    # the student is chosen (and validated) before minutes of synthesis, built later; for several
    # teachers the one student of the largest
    params = s.teacher.largest_params if s.multi else s.spec.num_params
    width, name, choice = cfg.width, cfg.student, None
    if s.multihead and (cfg.max_latency_ms is not None or cfg.student_factory):
        raise UserError("CDFKD-MFS trains a multi-header student of one of the built-in families, sized by the "
                        "teachers' parameters: leave out --max-latency-ms and --student-factory")
    if cfg.max_latency_ms is not None:
        choice = s.dist.from_leader(lambda: student_for_latency(s))
        name, width = choice["chosen"]["family"], choice["chosen"]["width"]
    _, s.recipe = create_student(name, s.spec.input_shape, s.spec.num_classes, params, width,
                                 None if s.multihead else s.teacher.domain, factory=cfg.student_factory)
    if choice is not None:
        s.recipe["chosen_for"] = choice
    s.few_shot = None
    if s.multihead:
        s.recipe = multi_recipe(s.recipe, s.teacher, cfg)
        if cfg.few_shot_data:
            s.few_shot = load_eval_data(cfg.few_shot_data, s.spec.input_shape, s.spec.num_classes)


def student_for_latency(s) -> dict:
    """--max-latency-ms's choice (dfkd_edge.student_choice), kept in student_choice.json with what it was made
    from: a resumed run reuses it instead of timing every candidate again (minutes on a device), so the student it
    was distilling stays the same."""
    cfg = s.cfg
    profile = latency_target(cfg)
    families = RANK_FAMILIES[len(s.spec.input_shape)] if cfg.student == "auto" else (cfg.student,)
    made_from = {"input_shape": list(s.spec.input_shape), "num_classes": s.spec.num_classes, "target": profile.name,
                 "power_mode": profile.mode, "max_latency_ms": cfg.max_latency_ms, "families": list(families),
                 "remote": cfg.latency_remote, "version": __version__}
    path = s.run.path(STUDENT_CHOICE_JSON)
    kept = read_if_made_from(path, made_from)
    if kept is not None:
        s.run.progress.message(f"student choice: reusing {STUDENT_CHOICE_JSON} (the same limit, target and teacher)")
        return kept["choice"]
    timer = None
    if cfg.latency_remote:
        timer = DeviceTimer(profile, Remote(cfg.latency_remote, cfg.ssh_config), cfg.remote_python, cfg.trtexec,
                            memo=s.run.path(PARTIAL) / "student_choice_measured.json", made_from=made_from)
    how = "measured on " + cfg.latency_remote if timer else "estimated"
    with s.run.progress.task(f"student candidates (int8 latency, {how})", total=len(families) * len(WIDTHS)) as t:
        choice = choose_for_latency(s.spec.input_shape, s.spec.num_classes, profile, cfg.max_latency_ms, families,
                                    progress=lambda _: t.advance(1), timer=timer)
    atomic_write_json(path, {"made_from": made_from, "choice": choice})
    if timer is not None:
        timer.memo.unlink(missing_ok=True)  # the measurements are in the choice now
    return choice


def latency_target(cfg) -> TargetProfile:
    """The target --max-latency-ms is held on: --latency-on, else the first --target that is a device."""
    if cfg.latency_on:
        return load_profile(cfg.latency_on)
    devices = [p for p in (load_profile(t) for t in cfg.targets) if not p.is_host]
    if not devices:
        raise UserError("--max-latency-ms needs a device to hold the student's latency on: add --target (e.g. "
                        "jetson-orin-nano) or --latency-on")
    return devices[0]


class InspectModel(Inspect):
    """quantize's inspect: the user's model and its input domain, and the method that synthesizes its
    calibration set (an input optimiser: ``auto`` is the inversion); no student."""

    def prepare(self, s) -> None:
        super().prepare(s)
        if s.teacher.static_batch is not None:  # before minutes of synthesis
            raise UserError(f"{s.spec.path} is a torch.export program with a fixed batch of {s.teacher.static_batch}; "
                            "its ONNX and int8 models need a dynamic batch: export it with dynamic_shapes="
                            "({0: torch.export.Dim('batch')},)")
        if s.cfg.onnx_model:  # before minutes of synthesis: an ONNX file the int8 path cannot take

            check_onnx_model(s.cfg.onnx_model, s.spec.input_shape, s.spec.num_classes)
        s.calib_real = None
        if s.cfg.calib_data:  # before minutes of synthesis: a file that does not fit is refused at once

            s.calib_real = load_inputs(s.cfg.calib_data, s.spec.input_shape)

    def load(self, s) -> None:
        if s.teacher.domain is None:
            _put_domain(s.teacher, InputDomain.from_dict(s.run.manifest["stages"][self.name]["input_domain"]))
        decide_model(s)
        if s.cfg.onnx_model:
            _same_network(s)


def decide_model(s) -> None:
    """quantize's decisions: the method that synthesizes the calibration set (an input optimiser) and, for
    ``auto``, why (recorded as :func:`decide` says); no student."""
    s.method, s.auto_why = resolve_method(s.cfg.method), None
    if s.cfg.method == "auto":
        s.method, s.auto_why = choose_auto(s.teacher)
    cls = METHODS.get(s.method)
    if cls is None or cls.needs_student:
        raise UserError(f"--method {s.method} trains a student; quantize synthesizes its calibration set with "
                        "auto, deepinversion, soft-target or gaussian")
    s.multihead, s.recipe, s.few_shot = False, None, None


def _same_network(s) -> None:
    """An ONNX MODEL and its --source must compute the same logits: checked on the input domain's noise
    before minutes of synthesis (export checks it again on held-out synthetic samples)."""
    import torch

    x = s.teacher.domain.draw(32, s.spec.input_shape, torch.Generator().manual_seed(s.cfg.seed)).numpy()
    try:
        check_parity(shipped_module(s.teacher), s.cfg.onnx_model, x.astype("float32"))
    except PipelineError as e:
        raise UserError(f"{s.cfg.onnx_model} and --source {s.cfg.teacher} do not compute the same logits ({e}); give "
                        "the PyTorch network the ONNX file was exported from") from None


@contextlib.contextmanager
def _agreeing(dist):
    """A failure here is told to the torchrun followers waiting on the leader's inspect."""
    try:
        yield
    except Exception as e:
        dist.agree(e)
        raise


def load_teachers(cfg):
    """The teacher, or the ensemble of several; its input domain set (dfkd_edge.domain)."""
    if cfg.more_teachers:
        return Ensemble([load_teacher(p, cfg.input_shape, cfg.factory) for p in cfg.teacher_paths])
    return load_teacher(cfg.teacher, cfg.input_shape, cfg.factory)


def set_domain(teacher, cfg) -> None:
    """The input domain every method synthesizes in (dfkd_edge.domain): the user's, else read from the
    teacher; set on the teacher (and on each member of several)."""
    user = user_domain(teacher.spec.input_shape, cfg.input_mean, cfg.input_std, cfg.input_range)
    _put_domain(teacher, infer_domain(teacher, user, seed=cfg.seed))


def _put_domain(teacher, domain) -> None:
    teacher.domain = domain
    for t in getattr(teacher, "members", []):
        t.domain = domain


def multi_recipe(single: dict, ensemble, cfg) -> dict:
    """The multi-header student for these teachers: the family ``--student`` chose, one header per
    teacher, the widest width within 1/4 of the largest teacher's parameters (or ``--width``)."""
    spec = ensemble.spec
    n = len(ensemble.members)
    width = cfg.width or multi_student_width(spec.input_shape, spec.num_classes,
                                             [t.spec.num_params for t in ensemble.members], n, single["name"])
    return {"name": "multihead", "family": single["name"], "input_shape": list(spec.input_shape),
            "num_classes": spec.num_classes, "width": int(width), "headers": n, "aggregation": "mean"}
