"""The run's plan: each stage's expected seconds and peak memory on this machine, before they are spent.

Each figure is what the stage repeats (synthesis steps x samples, epochs x samples, calibration and check
passes, latency runs) times what one sample costs, probed on this machine (dfkd_edge.cost): the teacher's
probe for synthesis, the teacher's forward pass inside distillation, the student's probe for distillation, and
for the stages after it the shipped model's passes in PyTorch and under ONNX Runtime (its fp32 ONNX timed by
the probe where it exports, and each int8 format of it quantized and timed the same way; where the probe could not,
int8 passes at ``INT8_FORWARD`` and ``INT8_CHECK_FORWARD`` of fp32's). Stages whose work does not follow these
counts (a method that trains a generator, the guardrail when it triggers) are planned without that part and
say so. The run records
the plan in its manifest (``plan``) and the report sets each stage's seconds against it.
"""

from __future__ import annotations

import copy

from dfkd_edge.compute import Compute
from dfkd_edge.config import ConvertConfig, budget_seconds
from dfkd_edge.cost import Probe, probe, saved_per_sample, weights_of
from dfkd_edge.export.onnx_export import PARITY_EACH
from dfkd_edge.export.quantize import P50_BUDGET_S, holdout_floor
from dfkd_edge.models import create_student
from dfkd_edge.models.students import build_from_recipe
from dfkd_edge.progress import duration
from dfkd_edge.quality import BN_CHECK_SAMPLES, PROBE_SAMPLES
from dfkd_edge.synthesis import METHODS
from dfkd_edge.synthesis.base import InputOptimizer, choose_auto, create_synthesizer
from dfkd_edge.synthesis.gaussian import GaussianSynthesizer
from dfkd_edge.targets import load_profile
from dfkd_edge.targets.host import LONG_CALL_CAP, LONG_MIN_CALLS

#: the host's latency rows: these batch sizes, interleaved in this many rounds, at least this many timed calls and
#: this many warm-up calls (the first round; 2 after it) per runner and round, as dfkd_edge.stages.profile runs them
LATENCY_BATCHES, LATENCY_ROUNDS, LATENCY_MIN_RUNS, LATENCY_WARMUP = (1, 32), 5, 10, 10

#: autograd may keep at most this many bytes of one synthesis batch, or of one part of a distillation batch, between
#: its forward and backward passes: the synthesis batch is cut to fit (``synthesis_batch``), the distillation batch
#: run in parts that fit (``distill_micro_batch``). It depends on the model alone, so a run's results are the
#: same on every machine; 1.25 GiB holds every zoo teacher's 256-sample batch (the largest 4.84 MiB a sample at
#: 32x32), and 10 samples of ResNet-50 at 224x224. At 2 GiB quantize of MobileNetV2 at 224x224 peaked at 4.27 GB,
#: at 1.5 GiB 3.18 GB, and ResNet-50 at 1.5 GiB at 4,003 MiB.
SAVED_BYTES = 5 << 28
#: seconds a stage spends whatever its size (loading, writing files, ONNX export)
FIXED_S = 0.5
#: where the probe did not time int8 (``Probe.int8_forward_s``), an int8 pass over a sample of the shipped int8 model
#: costs this share of the fp32 probe's forward pass (int8 ran 1.9x-3.2x faster than fp32 at batch 1 on the
#: reference models, docs/benchmarks.md)
INT8_FORWARD = 0.5
#: where the probe did not time int8, calibration's check passes over each candidate format, as a share of the fp32
#: forward pass: the medians on the
#: six reference networks at 224x224 (u8s8 Q/DQ 0.25-1.05, QOperator 0.26-0.79, s8s8 Q/DQ 0.52-2.88:
#: benchmarks/calibrate_cost.py; docs/benchmarks.md, "What does one calibration cost?")
INT8_CHECK_FORWARD = {"qdq-u8s8": 0.42, "qoperator-u8s8": 0.33, "qdq-s8s8": 1.37}
#: seconds onnxruntime's quantize_static spends rewriting the graph, whatever the samples: the median on the six
#: reference networks (0.5-2.6 s a call)
QUANTIZE_CALL_S = 1.9
#: seconds onnxruntime's quant_pre_process spends per byte of the ONNX file (0.010-0.023 s per MiB, median 0.019,
#: on the six reference networks)
PRE_PROCESS_S_PER_BYTE = 0.019 / 2**20
#: a calibration pass costs each sample its fp32 forward pass and this many seconds per byte of the tensors its
#: nodes output (every one is an output then: 0.25-0.78 ms per MiB, median 0.39, on the six reference networks),
#: and ``CALIBRATION_PASS_S`` once (0.2-2.1 s, median 0.9)
CALIBRATION_S_PER_BYTE = 0.39e-3 / 2**20
CALIBRATION_PASS_S = 0.9


