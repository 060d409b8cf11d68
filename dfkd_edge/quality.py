"""A data-free verdict on the student: what a run can say about its student without real data.

Fidelity on held-out synthetic samples is not enough: a transfer set far from what the teacher saw
gives a student that copies the teacher there (98% agreement) and fails on real inputs (16%). The
signals below look at the transfer set through the teacher's own eyes and probe the student away
from its training points; each is in units that mean the same on every teacher.

* ``class_coverage``: entropy of the teacher's top-1 class histogram over the transfer set,
  divided by what the same number of samples of a teacher spread evenly over its classes gives
  (log(classes) when the samples far outnumber the classes): 1 when every class is equally
  represented, 0 when one class is. ``classes_seen``: the classes that are the teacher's top-1 at least
  once, over the fewest such an even teacher would show (every class when the samples far outnumber
  them; 217 of 1000 classes for 256 samples). Both are capped at 1.
* ``bn_mismatch``: over the teacher's BatchNorm layers, the mean of ``|batch mean - running
  mean| / running std + |log(batch var / running var)|`` on the held-out synthetic samples (per
  channel, then averaged): 0 when the samples reproduce the statistics the teacher saw in
  training; 1 means, for example, batch means a full standard deviation away. None without an
  observable BatchNorm.
* ``teacher_agreement`` (several teachers): the lowest top-1 agreement of one teacher with their
  ensemble on the held-out samples. Teachers of one task agree on real inputs; where they do not,
  the samples are not inputs of that task. It is judged as fidelity is (the same bounds): both are one
  model's agreement with the teacher on the same held-out samples, which sit between classes, where
  even good teachers part (a failing multi-teacher set showed 29-48%; inverted from the
  ensemble, the zoo's three digits teachers, each within 2 points of the others on real digits, agreed
  with it on 72-80%).
* ``fidelity_fp32`` / ``fidelity_int8``: top-1 agreement with the teacher on the held-out samples
  (inverted samples sit near decision boundaries: students within a point of real-data KD agreed
  on 85-94% of them, so only a low agreement is judged).
* ``probe_agreement``: top-1 agreement with the teacher on a probe set the student never trained
  on: each probe mixes two held-out samples of different teacher classes (weights uniform in
  [0.3, 0.7]), between the classes where decision boundaries lie. Shown, not judged: on the zoo a
  student at real-data-KD level scored 0.80 there and a noise-KD student 18 points worse scored
  0.83 (docs/benchmarks.md).
* ``baseline_gap`` (``--distill vkd`` / ``kd+vkd`` with the plain-KD comparison): the plain-KD student
  of the same transfer set and seed minus the shipped student, in top-1 agreement with the teacher on
  the probe set. Both students saw the same inputs; when the one that learnt the teacher's own outputs
  agrees with it clearly more, the shipped one lost what the teacher knows (on the zoo a VKD student
  8.7 points under real-data KD passed every other signal). None without a baseline.
* ``domain_source``: where the input domain came from (dfkd_edge.domain); ``assumed`` means it could
  not be read and nobody gave it.
* ``domain_fit``: the first BatchNorm's standardised mismatch left by the domain read from the teacher
  (``InputDomain.fit_mismatch``; None when none was read, or the user gave a range alone): how far the
  inputs synthesis starts from are from those the teacher saw. Read with one colour for every channel,
  photograph teachers left 0.38-0.77 there and their students were far under real-data KD; the zoo's
  teachers whose students came within 1 point left 0-0.21 (docs/benchmarks.md).

Each signal has a *weak* and a *broken* bound (``BOUNDS``), fixed in these units and the same for
every teacher: any broken signal makes the verdict ``unreliable``, any weak one ``doubtful``,
otherwise ``ok``. ``reasons`` says which, in words.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from dfkd_edge.backends.base import predict_batch
from dfkd_edge.domain import mismatch

#: signal -> (weak, broken, direction); "min": lower is worse, "max": higher is worse
BOUNDS = {
    "class_coverage": (0.9, 0.5, "min"),
    "classes_seen": (1.0, 0.5, "min"),
    "bn_mismatch": (0.5, 1.0, "max"),
    "teacher_agreement": (0.7, 0.5, "min"),
    "fidelity_fp32": (0.7, 0.5, "min"),
    "fidelity_int8": (0.7, 0.5, "min"),
    "baseline_gap": (0.05, 0.15, "max"),
    "domain_fit": (0.3, 1.0, "max"),
}

_WORDS = {
    "class_coverage": "the transfer set covers the teacher's classes unevenly (normalised entropy {v:.2f})",
    "classes_seen": "the teacher never predicts {missing} of its classes on the transfer set, fewer than as many "
                    "samples spread evenly over the classes would reach",
    "bn_mismatch": "the synthetic samples do not reproduce the teacher's BatchNorm statistics (mismatch {v:.2f} "
                   "standard units): they are not what the teacher saw in training",
    "teacher_agreement": "the teachers agree with their ensemble on only {v:.0%} of the synthetic samples",
    "fidelity_fp32": "the student agrees with the teacher on only {v:.0%} of held-out synthetic samples",
    "fidelity_int8": "the int8 student agrees with the teacher on only {v:.0%} of held-out synthetic samples",
    "probe_agreement": "the student agrees with the teacher on only {v:.0%} of probe samples between classes",
    "baseline_gap": "a plain-KD student of the same transfer set agrees with the teacher on {v:.0%} more of the "
                    "probe samples than this one (convert with --distill kd)",
    "domain_fit": "the input domain (read from the teacher or given) leaves a mismatch of {v:.2f} standard units "
                  "at the teacher's first BatchNorm: the synthetic samples start unlike its training inputs (give "
                  "--input-mean/--input-std if you know them)",
    "int8_weighted_agreement": "the int8 model's weighted agreement with the model is only {v:.2%} on held-out "
                               "synthetic samples (disagreements weighed by the model's own probabilities)",
    "int8_weighted_agreement_real": "the int8 model's weighted agreement with the model is only {v:.2%} on the "
                                    "eval inputs",
}


def even_spread(n: int, classes: int) -> tuple[float, float, float]:
    """What ``n`` samples of a teacher whose top-1 is spread evenly over ``classes`` show: (expected classes
    seen, its standard deviation, expected entropy of the top-1 histogram in nats). Each class's count is
    Binomial(n, 1/classes); the figures are exact sums over it."""
    if classes < 2 or n < 1:
        return float(min(classes, max(n, 0))), 0.0, 0.0
    q = 1.0 / classes
    miss = (1 - q) ** n
    seen = classes * (1 - miss)
    var = classes * (classes - 1) * (1 - 2 * q) ** n + classes * miss - (classes * miss) ** 2
    mu, sd = n * q, math.sqrt(n * q * (1 - q))
    lo, hi = max(1, int(mu - 12 * sd - 20)), min(n, int(mu + 12 * sd + 20))
    ln, lq, lr = math.lgamma(n + 1), math.log(q), math.log1p(-q)
    h = 0.0
    for k in range(lo, hi + 1):
        pk = math.exp(ln - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * lq + (n - k) * lr)
        h -= pk * (k / n) * math.log(k / n)
    return seen, math.sqrt(max(var, 0.0)), classes * h


def class_coverage(logits: np.ndarray) -> tuple[float, float]:
    """(class coverage, classes seen) of (N, classes) logits, each against what N samples of a teacher spread
    evenly over its classes would show (``even_spread``), capped at 1: the top-1 histogram's entropy over that
    teacher's expected entropy (log(classes) when N is much larger than the classes), and the classes seen over
    the fewest that teacher would show but one time in forty (its expectation less two standard deviations;
    every class when N is much larger). 256 samples cannot show 1000 classes; an even teacher shows 226 ± 4.6 of them, so 217 count as all."""
    n, classes = logits.shape
    counts = np.bincount(logits.argmax(1), minlength=classes).astype(np.float64)
    p = counts / max(counts.sum(), 1.0)
    nz = p[p > 0]
    seen_even, sd, h_even = even_spread(n, classes)
    h = float(-(nz * np.log(nz)).sum())
    coverage = min(1.0, h / h_even) if h_even > 0 else 1.0
    least = max(seen_even - 2 * sd, 1.0)
    return coverage, min(1.0, float((counts > 0).sum()) / least)


def class_counts(logits: np.ndarray) -> dict:
    """``classes`` and ``classes_missing`` (the classes never top-1) of (N, classes) logits."""
    classes = int(logits.shape[1])
    return {"classes": classes, "classes_missing": classes - int(np.unique(logits.argmax(1)).size)}


#: the data-free verdict's passes: the BatchNorm mismatch reads at most this many held-out samples, and the student
#: and teacher are compared on this many mixes of two held-out samples (``probe_set``)
BN_CHECK_SAMPLES = PROBE_SAMPLES = 256


def module_logits(module: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)`` without gradients, in batches of what dfkd_edge.backends.base.predict_batch holds (a student at
    full resolution keeps tens of MB a sample between its layers: 256 samples at once held about 10 GB)."""
    b = predict_batch(x)
    with torch.no_grad():
        return torch.cat([module(x[i:i + b]) for i in range(0, len(x), b)], 0)


