"""int8 calibration with synthesized samples, through onnxruntime.quantization.

Calibration data: a seeded subset of the transfer set's training part (the teacher's data is
never seen). Static quantization, per-channel weights. Which int8 format is fastest on ONNX
Runtime's CPU provider depends on the model and the CPU (probes here: U8S8 Q/DQ about 3x
faster than fp32 on a ResNet-18, S8S8 Q/DQ slower than fp32; tiny models can be slower in
int8 than fp32 at all), so every candidate format is built and timed, and the fastest one whose
agreement with the fp32 model (``weighted_agreement``: on the check samples fp32 is sure of) is at least
``min_agreement`` (99%) is kept; when none is, the guardrail leaves the most sensitive layers in float until
it holds.
"""

from __future__ import annotations

import functools
import math
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from dfkd_edge.backends import predict
from dfkd_edge.backends.onnxruntime import OrtRunner
from dfkd_edge.transfer_store import take
from dfkd_edge.errors import PipelineError, UserError
from dfkd_edge.progress import NullProgress, Progress, duration
from dfkd_edge.targets.host import time_runner

log = logging.getLogger(__name__)

#: name -> (quant format, activation type, weight type)
CANDIDATES = {
    "qdq-u8s8": ("QDQ", "QUInt8", "QInt8"),
    "qoperator-u8s8": ("QOperator", "QUInt8", "QInt8"),
    "qdq-s8s8": ("QDQ", "QInt8", "QInt8"),
}
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
#: the calibration cache of one calibration set, in the work directory of the call that measures it
RANGE_CACHE = "ranges.json"


@dataclass
class CalibConfig:
    samples: int = 256
    method: str = "minmax"
    formats: tuple[str, ...] = tuple(CANDIDATES)
    per_channel: bool = True
    min_agreement: float = 0.99  # the weighted agreement (``weighted_agreement``) the guardrail holds
    seed: int = 0
    threads: int = 1


#: what the guardrail's records call the measure it holds (``weighted_agreement``)
GUARD_MEASURE = "weighted top-1 agreement on the check samples fp32 is sure of"

#: flips of samples fp32 is sure of the int8 guardrail's threshold must be able to tolerate on its check set
HOLDOUT_TOLERATES = 2


def holdout_floor(min_agreement: float) -> int:
    """The fewest check samples on which ``min_agreement`` tolerates ``HOLDOUT_TOLERATES`` flips (200 at 99%). On
    fewer, one flip fails the threshold (1 of 64 is 98.4%) and the guardrail leaves layers in float to remove
    noise (every layer, on the 22-class MobileNetV2 of docs/benchmarks.md with 64 check samples)."""
    return math.ceil(HOLDOUT_TOLERATES / (1.0 - min_agreement) - 1e-9)


def equal_batch(n: int, most: int = 32) -> int:
    """A batch size that splits ``n`` samples into equal batches: the largest divisor of ``n`` up to
    ``most``, or ``n`` itself (one batch) when that divisor is small. onnxruntime's histogram
    calibrators (entropy, percentile) stack every batch's activations into one array and fail on a
    short last batch (250 samples in batches of 32)."""
    d = max(k for k in range(1, min(n, most) + 1) if n % k == 0)
    return d if d >= most // 4 else n


#: a calibration batch holds at most this many input elements (32 samples up to 3x64x64; 6 at 3x224x224): onnxruntime
#: keeps every intermediate tensor of a batch to take its range, over 2 GB for 32 MobileNetV2 samples at 224x224
READER_ELEMENTS = 1 << 20