def synthesis_batch(requested: int, saved_bytes: int | None) -> int:
    """``--synth-batch``, cut so that one batch's saved activations (``saved_bytes`` per sample) fit
    ``SAVED_BYTES``."""
    if not saved_bytes or saved_bytes <= 0:
        return requested
    return max(1, min(requested, SAVED_BYTES // saved_bytes))


def distill_micro_batch(student, input_shape: tuple[int, ...], batch: int) -> int:
    """The rows of a distillation batch run at once (dfkd_edge.distill.distill's ``micro_batch``): ``batch`` cut as
    a synthesis batch is, from what ``student`` keeps per sample on the CPU (measured on a copy: its BatchNorm
    statistics do not move)."""
    return synthesis_batch(batch, saved_per_sample(copy.deepcopy(student), tuple(input_shape)))


def synthesis_loop(method: str, teacher, cfg: ConvertConfig, batch: int, compute=None):
    """``loop(steps)`` for dfkd_edge.cost.probe: one batch of ``method``'s synthesis of ``batch`` samples from
    ``teacher`` with ``steps`` steps, on a synthesizer of its own (the run's does not move); None for a method
    that does not optimise inputs (its plan does not follow the teacher's passes)."""
    cls = METHODS.get(method)
    if cls is None or not issubclass(cls, InputOptimizer):
        return None

    def run(steps: int) -> None:
        synth = create_synthesizer(method, teacher, batch_size=batch, seed=cfg.seed, iterations=steps,
                                   start=cfg.synth_start, jitter=cfg.synth_jitter, bn_units=cfg.synth_bn_units)
        synth.compute = compute or Compute()
        synth.sample(batch)

    return run


def _synthesis(cfg: ConvertConfig, method: str, teacher: Probe, student: Probe | None) -> tuple[float | None, str]:
    n = cfg.samples + cfg.holdout
    cls = METHODS.get(method)
    if cls is not None and issubclass(cls, InputOptimizer):
        batches = -(-n // synthesis_batch(cfg.synth_batch, teacher.saved_bytes))
        return (n * (cfg.iterations * teacher.train_s + teacher.forward_s) + batches * teacher.setup_s,
                f"{n} samples x {cfg.iterations} steps")
    if cls is GaussianSynthesizer:
        return n * teacher.forward_s, f"{n} samples, one forward pass each"
    return None, f"--method {method} trains a generator: not planned"


def plan(cfg: ConvertConfig, flow: str, method: str, teacher: Probe, student: Probe | None = None,
         eval_rows: int = 0, distill_twice: bool = False) -> dict:
    """``{"stages": [{"stage", "seconds", "peak_bytes", "work"}], "total_s"}`` for ``flow`` ("convert" or
    "quantize"); ``seconds`` None where a stage's work does not follow the probes."""
    rows = []

    def add(stage: str, seconds: float | None, work: str, peak: int | None = None) -> None:
        rows.append({"stage": stage, "seconds": None if seconds is None else round(seconds + FIXED_S, 1),
                     "peak_bytes": peak, "work": work})

    synth_s, synth_work = _synthesis(cfg, method, teacher, student)
    batch = synthesis_batch(cfg.synth_batch, teacher.saved_bytes)
    add("synthesize", synth_s, f"{synth_work} in batches of {batch}", batch * teacher.saved_bytes)
    shipped = teacher
    if flow == "convert":
        shipped = student or teacher
        if student is not None and not getattr(METHODS.get(method), "needs_student", False):
            per_epoch = cfg.samples * (student.train_s + teacher.forward_s)
            part = synthesis_batch(cfg.kd.batch_size, student.saved_bytes)
            add("distill", cfg.kd.epochs * per_epoch, f"{cfg.kd.epochs} epochs x {cfg.samples} samples" + (
                f", batches of {cfg.kd.batch_size} run in parts of {part}" if part < cfg.kd.batch_size else ""),
                part * student.saved_bytes)
            if distill_twice:
                add("distill-kd-baseline", cfg.kd.epochs * per_epoch, "the same, plain KD for comparison")
    parity = min(PARITY_EACH, cfg.holdout) + PARITY_EACH
    add("export", (shipped.export_s or 0.0) + parity * (shipped.forward_s + shipped.ort_s),
        f"ONNX, then parity with PyTorch on {parity} samples")
    formats, f, f8 = len(cfg.calib.formats), shipped.ort_s, shipped.ort_s * shipped.int8_share(None, INT8_FORWARD)
    add("calibrate", calibration_seconds(cfg, shipped, tuple(cfg.calib.formats)),
        f"{cfg.calib.samples} calibration samples, then {formats} formats x {cfg.holdout} check samples; "
        "the guardrail, when it triggers, adds a quantization and a check pass per layer it tries")
    checked = eval_rows or cfg.holdout
    if flow == "quantize":
        sources = 1 + bool(cfg.calib_data)
        add("calibration-sources",
            sources * calibration_seconds(cfg, shipped) + checked * (f + (1 + sources) * f8),
            f"{sources} other calibration source(s), each int8 model checked on {checked} samples")
    versions = {p.tensorrt_version for p in (load_profile(t) for t in cfg.targets)
                if p.engine == "tensorrt" and p.tensorrt[0] <= 10}
    if any(load_profile(t).engine == "tensorrt" for t in cfg.targets):
        add("build", calibration_seconds(cfg, shipped, timed=False) + len(versions) * cfg.calib.samples * f,
            f"the TensorRT Q/DQ model and {len(versions)} calibration cache(s) from {cfg.calib.samples} samples; "
            "the guardrail, when it triggers, adds a quantization and a check pass per layer it tries")
    onnx = [f, f8]  # the fp32 and the int8 ONNX model under ONNX Runtime
    runners = [teacher.forward_s, student.forward_s, *onnx] if (
        flow == "convert" and student is not None) else [teacher.forward_s, *onnx]
    add("profile", latency_seconds(runners, cfg.latency_budget_s),
        f"latency: {len(runners)} runners x batches {' and '.join(map(str, LATENCY_BATCHES))}")
    add("evaluate", evaluate_seconds(cfg, teacher, student if flow == "convert" else None, f, f8, eval_rows,
                                     distill_twice),
        f"{cfg.holdout} held-out samples x ONNX fp32 and int8" + (f", {eval_rows} eval samples" if eval_rows else "")
        + ", the verdict's teacher and student passes")
    add("report", 0.0, "files")
    known = [r["seconds"] for r in rows if r["seconds"] is not None]
    return {"stages": rows, "total_s": round(sum(known), 1),
            "complete": len(known) == len(rows)}


def evaluate_seconds(cfg: ConvertConfig, teacher: Probe, student: Probe | None, ort_s: float, int8_s: float,
                     eval_rows: int, distill_twice: bool) -> float:
    """The evaluate stage (dfkd_edge.stages.evaluate, evaluate_model): the shipped ONNX model in fp32 and int8 on
    the held-out samples and the eval rows, the teacher on the eval rows and on the BatchNorm check, and in convert
    the teacher and the student (and the plain-KD baseline) on the verdict's probe set."""
    onnx = ort_s + int8_s
    s = cfg.holdout * onnx + eval_rows * (teacher.forward_s + onnx)
    s += min(BN_CHECK_SAMPLES, cfg.holdout) * teacher.forward_s
    if student is not None:
        s += PROBE_SAMPLES * (teacher.forward_s + (1 + distill_twice) * student.forward_s)
    return s


def calibration_seconds(cfg: ConvertConfig, shipped: Probe, formats: tuple[str, ...] | None = None,
                        timed: bool = True) -> float:
    """One calibration (dfkd_edge.export.quantize.calibrate) of the network ``shipped`` probed: onnxruntime's
    pre-processing (by the size of its ONNX file), one calibration pass over the calibration samples (its ranges
    serve every format; each sample costs a forward pass and the copy of every tensor its nodes output), fp32 on
    the check samples, then per format a quantization and an int8 pass over the check samples at the speed the probe
    timed (``formats``; None: the one format shipped, the fastest timed); ``timed``: fp32 and each format are timed
    at batch 1 to pick the fastest. Where the probe has no ONNX figures, the activations autograd keeps stand in
    for the tensors."""
    f = shipped.ort_s
    tensors = shipped.activation_bytes if shipped.activation_bytes is not None else shipped.saved_bytes
    shares = ([shipped.int8_share(fmt, INT8_CHECK_FORWARD.get(fmt, INT8_FORWARD)) for fmt in formats] if formats
              else [shipped.int8_share(None, INT8_FORWARD)])
    return ((shipped.onnx_bytes or 0) * PRE_PROCESS_S_PER_BYTE
            + CALIBRATION_PASS_S + cfg.calib.samples * (f + tensors * CALIBRATION_S_PER_BYTE)
            + cfg.holdout * f + sum(cfg.holdout * f * share + QUANTIZE_CALL_S for share in shares)
            + timed * (len(shares) + 1) * P50_BUDGET_S)


def against(p: dict | None, timings: dict) -> dict | None:
    """The plan set against what each stage took (the report's ``plan``): per stage planned and actual seconds
    and their ratio, and the same for the planned stages together. None without a plan; a stage skipped as
    finished (0 s) is left out."""
    if not p:
        return None
    rows = []
    for r in p["stages"]:
        actual = timings.get(r["stage"])
        if r["seconds"] is None or actual is None or actual == 0.0:
            continue
        rows.append({"stage": r["stage"], "planned_s": r["seconds"], "actual_s": round(actual, 1),
                     "actual_over_planned": round(actual / r["seconds"], 2)})
    planned, actual = sum(r["planned_s"] for r in rows), sum(r["actual_s"] for r in rows)
    return {"stages": rows, "planned_s": round(planned, 1), "actual_s": round(actual, 1),
            "actual_over_planned": round(actual / planned, 2) if planned else None, "probe": p.get("probe"),
            "budget": p.get("budget"), "budget_lines": budget_lines(p["budget"]) if p.get("budget") else []}


def latency_seconds(per_sample_s: list[float], budget_s: float) -> float:
    """The host's latency rows: each runner (its seconds per sample) at each batch, in rounds of warm-up and timed
    calls bounded as dfkd_edge.targets.host.time_runner bounds them."""
    round_budget = budget_s * len(per_sample_s) / LATENCY_ROUNDS
    cap = LONG_CALL_CAP * round_budget
    total = 0.0
    for batch in LATENCY_BATCHES:
        for per in per_sample_s:
            call = max(batch * per, 1e-6)
            for k in range(LATENCY_ROUNDS):
                warm = (LATENCY_WARMUP if k == 0 else 2) * call
                warm = min(warm, max(cap, LONG_MIN_CALLS * call) + call)
                timed = min(max(LATENCY_MIN_RUNS * call, round_budget), max(cap, LONG_MIN_CALLS * call) + call)
                total += warm + timed
    return total


#: ``--time-budget``'s levers in the order they are cut, each to its floor before the next moves: synthesis steps
#: first (quantize's 50 calibrated no worse than convert's 200 on the zoo, docs/benchmarks.md), then distillation
#: epochs, then samples (the transfer set's size gained on 14 of 16 zoo teachers: the last to give up); quantize's
#: held-out check set last, to ``holdout_floor``. A floor of None is that function's.
LEVERS = {"convert": (("iterations", 50), ("epochs", 30), ("samples", 512)),
          "quantize": (("iterations", 10), ("samples", 64), ("holdout", None))}
#: where convert's floors are still over the budget (a 224x224 teacher on a CPU: ResNet-50's floors plan at about
#: two hours on 2 cores), the same levers cut again, in the same order, down to these, and the check set last:
#: the run keeps the budget the user gave and its verdict is at best doubtful (``BELOW_FLOORS``). quantize stops
#: at its floors (fewer calibration or check samples are not judged).
LAST_RESORT = {"convert": (("iterations", 10), ("epochs", 5), ("samples", 64), ("holdout", None)), "quantize": ()}
#: the verdict's reason when the budget cut below the floors
BELOW_FLOORS = ("the time budget cut synthesis and distillation below the floors measured to give a usable student "
                "({cuts}); give a longer --time-budget")


def _get(cfg: ConvertConfig, lever: str) -> int:
    return cfg.kd.epochs if lever == "epochs" else getattr(cfg, lever)


def _set(cfg: ConvertConfig, lever: str, value: int, flow: str) -> None:
    if lever == "epochs":
        cfg.kd.epochs = value
    else:
        setattr(cfg, lever, value)
        if lever == "samples" and flow == "quantize":
            cfg.calib.samples = value  # quantize's synthesized set is its calibration set


def fit_budget(cfg: ConvertConfig, flow: str, budget_s: float, spent_s: float, planned) -> dict:
    """Cut ``cfg``'s levers (``LEVERS``, in place) until ``planned(cfg)`` (a plan's total seconds) plus ``spent_s``
    fits ``budget_s``: each lever to its floor before the next moves, the last one moved to the largest value that
    fits. Where the floors are over, convert cuts again to ``LAST_RESORT`` (``below_floors`` names what went
    under a floor). Returns ``{budget_s, requested, chosen, fits, below_floors}``; ``fits`` False when every lever
    at its last floor is still over (the run goes on there, and says so)."""
    names = list(dict.fromkeys(name for name, _ in LEVERS[flow] + LAST_RESORT[flow]))
    requested = {name: _get(cfg, name) for name in names}

    def fits() -> bool:
        return spent_s + planned(cfg) <= budget_s

    _cut(cfg, flow, LEVERS[flow], fits)
    floors = {name: _get(cfg, name) for name in names}
    below = not fits() and bool(LAST_RESORT[flow])
    if below:
        _cut(cfg, flow, LAST_RESORT[flow], fits)
    chosen = {name: _get(cfg, name) for name in names}
    return {"budget_s": budget_s, "requested": requested, "chosen": chosen, "fits": fits(),
            "below_floors": {k: v for k, v in chosen.items() if v < floors[k]} if below else {}}


def _cut(cfg: ConvertConfig, flow: str, levers, fits) -> None:
    """Each lever to its floor before the next moves, the last one moved to the largest value that fits."""
    for name, floor in levers:
        if fits():
            return
        floor = holdout_floor(cfg.calib.min_agreement) if floor is None else floor
        hi = _get(cfg, name)
        lo = min(floor, hi)
        _set(cfg, name, lo, flow)
        if not fits():
            continue
        while hi - lo > 1:  # the largest value in [lo, hi] that fits (the plan grows with every lever)
            mid = (lo + hi) // 2
            _set(cfg, name, mid, flow)
            lo, hi = (mid, hi) if fits() else (lo, mid)
        _set(cfg, name, lo, flow)
        return


def below_floors_reason(budget: dict | None) -> str | None:
    """The verdict's reason when ``budget`` (fit_budget's record) cut below the floors; None when it did not."""
    cuts = (budget or {}).get("below_floors")
    return BELOW_FLOORS.format(cuts=", ".join(f"{k} {v}" for k, v in cuts.items())) if cuts else None


def budget_lines(b: dict) -> list[str]:
    changed = [f"{k} {b['requested'][k]} -> {v}" for k, v in b["chosen"].items() if v != b["requested"][k]]
    head = f"time budget {duration(b['budget_s'])}: " + (", ".join(changed) if changed else "the defaults fit")
    below = below_floors_reason(b)
    return [head] + ([f"WARNING: {below}; the verdict will say doubtful at best"] if below else []) + (
        [] if b["fits"] else ["WARNING: over the time budget even with every lever at its floor "
                              f"({', '.join(f'{k} {v}' for k, v in b['chosen'].items())})"])


def student_probe(net, shape: tuple[int, ...], cfg: ConvertConfig, compute=None, most: int | None = None,
                  quick: bool = False) -> Probe:
    """The student's probe at distillation's batch (at most ``most``), cut as a synthesis batch is where its
    activations are large; ``quick``: dfkd_edge.cost.probe's."""
    saved = saved_per_sample(net, shape, compute)
    batch = min(synthesis_batch(cfg.kd.batch_size, saved), cfg.samples, most or cfg.kd.batch_size)
    return probe(net, shape, batch, compute, saved, quick=quick)


#: ``dfkd-edge inspect`` times its probes on at most this many samples (a run times them at its own batches, where
#: a sample can cost more: 32 against 54 ms on MobileNetV2 at 224x224 between 4 and 27 samples)
INSPECT_PROBE_BATCH = 8


def default_plans(teacher, convert_cfg: ConvertConfig, quantize_cfg: ConvertConfig) -> dict:
    """``dfkd-edge inspect``'s plans: the quick probe (dfkd_edge.cost.QUICK) of ``teacher`` (its domain set) and of
    the student ``auto`` would build, on at most ``INSPECT_PROBE_BATCH`` samples, and the plans of ``convert`` and
    ``quantize`` with these configs (their defaults), on the CPU. The runs plan again from probes at their own
    batches."""
    spec = teacher.spec
    shape = tuple(spec.input_shape)
    saved = saved_per_sample(teacher, shape, weights=weights_of(teacher))
    batch = min(synthesis_batch(convert_cfg.synth_batch, saved), convert_cfg.samples + convert_cfg.holdout,
                INSPECT_PROBE_BATCH)
    method, _ = choose_auto(teacher)
    tp = probe(teacher, shape, batch, saved_bytes=saved, loop=synthesis_loop(method, teacher, convert_cfg, batch),
               quick=True)
    _, recipe = create_student("auto", shape, spec.num_classes, spec.num_params, None, teacher.domain)
    sp = student_probe(build_from_recipe(recipe), shape, convert_cfg, most=INSPECT_PROBE_BATCH, quick=True)
    return {"probe": tp.to_dict(), "student_probe": sp.to_dict(), "method": method,
            "convert": _within_budget(convert_cfg, "convert", method, tp, sp),
            "quantize": _within_budget(quantize_cfg, "quantize", method, tp, None)}


def _within_budget(cfg: ConvertConfig, flow: str, method: str, tp: Probe, sp: Probe | None) -> dict:
    """The plan of ``cfg`` once its time budget (when it has one) has cut what it cuts, with ``budget``."""
    limit, budget = budget_seconds(cfg.time_budget), None
    if limit is not None:
        cfg = copy.deepcopy(cfg)
        budget = fit_budget(cfg, flow, limit, 0.0, lambda c: plan(c, flow, method, tp, sp)["total_s"])
    return {**plan(cfg, flow, method, tp, sp), "budget": budget}


def lines(p: dict, probe: Probe) -> list[str]:
    """The plan as a person reads it: one line per stage, then the total."""
    step = "a synthesis step" if probe.loop else "forward+backward"
    ort = "" if probe.ort_forward_s is None else f", {probe.ort_forward_s * 1000:.3g} ms under ONNX Runtime"
    ort += "".join(f", {fmt} " + ("fails" if v is None else f"{v * 1000:.3g} ms")
                   for fmt, v in (probe.int8_forward_s or {}).items())
    out = [f"plan on this machine (probe: {probe.forward_s * 1000:.3g} ms forward, {probe.train_s * 1000:.3g} ms "
           f"{step} per sample on {probe.device}{ort}):"]
    for r in p["stages"]:
        secs = "?" if r["seconds"] is None else duration(r["seconds"])
        mem = f", peak {r['peak_bytes'] / 2**30:.2g} GiB held for the backward" if r["peak_bytes"] else ""
        out.append(f"  {r['stage']:<20} {secs:>7}  {r['work']}{mem}")
    out.append(f"  {'total':<20} {duration(p['total_s']):>7}{'' if p['complete'] else ' and the stages marked ?'}")
    return out