def bn_mismatch(teacher, x: np.ndarray, batch: int = BN_CHECK_SAMPLES) -> float | None:
    """Mean standardised BatchNorm mismatch (see the module doc) of ``x``; None without BatchNorm.

    ``teacher`` may be an Ensemble: the mean over its members that have BatchNorm layers."""
    members = getattr(teacher, "members", None) or [teacher]
    values = [v for v in (_bn_mismatch_one(t, x[:batch]) for t in members) if v is not None]
    return float(np.mean(values)) if values else None


def _bn_mismatch_one(teacher, x: np.ndarray) -> float | None:
    """The taps keep every BatchNorm input of a pass, so ``x`` runs in chunks (a quarter of what
    dfkd_edge.backends.base.predict_batch holds: 256 samples of MobileNetV2 at 224x224 in one pass held 7.3 GB)
    whose per-channel sums make the moments of all of it."""
    if not teacher.spec.taps or not teacher.spec.bn_layers or len(x) < 2:
        return None
    chunk = max(1, predict_batch(x) // 4)
    sums: list[list] = []  # per BN layer: [sum, sum of squares, count, running mean, running var]
    for i in range(0, len(x), chunk):
        with torch.no_grad(), teacher.taps() as rec:
            teacher(torch.from_numpy(np.ascontiguousarray(x[i:i + chunk])).to(teacher.device))
        for k, r in enumerate(rec.bn_inputs()):
            v = r.x.double()
            dims = [0] + list(range(2, v.dim()))
            part = [v.sum(dims), (v * v).sum(dims), v.numel() // v.shape[1]]
            if k == len(sums):
                sums.append([*part, r.running_mean, r.running_var])
            else:
                sums[k][:3] = [sums[k][0] + part[0], sums[k][1] + part[1], sums[k][2] + part[2]]
    per_layer = []
    for total, squares, n, running_mean, running_var in sums:
        mean = total / n
        per_layer.append(float(mismatch(mean.float(), (squares / n - mean * mean).clamp_min(0).float(),
                                        running_mean.float(), running_var.float())))
    return float(np.mean(per_layer)) if per_layer else None


def probe_set(x_hold: np.ndarray, l_hold: np.ndarray, n: int = PROBE_SAMPLES, seed: int = 0) -> np.ndarray:
    """Mixes of two held-out samples of different teacher classes, weights uniform in [0.3, 0.7]."""
    rng = np.random.default_rng(seed)
    top1 = l_hold.argmax(1)
    i = rng.integers(0, len(x_hold), n)
    j = rng.integers(0, len(x_hold), n)
    for _ in range(10):  # redraw partners of the same class (a few tries; classes may be missing)
        same = top1[i] == top1[j]
        if not same.any():
            break
        j[same] = rng.integers(0, len(x_hold), int(same.sum()))
    lam = rng.uniform(0.3, 0.7, n).astype(np.float32).reshape(-1, *([1] * (x_hold.ndim - 1)))
    return (lam * x_hold[i] + (1 - lam) * x_hold[j]).astype(np.float32)


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float((a.argmax(1) == b.argmax(1)).mean())


def teacher_agreement(ensemble, x_hold: np.ndarray) -> float | None:
    """The lowest agreement of one teacher with the ensemble's mean logits; None for one teacher."""
    members = getattr(ensemble, "members", None)
    if not members:
        return None
    xt = torch.from_numpy(x_hold)
    logits = [t.logits(xt).numpy() for t in members]
    mean = np.mean(logits, 0)
    return min(agreement(lg, mean) for lg in logits)


def verdict(signals: dict, bounds: dict | None = None) -> tuple[str, list[str]]:
    """('ok' | 'doubtful' | 'unreliable', reasons) from the signals and ``bounds`` (BOUNDS)."""
    worst, reasons = 0, []
    for name, (weak, broken, direction) in (bounds or BOUNDS).items():
        v = signals.get(name)
        if v is None:
            continue
        bad = (lambda b: v < b) if direction == "min" else (lambda b: v > b)
        level = 2 if bad(broken) else 1 if bad(weak) else 0
        if level:
            worst = max(worst, level)
            reasons.append(_WORDS[name].format(v=v, missing=signals.get("classes_missing", 0)))
    if signals.get("domain_source") == "assumed":
        worst = max(worst, 1)
        reasons.append("the teacher's input domain could not be read (no observable BatchNorm) and was assumed "
                       "N(0, 1); give --input-range or --input-mean/--input-std")
    if signals.get("bn_mismatch") is None and signals.get("domain_source") != "user":
        worst = max(worst, 1)
        reasons.append("the teacher has no observable BatchNorm: nothing checks that the synthetic samples look "
                       "like its training inputs")
    return ("ok", "doubtful", "unreliable")[worst], reasons


def at_least_doubtful(quality: dict, *reasons: str | None) -> dict:
    """``quality`` (a verdict record) with each given ``reasons`` (None: none) added and the verdict raised to
    doubtful where it was ok."""
    given = [r for r in reasons if r]
    if given:
        quality["reasons"] = [*quality["reasons"], *given]
        quality["verdict"] = "doubtful" if quality["verdict"] == "ok" else quality["verdict"]
    return quality


def unresolved_check_reason(calibration: dict | None) -> str | None:
    """A verdict reason where the int8 model shipped with a weighted agreement below the threshold asked, accepted
    because fp32 was sure of too few check samples to judge that threshold (calibration.json: ``guardrail``,
    dfkd_edge.export.quantize.resolvable_threshold, and ``chosen``); None where it met the threshold asked."""
    guard = (calibration or {}).get("guardrail")
    if not guard or guard["threshold"] >= guard.get("threshold_asked", guard["threshold"]):
        return None
    agreement = calibration["chosen"]["weighted_agreement"]
    if agreement >= guard["threshold_asked"]:
        return None
    return (f"int8's weighted agreement with fp32 is {100 * agreement:.1f}%, below the "
            f"{100 * guard['threshold_asked']:.0f}% asked, and fp32 is sure of {guard['sure_samples']} of "
            f"{guard['checked_on']} synthesized check samples, too few to tell int8's noise from harm: the int8 "
            "model is not vouched for")


def assess(teacher, student: torch.nn.Module, x_train_logits: np.ndarray, x_hold: np.ndarray, l_hold: np.ndarray,
           fidelity: dict, domain, seed: int = 0, baseline: torch.nn.Module | None = None) -> dict:
    """report.json's ``quality``: {verdict, signals, reasons}; ``baseline``: the plain-KD student of the
    same transfer set, where one was trained for comparison."""
    coverage, seen = class_coverage(x_train_logits)
    probe = torch.from_numpy(probe_set(x_hold, l_hold, seed=seed))
    t_probe = teacher.logits(probe).numpy()
    probe_agree = agreement(module_logits(student, probe).numpy(), t_probe)
    gap = None if baseline is None else agreement(module_logits(baseline, probe).numpy(), t_probe) - probe_agree
    probs = torch.softmax(torch.from_numpy(x_train_logits), 1)
    signals = {
        **class_counts(x_train_logits), "class_coverage": round(coverage, 4), "classes_seen": round(seen, 4),
        "teacher_confidence": round(float(probs.max(1).values.mean()), 4),
        "bn_mismatch": _round(bn_mismatch(teacher, x_hold)),
        "teacher_agreement": _round(teacher_agreement(teacher, x_hold)),
        "fidelity_fp32": fidelity["student_fp32"], "fidelity_int8": fidelity["student_int8"],
        "probe_agreement": round(probe_agree, 4), "baseline_gap": _round(gap),
        **domain_signals(domain),
    }
    v, reasons = verdict(signals)
    return {"verdict": v, "signals": signals, "reasons": reasons,
            "bounds": {k: {"weak": w, "broken": b, "worse_when": "lower" if d == "min" else "higher"}
                       for k, (w, b, d) in BOUNDS.items()}}


def calibration_bounds(min_agreement: float) -> dict:
    """quantize's bounds: the calibration set's own signals as above; the int8 model's agreement with the model
    is weak below the guardrail's threshold (CalibConfig.min_agreement, 0.99) and broken below 0.9 (one input in
    ten answered differently), weighted as the int8 guardrail weighs it: on the eval inputs when given, else on
    held-out synthetic samples."""
    keep = ("class_coverage", "classes_seen", "bn_mismatch", "domain_fit")
    return {**{k: BOUNDS[k] for k in keep}, "int8_weighted_agreement": (min_agreement, 0.9, "min"),
            "int8_weighted_agreement_real": (min_agreement, 0.9, "min")}


def domain_signals(domain) -> dict:
    """``domain_source`` and ``domain_fit`` of an InputDomain (dfkd_edge.domain)."""
    return {"domain_source": domain.source, "domain_fit": _round(domain.fit_mismatch)}


def assess_calibration(model, logits_train: np.ndarray, x_hold: np.ndarray, fidelity: dict,
                       weighted_real: float | None, domain, min_agreement: float) -> dict:
    """report.json's ``quality`` for ``dfkd-edge quantize``: can the int8 model be vouched for without
    real data? The synthesized calibration set must look like the model's training inputs through the
    model's own eyes (class coverage, BatchNorm statistics: activation ranges calibrated on inputs
    unlike the real ones clip real activations), and the int8 model must answer as the model does: on
    the eval inputs when there are some (``weighted_real``), else on held-out synthetic samples, weighted by the
    model's own probabilities on the samples it is sure of as the int8 guardrail weighs it
    (``fidelity["model_int8_weighted"]``; inverted samples sit near decision boundaries, where a real input rarely
    is: on the zoo's raw-pixel digits teacher the int8 model agreed with the model on 100% of the real test inputs
    and 97.3% of held-out inverted ones). ``fidelity``: the evaluate stage's (dfkd_edge.stages.evaluate_model);
    plain top-1 agreement (``int8_agreement``, ``int8_agreement_real``) is shown, not judged."""
    coverage, seen = class_coverage(logits_train)
    probs = torch.softmax(torch.from_numpy(logits_train), 1)
    signals = {**class_counts(logits_train), "class_coverage": round(coverage, 4),
               "classes_seen": round(seen, 4), "teacher_confidence": round(float(probs.max(1).values.mean()), 4),
               "bn_mismatch": _round(bn_mismatch(model, x_hold)), "int8_agreement": round(fidelity["model_int8"], 4),
               "int8_weighted_agreement": round(fidelity["model_int8_weighted"], 4),
               "int8_agreement_real": _round(fidelity.get("model_int8_eval_inputs")),
               "int8_weighted_agreement_real": _round(weighted_real), **domain_signals(domain)}
    bounds = calibration_bounds(min_agreement)
    if weighted_real is not None:  # real inputs judge it where there are some
        bounds.pop("int8_weighted_agreement")
    v, reasons = verdict(signals, bounds)
    reasons = [in_model_words(r) for r in reasons]
    return {"verdict": v, "signals": signals, "reasons": reasons,
            "bounds": {k: {"weak": w, "broken": b, "worse_when": "lower" if d == "min" else "higher"}
                       for k, (w, b, d) in bounds.items()}}


def in_model_words(reason: str) -> str:
    """A verdict reason as quantize says it: the user's model, its calibration set (convert's words are
    the teacher and its transfer set)."""
    return (reason.replace("the teacher's", "the model's").replace("the teacher", "the model")
            .replace("the transfer set", "the calibration set"))


def _round(v: float | None) -> float | None:
    return None if v is None else round(float(v), 4)


__all__ = ["BOUNDS", "assess", "assess_calibration", "bn_mismatch", "calibration_bounds", "class_coverage", "in_model_words", "probe_set", "teacher_agreement", "unresolved_check_reason", "verdict"]