def reader_batch(x: np.ndarray, most: int = 32) -> int:
    return max(1, min(most, READER_ELEMENTS // max(1, int(np.prod(x.shape[1:])))))


class _Reader:
    """onnxruntime CalibrationDataReader over an array, in batches of one size (``equal_batch``, at most
    ``reader_batch``)."""

    def __init__(self, name: str, x: np.ndarray, batch: int | None = None) -> None:
        self.name, self.x, self.i = name, x, 0
        self.batch = equal_batch(len(x), batch or reader_batch(x))
        self.end = len(x)

    def get_next(self):
        if self.i >= self.end:
            return None
        b = self.x[self.i:self.i + self.batch]
        self.i += self.batch
        return {self.name: b}

    def rewind(self) -> None:
        self.i = 0

    def __len__(self) -> int:  # in batches: onnxruntime's strided calibration (``calibration_options``)
        return -(-len(self.x) // self.batch)

    def set_range(self, start_index: int, end_index: int) -> None:
        self.i, self.end = start_index * self.batch, min(len(self.x), end_index * self.batch)


def calibration_subset(x, n: int, seed: int) -> np.ndarray:
    """A seeded subset of ``x`` (an array or a row source on disk), in file order."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(x), size=min(n, len(x)), replace=False)
    return np.ascontiguousarray(take(x, np.sort(idx)), dtype=np.float32)


@functools.lru_cache(maxsize=8)
def _input_name_cached(path: str, mtime_ns: int) -> str:
    import onnx

    return onnx.load(path, load_external_data=False).graph.input[0].name


def input_name(path: Path) -> str:
    return _input_name_cached(str(path), Path(path).stat().st_mtime_ns)


@functools.lru_cache(maxsize=1)
def _has_range_cache() -> bool:
    import inspect

    import onnxruntime.quantization as q

    return "calibration_cache_path" in inspect.signature(q.quantize_static).parameters


def range_cache(ranges: Path | None) -> dict:
    """quantize_static's keyword for a calibration cache at ``ranges`` where this onnxruntime has one
    (``calibration_cache_path``: the first call measures the tensor ranges and saves them, the next ones
    load them instead of running the calibration samples through the model again). The ranges depend on
    the model, the samples and the method only, not on the format or the layers left in float, so one
    calibration pass serves every format and every guardrail step; without the keyword each call
    measures them again (the same ranges, slower)."""
    return {"calibration_cache_path": str(ranges)} if ranges is not None and _has_range_cache() else {}


def quantize_one(fp32_path: Path, out_path: Path, calib: np.ndarray, fmt: str, cfg: CalibConfig,
                 exclude: list[str] | None = None, ranges: Path | None = None) -> None:
    """One int8 model of ``fmt``; ``ranges``: the calibration cache of these samples (``range_cache``)."""
    import onnxruntime.quantization as q

    qformat, act, wt = CANDIDATES[fmt]
    method = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
              "percentile": q.CalibrationMethod.Percentile}[cfg.method]
    q.quantize_static(str(fp32_path), str(out_path), _Reader(input_name(fp32_path), calib),
                      quant_format=getattr(q.QuantFormat, qformat), activation_type=getattr(q.QuantType, act),
                      weight_type=getattr(q.QuantType, wt), per_channel=cfg.per_channel,
                      calibrate_method=method, nodes_to_exclude=list(exclude or []), **range_cache(ranges),
                      extra_options=calibration_options(cfg.method))


def preprocessed(fp32_path: Path, work: Path) -> Path:
    """ONNX Runtime's quantization pre-processing (shape inference, graph optimisation) of ``fp32_path``, written
    into ``work``: what every int8 model here is quantized from."""
    from onnxruntime.quantization import quant_pre_process

    pre = Path(work) / f"{Path(fp32_path).stem}-pre.onnx"
    quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=False)
    return pre


def calibration_options(method: str) -> dict:
    """MinMax takes each batch's ranges and merges them (onnxruntime's strided calibration, one batch a stride)
    instead of keeping every batch's tensors to the end: the same ranges, the memory of one batch. The histogram
    methods keep them all: their memory grows with the calibration set."""
    return {"CalibStridedMinMax": 1} if method == "minmax" else {}


def quantizable_nodes(path: Path) -> list[str]:
    return [u[0] for u in sensitivity_units(path) if len(u) == 1]


def probabilities(outputs: np.ndarray) -> np.ndarray:
    """A classifier's outputs as probabilities: rows that already are (non-negative, summing to 1: a model that ends
    in softmax) as they are, logits through softmax."""
    out = np.asarray(outputs, np.float64)
    if out.min() >= 0 and np.allclose(out.sum(1), 1.0, atol=1e-3):
        return out
    e = np.exp(out - out.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


#: a check sample on which fp32 gives its top-1 class at least this probability is one fp32 is sure of: the
#: guardrail judges int8 on those (``weighted_agreement``). Measured (docs/benchmarks.md, "Which measure does the
#: int8 guardrail hold?"): plain int8 that costs no accuracy flipped none of the synthetic ones on 14 models (one
#: real test input of about 13,000), and 12-36% of the samples fp32 gives 0.5-0.7, synthetic and real alike; where
#: int8 breaks a model it flips most of them.
SURE_PROBABILITY = 0.9


def sure(fp32_outputs: np.ndarray) -> np.ndarray:
    """Which samples fp32 is sure of (``SURE_PROBABILITY``)."""
    return probabilities(fp32_outputs).max(1) >= SURE_PROBABILITY


def check_threshold(fp32_outputs: np.ndarray, min_agreement: float, warn: bool = True) -> tuple[int, float]:
    """(how many check samples fp32 is sure of, the ones ``weighted_agreement`` judges on; the agreement the int8
    check holds on them, ``resolvable_threshold``), with a warning (``warn``) where they are fewer than
    ``holdout_floor`` and the threshold is relaxed."""
    n = int(sure(fp32_outputs).sum())
    held = resolvable_threshold(n, len(fp32_outputs), min_agreement)
    if warn and n < holdout_floor(min_agreement):
        log.warning("int8 check: fp32 is sure (top-1 probability >= %.0f%%) of %d of %d synthesized check samples, "
                    "and int8 is judged on those: %.1f%% weighted agreement tells int8's noise from harm on %d or "
                    "more, so int8 is held to %.1f%% here (%d disagreements tolerated), and not vouched for where it "
                    "lands below %.1f%% (more --holdout, or more synthesis steps, gives more sure samples)",
                    100 * SURE_PROBABILITY, n, len(fp32_outputs), 100 * min_agreement, holdout_floor(min_agreement),
                    100 * held, HOLDOUT_TOLERATES, 100 * min_agreement)
    return n, held


def resolvable_threshold(sure_n: int, checked: int, min_agreement: float) -> float:
    """The agreement the int8 check can hold on ``sure_n`` samples fp32 is sure of (on all ``checked`` when it
    is sure of none, as ``weighted_agreement`` judges): ``min_agreement`` where they reach ``holdout_floor``,
    else the agreement that tolerates ``HOLDOUT_TOLERATES`` disagreements. Below the floor a 99% threshold
    fails on one flip, which int8's noise alone makes: on an untrained 1000-class EfficientNet-B0, fp32 was sure
    of 2 of 256 check samples, the guardrail acted on them for 9 minutes and shipped a format 4x slower than the
    fastest (docs/benchmarks.md)."""
    n = sure_n or checked
    return min(min_agreement, max(0.0, 1.0 - HOLDOUT_TOLERATES / n)) if n else 0.0


def weighted_agreement(fp32_outputs: np.ndarray, int8_top1: np.ndarray) -> float:
    """int8's agreement with fp32 as the guardrail holds it: on the samples fp32 is sure of (``sure``; on all of
    them when it is sure of none), top-1 agreement in which each disagreement counts by how much likelier fp32
    found its own class than int8's, 1 - mean(p[fp32's top-1] - p[int8's top-1]) under fp32's probabilities p.

    int8's noise on fp32's logits is a property of the model and its calibration, alike on synthesized and real
    inputs at the same fp32 confidence; what differs is how many inputs sit near a decision boundary, where that
    noise flips the top-1 (a flip between classes fp32 found about as likely costs little). Synthesized samples
    sit there far more often than real ones (the 22-class MobileNetV2 of docs/benchmarks.md: fp32's mean top-1
    probability 33% on them, 83% on its test images), so plain top-1 agreement on them (70-79% there) says little
    of real accuracy (int8 lost 0.1-0.2 points): how much such flips cost depends on how many real inputs sit
    there, which the check set cannot show. A flip of a sample fp32 is sure of is harm wherever it happens.
    Where fp32 is sure of no check sample, every one counts, weighed (docs/benchmarks.md, "Which measure does the
    int8 guardrail hold?")."""
    p = probabilities(fp32_outputs)
    keep = p.max(1) >= SURE_PROBABILITY  # ``sure``, on the probabilities at hand
    if keep.any():
        p, int8_top1 = p[keep], np.asarray(int8_top1)[keep]
    rows = np.arange(len(p))
    return float(1.0 - (p[rows, p.argmax(1)] - p[rows, np.asarray(int8_top1)]).mean())


def _pct(v: float) -> str:
    """A threshold as the records word it: 99%, 98.7%."""
    return f"{100 * v:.1f}".removesuffix(".0") + "%"


def _outputs(path: Path, x: np.ndarray, threads: int, precision: str = "int8") -> np.ndarray:
    with OrtRunner(path, threads, precision) as r:
        return predict(r, x)


def _top1(path: Path, x: np.ndarray, threads: int, precision: str = "int8") -> np.ndarray:
    return _outputs(path, x, threads, precision).argmax(1)


def _p50_ms(path: Path, x1: np.ndarray, threads: int) -> float:
    with OrtRunner(path, threads) as r:
        return round(float(np.median(time_runner(r, x1, budget_s=P50_BUDGET_S))) * 1000, 4)


#: seconds each candidate's batch-1 latency is timed for when calibration picks the fastest format
P50_BUDGET_S = 0.5

_QUANTIZABLE = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _consumers(graph) -> dict[str, list]:
    """tensor name -> the nodes that read it."""
    out: dict[str, list] = {}
    for n in graph.node:
        for t in n.input:
            out.setdefault(t, []).append(n)
    return out


def sensitivity_units(path: Path) -> list[tuple[str, ...]]:
    """Units the guardrail can leave in float: each quantizable node alone, and each pair of a
    quantizable node with a quantizable node it feeds (through ReLU, pooling, reshapes ...).

    Pairs matter: an activation tensor stays quantized while either its producer or its consumer
    is, so an outlier-heavy tensor only goes back to float when both sides do."""
    import onnx

    graph = onnx.load(str(path)).graph
    consumers = _consumers(graph)
    quant = [n for n in graph.node if n.op_type in _QUANTIZABLE]
    units: list[tuple[str, ...]] = [(n.name,) for n in quant]
    for n in quant:
        seen, frontier = set(), list(n.output)
        while frontier:
            for c in consumers.get(frontier.pop(), []):
                if c.name in seen:
                    continue
                seen.add(c.name)
                if c.op_type in _QUANTIZABLE:
                    units.append((n.name, c.name))
                else:
                    frontier.extend(c.output)
    return units


def tensor_units(pre: Path, qdq: Path) -> list[tuple[str, ...]]:
    """For each activation tensor the Q/DQ model ``qdq`` still quantizes, the nodes of the fp32 graph
    ``pre`` that must all be in float for it to be float: its producer and its consumers. These reach
    what the weight layers' units cannot: onnxruntime also quantizes additions, multiplications,
    poolings and activations between the weight layers (a residual network's Add, a hard-swish's Mul)."""
    import onnx

    q = onnx.load(str(qdq)).graph
    weights = {i.name for i in q.initializer}
    tensors = list(dict.fromkeys(n.input[0] for n in q.node if n.op_type == "QuantizeLinear" and n.input[0] not in weights))
    graph = onnx.load(str(pre)).graph
    producer = {o: n.name for n in graph.node for o in n.output}
    consumers = _consumers(graph)
    units: list[tuple[str, ...]] = []
    for t in tensors:
        nodes = ([producer[t]] if t in producer else []) + [c.name for c in consumers.get(t, [])]
        unit = tuple(dict.fromkeys(n for n in nodes if n))  # an unnamed node cannot be named to onnxruntime
        if unit and unit not in units:
            units.append(unit)
    return units


def _score(units, base: list[str], quantize, agree, work: Path, label: int, progress: Progress) -> list[dict]:
    """Each unit left in float on top of ``base``, scored by the agreement with fp32 that restores."""
    out = []
    with progress.task(f"int8 guardrail, pass {label}: scoring layers", total=len(units)) as task:
        for unit in units:
            p = work / "one.onnx"
            quantize(p, base + [n for n in unit if n not in base])
            out.append({"nodes": list(unit), "agreement_if_float": agree(p), "pass": label})
            task.advance(1)
    return out


def _with_outputs(path: Path, tensors: list[str], out: Path) -> Path:
    import onnx

    model = onnx.load(str(path))
    have = {o.name for o in model.graph.output}
    model.graph.output.extend([onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None)
                               for t in tensors if t not in have])
    onnx.save(model, str(out))
    return out


#: the ranking pass runs at most this many bytes of intermediate outputs per batch
RANK_BATCH_BYTES = 256 << 20


def output_errors(fp32: Path, quantized: Path, x: np.ndarray, threads: int, work: Path) -> dict[str, float]:
    """Each float tensor both graphs compute (a node's output), its error in the quantized model relative to
    fp32 channel by channel, averaged over the channels: sum (q - f)^2 / sum f^2 per channel over ``x`` (a
    tensor's few outlier channels do not hide what per-tensor int8 does to the others). One pass of each model
    over ``x``, every such tensor an output."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(onnx.load(str(fp32)))
    floats = {v.name for v in (*inferred.graph.value_info, *inferred.graph.output)
              if v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT}
    q_names = {o for n in onnx.load(str(quantized)).graph.node for o in n.output}
    tensors = [o for n in inferred.graph.node for o in n.output if o in floats and o in q_names]
    if not tensors:
        return {}
    runners = [OrtRunner(_with_outputs(p, tensors, work / f"rank-{i}.onnx"), threads)
               for i, p in enumerate((fp32, quantized))]
    err: dict[str, np.ndarray] = {}
    norm: dict[str, np.ndarray] = {}
    batch, i = 1, 0
    with runners[0] as rf, runners[1] as rq:
        while i < len(x):
            xb = np.ascontiguousarray(x[i:i + batch], dtype=np.float32)
            outs = [dict(zip([o.name for o in r.session.get_outputs()], r.session.run(None, {r._input: xb})))
                    for r in (rf, rq)]
            for t in tensors:
                f, q = outs[0][t].astype(np.float64), outs[1][t].astype(np.float64)
                if f.ndim == 0:
                    f, q = f.reshape(1), q.reshape(1)
                axis = f.ndim - 1 if f.ndim == 3 else min(1, f.ndim - 1)  # (N, C, ...) channels; (N, T, C)
                rest = tuple(d for d in range(f.ndim) if d != axis)
                e2, f2 = ((q - f) ** 2).sum(rest), (f ** 2).sum(rest)
                err[t] = err[t] + e2 if t in err else e2
                norm[t] = norm[t] + f2 if t in norm else f2
            if i == 0:  # then as many samples per batch as RANK_BATCH_BYTES of outputs allow
                per_sample = sum(v.nbytes for v in outs[0].values()) / len(xb)
                batch = max(1, min(64, int(RANK_BATCH_BYTES // max(per_sample, 1.0))))
            i += len(xb)
    out = {}
    for t in tensors:
        live = norm[t] > 0
        out[t] = float((err[t][live] / norm[t][live]).mean()) if live.any() else 0.0
    return out


def _rank(units, errors: dict[str, float], fp32: Path, label: int) -> list[dict]:
    """Each unit scored by the error its nodes add in the quantized model. A node adds its output's error less the
    largest error among its inputs; a weight layer answers for what it adds and for what the nodes after it add
    up to the next weight layer (its activation, the tensor int8 holds between the two); a unit's score is the
    most any of its weight layers answers for."""
    import onnx

    graph = onnx.load(str(fp32)).graph
    added = {}
    for n in graph.node:
        out = max((errors.get(o, 0.0) for o in n.output), default=0.0)
        into = max((errors.get(i, 0.0) for i in n.input), default=0.0)
        added[n.name] = out - into
    consumers = _consumers(graph)
    region = {}
    for n in graph.node:
        if n.op_type not in _QUANTIZABLE:
            continue
        most, seen, frontier = added[n.name], set(), list(n.output)
        while frontier:
            for c in consumers.get(frontier.pop(), []):
                if c.name in seen or c.op_type in _QUANTIZABLE:
                    continue
                seen.add(c.name)
                most = max(most, added.get(c.name, 0.0))
                frontier.extend(c.output)
        region[n.name] = most
    return [{"nodes": list(unit), "error_added": round(max(region.get(m, added.get(m, 0.0)) for m in unit), 8),
             "pass": label} for unit in units]


#: the ranked try leaves at most this share of the units in float before the guardrail scores units one by one
RANKED_SHARE = 0.2


def _ranked_try(pre: Path, units, quantize, agree, check_x, threads: int, work: Path, final: Path, threshold: float,
                progress: Progress):
    """The cheap route: one ranking pass (``output_errors``), then units left in float, most error added first,
    at most ``RANKED_SHARE`` of them; (agreement, excluded set, best, ranked rows)."""
    with progress.task("int8 guardrail: ranking layers in one pass", total=1) as task:
        quantize(work / "rank.onnx", [])
        ranked = _rank(units, output_errors(pre, work / "rank.onnx", check_x, threads, work), pre, 0)
        task.advance(1)
    most = max(1, math.ceil(RANKED_SHARE * len(units)))
    agreement, excluded, best = _cumulative(ranked, [], quantize, agree, final, threshold, "error_added", most)
    return agreement, excluded, best, ranked


def _cumulative(scored: list[dict], start: list[str], quantize, agree, final: Path, threshold: float,
                key: str = "agreement_if_float", most: int | None = None):
    """Units left in float cumulatively on top of ``start``, best first by ``key``, until ``threshold`` holds (or
    ``most`` sets were tried); returns (agreement of the last set, that set, (best agreement, best set))."""
    # ties: the agreement scores prefer the smaller unit (as much restored, less in float); the error ranking the
    # larger (a pair's score is its consumer's, whose error may come from the tensor the pair holds in float)
    size = 1 if key == "agreement_if_float" else -1
    ranked = sorted(scored, key=lambda u: (-u[key], size * len(u["nodes"])))[:most]
    excluded, agreement, best = list(start), -1.0, (-1.0, list(start))
    for unit in ranked:
        new = [n for n in unit["nodes"] if n not in excluded]
        if not new:
            continue
        excluded += new
        quantize(final, excluded)
        agreement = agree(final)
        if agreement > best[0]:
            best = (agreement, list(excluded))
        if agreement >= threshold:
            break
    return agreement, excluded, best


class _Clock:
    """Seconds spent per kind of work (``lap(kind)`` adds the time since the last lap to ``kind``): calibration.json's
    ``timings``, what a plan of this stage is checked against."""

    def __init__(self) -> None:
        self.laps: dict[str, float] = {}
        self.t = time.perf_counter()

    def lap(self, kind: str) -> None:
        now = time.perf_counter()
        self.laps[kind] = round(self.laps.get(kind, 0.0) + now - self.t, 3)
        self.t = now


class _Timed:
    """A function that keeps how long each call took (the guardrail's quantizations and check passes)."""

    def __init__(self, fn) -> None:
        self.fn, self.seconds = fn, []

    def __call__(self, *a):
        t = time.perf_counter()
        try:
            return self.fn(*a)
        finally:
            self.seconds.append(time.perf_counter() - t)

    def mean(self) -> float:
        return sum(self.seconds) / len(self.seconds) if self.seconds else 0.0


def guardrail(pre: Path, fmt: str, calib_x: np.ndarray, check_x: np.ndarray, fp32_outputs: np.ndarray,
              cfg: CalibConfig, work: Path, quantize=None, progress: Progress | None = None,
              deadline: float | None = None) -> tuple[Path, dict]:
    """Leave the most sensitive layers in float until int8's ``weighted_agreement`` with fp32 (whose outputs on
    ``check_x`` are ``fp32_outputs``) is at least ``min_agreement``.

    First, the cheap route (``_ranked_try``): the int8 model and the fp32 one run once over the check set with
    every intermediate tensor an output, each unit of ``sensitivity_units`` (weight layers, and pairs of them)
    is ranked by the error its nodes add, and units are left in float, most error first, up to
    ``RANKED_SHARE`` of them, until the threshold holds: one ranking pass and one quantization and check pass
    per set tried. When it does not hold (a model whose ranges saturate adds its error where the ranking cannot
    tell the layers apart), the thorough route: each unit is left in float alone and scored by the agreement
    that restores; units are then left in float cumulatively, best first, until the threshold holds. When it never does (with every weight layer in float, onnxruntime
    still quantizes the additions, multiplications and poolings between them: on the zoo's raw 0-255
    ResNet calibrated on Gaussian noise, 17.6% agreement that way), a second pass starts from the best
    set so far and does the same with ``tensor_units``, the tensors still quantized, until it holds (with
    every tensor in float the model is the fp32 one). When the threshold is never met, the set that agreed
    best is returned, not the last one tried. The thorough route costs one quantization and one pass over the
    check set per unit scored and per set tried (on MobileNetV2 at 224x224, 121 units in its first pass).
    With ``deadline`` (a ``time.perf_counter()`` time: the run's ``--time-budget``), the thorough route is
    skipped when its first pass alone, at the seconds each quantization and check pass took in the cheap route,
    would end after it: the cheap route's best set is kept and the record says why (``cut_by_budget``).
    ``quantize(out_path, exclude)`` builds one model (default: ORT format ``fmt``; the TensorRT Q/DQ
    model passes its own)."""
    ranges, progress = work / RANGE_CACHE, progress or NullProgress()
    if quantize is None:
        quantize = lambda out, exclude: quantize_one(pre, out, calib_x, fmt, cfg, exclude=exclude,  # noqa: E731
                                                     ranges=ranges)
    quantize = _Timed(quantize)
    agree = _Timed(lambda p: weighted_agreement(fp32_outputs, _top1(p, check_x, cfg.threads)))
    final = work / "guarded.onnx"
    units = sensitivity_units(pre)
    agreement, excluded, best, ranked = _ranked_try(pre, units, quantize, agree, check_x, cfg.threads, work, final,
                                                    cfg.min_agreement, progress)
    if agreement >= cfg.min_agreement:
        return final, {"sensitivity": ranked, "excluded": excluded, "agreement": agreement, "held": True,
                       "route": "ranked"}
    scoring_s = len(units) * (quantize.mean() + agree.mean())
    if deadline is not None and time.perf_counter() + scoring_s > deadline:
        agreement, excluded = best
        quantize(final, excluded)
        log.warning("int8 guardrail: scoring %d layers one by one (about %s) would pass the time budget; the "
                    "ranked route's best set is kept (agreement %.3f)", len(units), duration(scoring_s), agreement)
        return final, {"sensitivity": ranked, "excluded": excluded, "agreement": agreement,
                       "held": agreement >= cfg.min_agreement, "route": "ranked",
                       "cut_by_budget": {"scoring_s": round(scoring_s, 1), "units": len(units)}}
    sensitivity = _score(units, [], quantize, agree, work, 1, progress)  # the thorough route, from the start
    agreement, excluded, best = _cumulative(sensitivity, [], quantize, agree, final, cfg.min_agreement)
    if agreement < cfg.min_agreement:  # second pass: the tensors still quantized around the best set
        probe = work / "probe.onnx"
        quantize_one(pre, probe, calib_x, "qdq-u8s8", cfg, exclude=best[1], ranges=ranges)
        second = _score(tensor_units(pre, probe), best[1], quantize, agree, work, 2, progress)
        sensitivity += second
        agreement, excluded, best2 = _cumulative(second, best[1], quantize, agree, final, cfg.min_agreement)
        best = max(best, best2, key=lambda b: b[0])
    if agreement < cfg.min_agreement and best[0] > agreement:  # never held: the best set tried, not the last
        agreement, excluded = best
        quantize(final, excluded)
    return final, {"sensitivity": sensitivity, "excluded": excluded, "agreement": agreement,
                   "held": agreement >= cfg.min_agreement, "route": "scored"}


def computes_in_int8(path: Path) -> bool:
    """Does the model quantize anything? (False when the guardrail left every quantized node in float.)"""
    import onnx

    return any(n.op_type == "QuantizeLinear" or n.op_type.startswith("QLinear") or n.op_type.endswith("Integer")
               for n in onnx.load(str(path)).graph.node)


def _failed_format(fmt: str, error: Exception) -> dict:
    """A format onnxruntime could not write or load for this graph (QOperator's QLinearAdd on DeiT-Tiny's patch
    embedding bias, for one): left out of the candidates, with a warning and a record."""
    text = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
    log.warning("int8 format %s left out: onnxruntime could not make or load it for this network (%s)", fmt, text)
    return {"format": fmt, "error": text}


def _guarded(pre: Path, rows: list[dict], calib_x, check_x, fp32_outputs, heldout_x, teacher_top1, cfg: CalibConfig,
             work: Path, progress: Progress, guard: dict, deadline: float | None = None) -> tuple[dict, Path, str]:
    """No format held the threshold: the guardrail on the most faithful one (``guard`` is updated);
    returns (the chosen row, measured again, the model to ship, why)."""
    x1 = heldout_x[:1]
    chosen = dict(max(rows, key=lambda r: r["weighted_agreement"]))
    final, found = guardrail(pre, chosen["format"], calib_x, check_x, fp32_outputs, cfg, work, progress=progress,
                             deadline=deadline)
    if not found["held"] and found["agreement"] <= chosen["weighted_agreement"]:
        # layers in float did not help: ship plain int8, the most faithful model measured
        final = work / f"{chosen['format']}.onnx"
        found.update(excluded=[], agreement=chosen["weighted_agreement"])
    guard.update(found, agreement_before=chosen["weighted_agreement"])
    top1 = _top1(final, check_x, cfg.threads)
    chosen.update(agreement_with_fp32=float((top1 == fp32_outputs.argmax(1)).mean()),
                  weighted_agreement=found["agreement"], p50_ms_batch1=_p50_ms(final, x1, cfg.threads),
                  fidelity=float((top1[:len(heldout_x)] == teacher_top1).mean()))
    reason = (f"no format's weighted agreement with fp32 was >= {_pct(cfg.min_agreement)}; the guardrail left "
              f"{len(found['excluded'])} node(s) in float: {', '.join(found['excluded'])}" if found["excluded"]
              else f"no format's weighted agreement with fp32 was >= {_pct(cfg.min_agreement)}, and no set of "
                   "layers left in float agreed better than plain int8, which ships")
    if found.get("cut_by_budget"):
        reason += (f" (ranked by error; scoring the {found['cut_by_budget']['units']} units one by one would have "
                   "passed the time budget)")
    if not found["held"]:
        reason += " and still could not reach the threshold"
        if not found.get("cut_by_budget"):
            log.warning("int8 guardrail: weighted agreement %.3f < %.3f with any set of layers left in float",
                        found["agreement"], cfg.min_agreement)
    guard["int8_usable"] = computes_in_int8(final)
    if not guard["int8_usable"]:
        reason += "; nothing is left in int8: the int8 file computes in fp32, and fp32 is recommended"
        log.warning("int8 guardrail: every quantized layer had to stay in float to agree with fp32; "
                    "the ONNX Runtime targets get fp32")
    return chosen, final, reason


def calibrate(fp32_path: str | Path, out_path: str | Path, calib_x: np.ndarray, heldout_x: np.ndarray,
              heldout_teacher: np.ndarray, cfg: CalibConfig, progress: Progress | None = None,
              deadline: float | None = None) -> dict:
    """Build each candidate int8 model, measure it, keep the best at ``out_path``; returns a record.

    A candidate is within tolerance when its ``weighted_agreement`` with the fp32 model, on the held-out
    synthetic samples, is at least ``min_agreement`` (labelled eval data never chooses the model it then
    evaluates; plain top-1 agreement is recorded next to it); the fastest such candidate at batch 1 is kept.
    When none is, the guardrail leaves the most sensitive nodes of the most faithful candidate in float (see
    ``guardrail``; ``deadline`` bounds it)."""
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
        clock = _Clock()
        pre = work / "pre.onnx"
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=False)
        clock.lap("pre_process")
        teacher_top1 = heldout_teacher.argmax(1)
        check_x = heldout_x
        x1 = heldout_x[:1]
        fp32_outputs = _outputs(fp32_path, check_x, cfg.threads, "fp32")
        clock.lap("check_fp32")
        fp32_top1 = fp32_outputs.argmax(1)
        asked = cfg.min_agreement
        n_sure, held = check_threshold(fp32_outputs, asked)
        cfg = replace(cfg, min_agreement=held)
        fp32 = {"fidelity": float((fp32_top1[:len(heldout_x)] == teacher_top1).mean()),
                "p50_ms_batch1": _p50_ms(fp32_path, x1, cfg.threads)}
        clock.lap("p50")
        rows, failed = [], []
        with progress.task("int8 calibration", total=len(cfg.formats)) as task:
            for fmt in cfg.formats:
                path = work / f"{fmt}.onnx"
                try:
                    quantize_one(pre, path, calib_x, fmt, cfg, ranges=work / RANGE_CACHE)  # one calibration pass
                    clock.lap("quantize")
                    top1 = _top1(path, check_x, cfg.threads)
                except Exception as e:  # noqa: BLE001 - onnxruntime's graph errors have no common class
                    failed.append(_failed_format(fmt, e))
                    task.advance(1)
                    continue
                clock.lap("check_int8")
                weighted = weighted_agreement(fp32_outputs, top1)
                rows.append({"format": fmt, "agreement_with_fp32": float((top1 == fp32_top1).mean()),
                             "weighted_agreement": weighted,
                             "fidelity": float((top1[:len(heldout_x)] == teacher_top1).mean()),
                             "p50_ms_batch1": _p50_ms(path, x1, cfg.threads),
                             "within_tolerance": weighted >= cfg.min_agreement})
                clock.lap("p50")
                task.advance(1)
        if not rows:
            raise PipelineError("onnxruntime could not make an int8 model of this network in any format: "
                                + "; ".join(f"{f['format']}: {f['error']}" for f in failed))
        ok = [r for r in rows if r["within_tolerance"]]
        guard = {"measure": GUARD_MEASURE, "threshold": cfg.min_agreement, "checked_on": int(len(check_x)),
                 "sure_samples": n_sure, "threshold_asked": asked, "triggered": not ok, "excluded": [],
                 "held": bool(ok)}
        if ok:
            chosen = min(ok, key=lambda r: r["p50_ms_batch1"])
            final = work / f"{chosen['format']}.onnx"
            reason = (f"fastest at batch 1 among formats whose weighted agreement with fp32 is >= "
                      f"{_pct(cfg.min_agreement)}")
        else:
            clock.lap("decide")
            chosen, final, reason = _guarded(pre, rows, calib_x, check_x, fp32_outputs, heldout_x, teacher_top1, cfg,
                                             work, progress, guard, deadline)
            clock.lap("guardrail")
        if held < asked:
            outcome = f"met {_pct(asked)} anyway" if chosen["weighted_agreement"] >= asked else "is not vouched for"
            reason += (f" (fp32 is sure of {n_sure} of {len(check_x)} check samples, fewer than the "
                       f"{holdout_floor(asked)} on which {_pct(asked)} can be judged: int8 was held to {_pct(held)} "
                       f"and {outcome})")
        shutil.move(str(final), str(out_path))
        return {"method": cfg.method, "samples": int(len(calib_x)), "per_channel": cfg.per_channel,
                "source": "synthesized transfer set", "chosen_format": chosen["format"], "reason": reason,
                "chosen": chosen, "fp32": fp32, "candidates": rows, "failed_formats": failed, "guardrail": guard,
                "timings": clock.laps}
    finally:
        shutil.rmtree(work, ignore_errors=True)
