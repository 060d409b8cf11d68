"""convert's report as blocks (heading, paragraph, table, image), in reading order; the blocks quantize's
report shares with it (dfkd_edge.report.render_model). dfkd_edge.report.document renders them to Markdown
and to one self-contained HTML file (inline CSS, plots as data URIs).
Latency tables are split by target and by kind, so measured, measured-remote and estimated
figures never share a table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dfkd_edge.domain import corr_pairs

KIND_TITLE = {"measured": "measured on this host", "measured-remote": "measured on the device over SSH",
              "estimated": "estimated (a model of the target, not measured)"}


@dataclass
class Block:
    kind: str  # h1 h2 h3 p table img verdict
    text: str = ""
    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _ms(v) -> str:
    """Three significant digits: tiny models run in tens of microseconds."""
    if v is None:
        return "-"
    return f"{v:.3g}" if v < 1 else f"{v:.2f}"


def _size(n: int) -> str:
    return f"{n / 1024:.1f} KiB" if n < 1 << 20 else f"{n / (1 << 20):.2f} MiB"


def _measure(row: dict, n: int, sure: int | None, weighted: str = "weighted_agreement",
             top1: str = "agreement_with_fp32", what: str = "inputs") -> str:
    """The int8 model against fp32 as the guardrail measures it (dfkd_edge.export.quantize.weighted_agreement: on
    the ``sure`` of ``n`` inputs fp32 is sure of), plain top-1 agreement on all ``n`` next to it."""
    if row.get(weighted) is None or sure is None:  # a run recorded before the guardrail weighed its disagreements
        return f"top-1 agreement with fp32 {_pct(row[top1])} on {n} {what}"
    on = f"the {sure} of {n} {what} fp32 is sure of" if sure else f"all {n} {what} (fp32 is sure of none)"
    return f"weighted agreement with fp32 {_pct(row[weighted])} on {on} (top-1 agreement {_pct(row[top1])} on all)"


def _guard_line(calib: dict) -> str:
    g = calib.get("guardrail") or {}
    if not g:
        return ""
    c = calib["chosen"]
    head = (f"int8 guardrail: {_measure(c, g['checked_on'], g.get('sure_samples'))} (threshold "
            f"{_threshold(g, c.get('weighted_agreement') or 0.0)})")
    if not g["triggered"]:
        return head + "; every layer quantized."
    if not g["excluded"]:
        return (head + f"; plain int8 reached {_pct(g['agreement_before'])}, and no set of layers left in float "
                "agreed better, so plain int8 ships (threshold not met).")
    return (head + f"; plain int8 reached {_pct(g['agreement_before'])}, so these layers stay in float: "
            + ", ".join(f"`{n}`" for n in g["excluded"]) + ("." if g["held"] else " (threshold still not met)."))


def _threshold(g: dict, agreement: float) -> str:
    """The guardrail's threshold; where too few sure samples relaxed it (dfkd_edge.export.quantize.
    resolvable_threshold), the one asked and whether ``agreement`` met it."""
    asked = g.get("threshold_asked", g["threshold"])
    if g["threshold"] >= asked:
        return _pct(g["threshold"])
    few = f"fp32 is sure of only {g.get('sure_samples')} check samples, too few to judge {_pct(asked)}"
    if agreement >= asked:
        return f"{_pct(asked)}, met; {few}, so down to {_pct(g['threshold'])} would have passed"
    return f"{_pct(g['threshold'])}, NOT the {_pct(asked)} asked: {few}, so int8 is not vouched for"


def _trt_guard_line(g: dict) -> str:
    if not g.get("triggered"):
        return ""
    threshold = _pct(g["threshold"])
    if g["threshold"] < g.get("threshold_asked", g["threshold"]):
        threshold += (f", relaxed from {_pct(g['threshold_asked'])}: fp32 is sure of only {g.get('sure_samples')} "
                      "check samples")
    if g.get("int8_usable") is False:
        return (f" Plain int8's weighted agreement was {_pct(g['agreement_before'])} (< {threshold}) "
                "and only a model with every layer in float met the threshold: int8 buys nothing on TensorRT here, "
                "so TensorRT targets get fp16 or fp32.")
    return (f" Plain int8's weighted agreement was {_pct(g['agreement_before'])} (< {threshold}), so "
            "these layers stay in float there (TensorRT runs them in fp16/fp32): "
            + ", ".join(f"`{n}`" for n in g["excluded"])
            + ("." if g.get("held") else "; the threshold is still not met."))


def _latency_groups(rows: list[dict]) -> list[tuple[str, str, list[dict]]]:
    """(device, kind, rows) in first-seen order."""
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["device"], r["kind"]), []).append(r)
    return [(d, k, rs) for (d, k), rs in groups.items()]


_STARTS = {"dead-leaves": "a dead-leaves image (flat shapes in the input domain's colours)",
           "noise": "noise in the input domain",
           "half": "a dead-leaves image for half of each batch and noise in the input domain for the rest"}
_MODE_TEXT = {"kd": "KD from the teacher's soft targets",
              "vkd": "VKD, soft targets from the virtual generator alone; the teacher was not run while the "
                     "student trained",
              "kd+vkd": "KD + VKD, the teacher's and the virtual generator's soft targets, weighted"}


def _multi_teacher_blocks(m: dict | None, dataset: str | None) -> list[Block]:
    """Several teachers: each teacher, the ensemble, each header, the aggregated student (PyTorch fp32)."""
    if not m:
        return []
    rows = [[f"teacher {i}: `{t['path'].rsplit('/', 1)[-1]}` ({t['num_params']:,} parameters)", _pct(t["accuracy"]),
             f"agrees with the ensemble on {_pct(t['agreement_with_ensemble'])}"] for i, t in enumerate(m["teachers"])]
    rows.append(["ensemble of the teachers (mean logits)", _pct(m["ensemble"]["accuracy"]), "-"])
    if m.get("student"):  # one student distilled from the ensemble
        rows.append(["student (shipped)", _pct(m["student"]["accuracy"]),
                     f"agrees with the ensemble on {_pct(m['student']['fidelity'])}"])
        text = ("Several teachers, one student: the transfer set was inverted from the teachers' ensemble (its "
                "mean logits and every teacher's BatchNorm statistics) and the student distilled from the "
                "ensemble's soft targets. Figures are PyTorch fp32; agreement on held-out synthetic samples.")
        return _teachers_table("Teachers and student", text, rows, dataset)
    rows += [[f"student header {h['header']} (learns teacher {h['header']})", _pct(h["accuracy"]),
              f"agrees with its teacher on {_pct(h['fidelity_to_its_teacher'])}"] for h in m["headers"]]
    rows.append(["student, mean of the headers", _pct(m["student_mean"]["accuracy"]),
                 f"agrees with the ensemble on {_pct(m['student_mean']['fidelity'])}"])
    if m.get("student_attention"):
        rows.append(["student, attention over the headers (shipped)", _pct(m["student_attention"]["accuracy"]),
                     f"agrees with the ensemble on {_pct(m['student_attention']['fidelity'])}"])
    agg = m["aggregation"]
    text = (f"Several teachers, one student (CDFKD-MFS): one header per teacher on a shared backbone, trained "
            f"data-free against a generator; the exported model aggregates its headers by "
            f"{'attention trained on ' + str(agg['samples']) + ' labelled samples' if agg['method'] == 'attention' else 'their mean'}"
            + (" (which did not beat the mean on held-out halves of those samples, so its weights are uniform: "
               "the mean)" if agg.get("kept") is False else "")
            + ". Figures are PyTorch fp32; agreement on held-out synthetic samples.")
    return _teachers_table("Teachers and headers", text, rows, dataset)


def _teachers_table(title: str, text: str, rows: list, dataset: str | None) -> list[Block]:
    return [Block("h3", title), Block("p", text),
            Block("table", header=["model", f"accuracy ({dataset or 'no eval data'})", "fidelity"], rows=rows)]


def _compute_line(report: dict) -> str:
    """Where synthesis and distillation ran (reports written before these fields have none)."""
    c, d = report.get("compute"), report.get("distributed")
    if not c:
        return ""
    ranks = (f" in {d['world_size']} processes ({d['backend']}, {d['nodes']} node{'s' if d['nodes'] > 1 else ''})"
             if d and d.get("world_size", 1) > 1 else "")
    extras = [x for x, on in (("channels-last", c.get("channels_last")), ("torch.compile", c.get("compile"))) if on]
    return (f" Synthesis and distillation ran on {c['device']} ({c['device_name']}), {c['precision']}"
            + (", " + ", ".join(extras) if extras else "") + ranks + f", {c.get('threads_per_rank', '?')} "
            "thread(s) per process." if c.get("applies_to", "").startswith("synthesis") else
            f" Synthesis and distillation ran on the CPU (--device applied to {c['applies_to']}).")


def _distillation_blocks(d: dict, dataset: str | None) -> list[Block]:
    if not d:
        return []
    text = f"Distillation: {_MODE_TEXT.get(d['mode'], d['mode'])}"
    if d.get("weights"):
        text += f" (loss weights KD {d['weights']['kd']:g}, VKD {d['weights']['vkd']:g}; T = {d['temperature']:g})"
    out = [Block("p", text + ".")]
    g = d.get("virtual_generator")
    if g:
        f = g["fidelity"]
        out.append(Block("p", f"Virtual generator `{g['file']}` ({g['parameters']:,} parameters, "
                              f"{_size(g['size_bytes'])}): on {f['held_out_samples']} held-out synthetic samples, "
                              f"KL(teacher class mean || generator class mean) = {f['class_kl']:.4f}; per-sample "
                              f"KL {f['sample_kl']:.3f} (a fixed class-mean target: {f['sample_kl_class_mean']:.3f}); "
                              f"argmax = label for {_pct(f['label_agreement'])} of noise draws; mean entropy "
                              f"{f['entropy_generator']:.3f} vs the teacher's {f['entropy_teacher']:.3f} nats."))
    i = d.get("inputs")
    if i:
        out.append(Block("p", f"The student's inputs: `{i['file']}`, {i['samples']:,} samples synthesized for "
                              f"{i['made_for']}."))
    c = d.get("comparison")
    if c:
        out.append(Block("table", header=["student (PyTorch fp32)", f"accuracy ({dataset or 'no eval data'})",
                                          "fidelity to teacher (held-out synthetic)"],
                         rows=[[f"{d['mode']} (this run)", _pct(c[d['mode']]["accuracy"]),
                                _pct(c[d['mode']]["fidelity"])],
                               [f"plain KD, transfer set (`{c['kd']['file']}`)", _pct(c["kd"]["accuracy"]),
                                _pct(c["kd"]["fidelity"])]]))
        basis = "accuracy" if c["kd"]["accuracy"] is not None else "fidelity"
        gap = c["kd"][basis] - c[d["mode"]][basis]
        if gap > 0.01:
            out.append(Block("p", f"Plain KD from the transfer set scored {100 * gap:.1f} points higher "
                                  f"({basis}); unless the teacher cannot run where the student trains, convert "
                                  "again with `--distill kd`."))
    return out


_VERDICT_HEAD = {
    "ok": "Data-free verdict: OK. Nothing the run can check without real data speaks against {subject}.",
    "doubtful": "Data-free verdict: DOUBTFUL. The run cannot vouch for {subject}; check it on labelled data "
                "(--eval-data) before shipping it.",
    "unreliable": "Data-free verdict: UNRELIABLE. The signals below say {subject} is likely far from "
                  "{reference} on real inputs; do not ship it without checking it on labelled data.",
}

_SIGNAL_TEXT = {
    "class_coverage": "class coverage of the transfer set (entropy of the teacher's top-1, over an even spread's)",
    "classes_seen": "classes the teacher predicts on the transfer set, over what an even spread reaches",
    "classes_missing": "classes the teacher never predicts on the transfer set",
    "teacher_confidence": "teacher's mean top-1 probability on the transfer set",
    "bn_mismatch": "BatchNorm statistics mismatch of held-out synthetic samples (standard units)",
    "teacher_agreement": "lowest agreement of one teacher with the ensemble (held-out synthetic)",
    "fidelity_fp32": "student fp32 agreement with the teacher (held-out synthetic)",
    "fidelity_int8": "student int8 agreement with the teacher (held-out synthetic)",
    "probe_agreement": "student agreement with the teacher on probes between classes",
    "baseline_gap": "plain-KD student of the same transfer set minus this one, probe agreement",
    "int8_agreement": "int8 model's top-1 agreement with the model (held-out synthetic)",
    "int8_weighted_agreement": "int8 model's agreement with the model on the samples it is sure of, disagreements "
                               "weighed by its probabilities (held-out synthetic; what the int8 guardrail holds)",
    "int8_agreement_real": "int8 model's top-1 agreement with the model (eval inputs)",
    "int8_weighted_agreement_real": "int8 model's weighted agreement with the model (eval inputs)",
    "domain_source": "where the input domain came from",
    "domain_fit": "first BatchNorm's mismatch left by the input domain (standard units)",
}


def _quality_blocks(q: dict | None, subject: str = "this student", reference: str = "its teacher") -> list[Block]:
    """The verdict callout (first thing in the report) with its reasons."""
    if not q:
        return []
    text = _VERDICT_HEAD[q["verdict"]].format(subject=subject, reference=reference)
    if q["reasons"]:
        text += " Why: " + "; ".join(q["reasons"]) + "."
    return [Block("verdict", text, header=[q["verdict"]])]


def _signal_rows(q: dict, labels: dict | None = None) -> list[list[str]]:
    bounds = q.get("bounds", {})
    rows = []
    for k, label in {**_SIGNAL_TEXT, **(labels or {})}.items():
        v = q["signals"].get(k)
        if v is None and k != "bn_mismatch":
            continue
        b = bounds.get(k)
        bound = (f"doubtful {'<' if b['worse_when'] == 'lower' else '>'} {b['weak']:g}, unreliable "
                 f"{'<' if b['worse_when'] == 'lower' else '>'} {b['broken']:g}") if b else "-"
        shown = "n/a (no observable BatchNorm)" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))
        rows.append([label, shown, bound])
    return rows


def _without_verdict(reason: str) -> str:
    """The reason without the verdict sentence the pipeline puts first (the status column and the
    verdict box above say it)."""
    marker = "before shipping. "
    return reason.split(marker, 1)[1] if reason.startswith(("DOUBTFUL", "UNRELIABLE")) and marker in reason else reason


def _run_title(report: dict) -> str:
    """The teacher's file name, or every teacher's with several (CDFKD-MFS)."""
    members = (report.get("multi_teacher") or {}).get("teachers") or []
    names = [m["path"].rsplit("/", 1)[-1] for m in members] or [report["teacher"]["path"].rsplit("/", 1)[-1]]
    return names[0] if len(names) == 1 else f"{len(names)} teachers ({', '.join(names)})"


def _domain_text(t: dict) -> str:
    d = t.get("input_domain")
    if not d:
        return ""
    def fmt(v):
        return ", ".join(f"{x:.4g}" for x in v[:3]) + (", ..." if len(v) > 3 else "")
    rng = f", range [{d['low']:g}, {d['high']:g}]" if d.get("low") is not None else ""
    tex = (f", each sample's level spread ({fmt(d['level_std'])}), smooth part of the std ({fmt(d['smooth_std'])})"
           if d.get("level_std") is not None else "")
    colour = f", channel correlation ({fmt(corr_pairs(d['corr']))})" if d.get("corr") else ""
    return (f" Input domain: mean ({fmt(d['mean'])}), std ({fmt(d['std'])}){tex}{colour}{rng}; {d['source']}: "
            f"{d['detail']}.")


def student_sections(report: dict) -> list[Block]:
    """convert's report as blocks, in reading order."""
    trt = (report.get("targets") or {}).get("tensorrt")
    return _summary_blocks(report) + _trt_blocks(trt) + _latency_blocks(report) + _file_blocks(report, trt)


def _choice_blocks(student: dict) -> list[Block]:
    """How --max-latency-ms chose the student, or how a user's --student-factory made it."""
    c = student.get("chosen_for")
    if student.get("name") == "factory":
        return [Block("p", f"Student: your own, from --student-factory `{student['factory']}`.")]
    if not c:
        return []
    chosen = (c["chosen"]["family"], c["chosen"]["width"])
    best = next(x for x in c["candidates"] if (x["family"], x["width"]) == chosen)
    mode = f" (power mode {c['power_mode']})" if c.get("power_mode") else ""
    return [Block("p", f"Student chosen for {c['target']}{mode}: {c['rule']} "
                       f"{c['max_latency_ms']:g} ms, among {len(c['candidates'])} candidates of "
                       f"{', '.join(dict.fromkeys(x['family'] for x in c['candidates']))} (latency plot): "
                       f"`{best['family']}` width {best['width']}, {best['macs'] / 1e6:,.1f} M multiply-accumulates, "
                       f"{best['p50_ms']:.3g} ms. " + _choice_how(c))]


def _choice_how(c: dict) -> str:
    """Where the candidates' latencies came from: the estimate and its measured error, or the device itself and
    how far the estimate was from it there."""
    if c["how"] == "estimated":
        return f"The latencies are estimated, not measured: {c['error']}."
    m, e = c["measured_on"], c["estimate_vs_measured"]
    return (f"The latencies were measured on the device over SSH ({m['remote']}, {m['runner']}, {m['format']}). "
            f"The estimate was off by {e['median_abs_error']:.0%} at the median on these {e['rows']} candidates "
            f"(estimate / measured {e['worst_ratio']:.2f} at worst); its stated error is {c['error']}.")


def _summary_blocks(report: dict) -> list[Block]:
    acc, fid = report["accuracy"], report["fidelity"]
    t, s = report["teacher"], report["student"]
    calib = report["calibration"]
    b = [Block("h1", f"dfkd-edge report: {_run_title(report)}")]
    b += _quality_blocks(report.get("quality"))
    b += _choice_blocks(s)
    b += [Block("p", f"Teacher: {t['format']}, input {tuple(t['input_shape'])}, {t['num_classes']} classes, "
                    f"{t['num_params']:,} parameters. Student: `{s['name']}` width {s['width']}, {s['num_params']:,} "
                    f"parameters ({s['num_params'] / max(t['num_params'], 1):.1%} of the teacher). "
                    f"Transfer set: {report['synthesis']['method']}"
                    + (f" (chosen by --method auto: {report['synthesis']['auto']['why']})"
                       if report["synthesis"].get("auto") else "")
                    + (f", each sample started as {_STARTS[report['synthesis']['start']]}"
                       if report["synthesis"].get("start") else "")
                    + f", {report['synthesis']['train']} samples "
                    f"(+{report['synthesis']['holdout']} held out). No real training data was used."
                    + _domain_text(t) + _compute_line(report)),
         Block("h2", "Recommended"),
         Block("table", header=["target", "file", "precision", "backend", "basis", "status", "why"],
               rows=[[r["target"], f"`{r['file']}`", r["precision"], r["backend"], r.get("kind") or "-",
                      str(r.get("status", "-")).upper(), _without_verdict(r["reason"])]
                     for r in report["recommended"]]),
         Block("h2", "Quality"),
         Block("table", header=["model", f"accuracy ({acc['dataset'] or 'no eval data'})",
                                "fidelity to teacher (held-out synthetic)"],
               rows=[["teacher", _pct(acc["teacher"]), "-"],
                     ["student fp32", _pct(acc["student_fp32"]), _pct(fid["student_fp32"])],
                     [f"student int8 ({calib['chosen_format']})", _pct(acc["student_int8"]),
                      _pct(fid["student_int8"])]])]
    if report.get("quality"):
        b.append(Block("p", "Data-free signals (no real data needed; dfkd_edge/quality.py says how each is computed):"))
        b.append(Block("table", header=["signal", "value", "bounds"], rows=_signal_rows(report["quality"])))
    b += _multi_teacher_blocks(report.get("multi_teacher"), acc["dataset"])
    b += _distillation_blocks(report.get("distillation") or {}, acc["dataset"])
    return b


def _trt_blocks(trt: dict | None) -> list[Block]:
    b = []
    if trt:
        sure = (trt.get("guardrail") or {}).get("sure_samples")
        measured = _measure(trt, trt["agreement_samples"], sure, "qdq_weighted_agreement", "qdq_agreement_with_fp32",
                            "held-out synthetic samples")
        b.append(Block("p", f"TensorRT int8 model (`{trt['qdq_model']}`, symmetric S8S8 Q/DQ): {measured}, "
                            f"measured with {trt['agreement_measured_with']}; "
                            f"TensorRT Q/DQ placement rules: "
                            f"{'all hold' if not trt['qdq_rule_violations'] else 'VIOLATED'}."
                            + _trt_guard_line(trt.get("guardrail") or {})))
    return b


def _latency_blocks(report: dict) -> list[Block]:
    b = []
    b.append(Block("h2", "Latency"))
    b.append(Block("img", "latency.png"))
    for device, kind, rs in _latency_groups(report["latency"]):
        b.append(Block("h3", f"{device}: {KIND_TITLE.get(kind, kind)}"))
        b.append(Block("table", header=["model", "precision", "backend", "batch", "p50 ms", "p90 ms", "p99 ms",
                                        "throughput /s"],
                       rows=[[r["model"], r["precision"], r["backend"], str(r["batch"]), _ms(r["p50_ms"]),
                              _ms(r["p90_ms"]), _ms(r["p99_ms"]), f"{r['throughput_qps']:,.0f}"] for r in rs]))
        if kind == "measured" and device == "host-cpu":
            h = report["host"]
            b.append(Block("p", f"Host: {h['cpu']}, {h['threads']} thread(s) of {h['cores']} cores."))
        if kind == "estimated":
            est = (report.get("targets") or {}).get("estimates", {}).get(device)
            if est:
                b.append(Block("p", _estimate_text(est, device)))
    return b


def _estimate_text(est: dict, device: str) -> str:
    """How a target's rows were estimated and how wrong such estimates have been measured to be."""
    peaks = ", ".join(f"{k} {v / 1e12:.3g} T/s" for k, v in est["peak_ops_per_s"].items())
    if "tensor_efficiency" in est:
        how = (f"{est['method']}: Tensor Core work at {est['tensor_efficiency']:.0%} of peak, depthwise "
               f"convolutions at {est['depthwise_efficiency']:.0%} of the CUDA cores' rate, bandwidth at "
               f"{est['bandwidth_efficiency']:.0%} of {est['bandwidth_gbs']} GB/s, {est['kernel_us']:.3g} us per "
               f"kernel, {est['fixed_us']:.3g} us per inference; power mode {est.get('power_mode')}; peaks {peaks}")
    else:
        how = (f"{est['method']}; compute efficiency {est['compute_efficiency']:.0%} of peak, bandwidth efficiency "
               f"{est['bandwidth_efficiency']:.0%} of {est['bandwidth_gbs']} GB/s, {est['kernel_overhead_us']} us per "
               f"kernel, {est['fixed_overhead_us']} us per inference; peaks {peaks}")
    error = est.get("error", "not measured")
    return (f"Estimated, not measured: {how}. How wrong it can be: {error}. p90/p99 are not estimated. Figures and "
            f"sources: `dfkd-edge targets show {device}`.")


def _file_blocks(report: dict, trt: dict | None) -> list[Block]:
    calib = report["calibration"]
    b = []
    b.append(Block("h2", "Accuracy and latency"))
    b.append(Block("img", "accuracy_latency.png"))
    sizes = report.get("model_sizes") or {}
    if sizes:
        b.append(Block("h2", "Model files"))
        b.append(Block("table", header=["file", "size"], rows=[[f"`{k}`", _size(v)] for k, v in sizes.items()]))
    if trt:
        b.append(Block("p", "TensorRT engines are built on the device: " + ", ".join(
            f"`{v}` ({k})" for k, v in trt["build_scripts"].items()) + ". Calibration caches (TensorRT 10.x "
            "implicit int8): " + (", ".join(f"`{v}`" for v in trt["calibration_caches"].values()) or "none")
            + ". dfkd-edge has not run these on a real TensorRT."))
    b.append(Block("h2", "Details"))
    b.append(Block("p", f"int8 calibration: {calib['method']} on {calib['samples']} synthesized samples; formats "
                        "tried: " + ", ".join(f"{c['format']} {_ms(c['p50_ms_batch1'])} ms / fidelity "
                                             f"{_pct(c['fidelity'])}" for c in calib["candidates"]) + "."))
    for f in calib.get("failed_formats") or []:
        b.append(Block("p", f"int8 format {f['format']} left out: onnxruntime could not make or load it for this "
                            f"network ({f['error']})."))
    if _guard_line(calib):
        b.append(Block("p", _guard_line(calib)))
    b.append(Block("p", f"ONNX parity: max |torch - onnxruntime| = {report['parity']['max_abs_diff']:.2e}."))
    b.append(Block("p", "Stage times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in report["timings"].items())))
    return b + plan_blocks(report.get("plan"))


def plan_blocks(p: dict | None) -> list[Block]:
    """The plan printed at the start set against what each stage took, and what ``--time-budget`` chose."""
    if not p or not p.get("stages"):
        return []
    rows = [[r["stage"], f"{r['planned_s']:.1f}", f"{r['actual_s']:.1f}", f"{r['actual_over_planned']:.2f}"]
            for r in p["stages"]]
    rows.append(["all planned stages", f"{p['planned_s']:.1f}", f"{p['actual_s']:.1f}",
                 "-" if p["actual_over_planned"] is None else f"{p['actual_over_planned']:.2f}"])
    b = [Block("h2", "Cost: planned and taken"),
         Block("p", "Each stage's seconds as planned at the start from a probe of the model on this machine, "
                    "and as taken (stages skipped as finished are left out).")]
    b.append(Block("table", header=["stage", "planned s", "took s", "took / planned"], rows=rows))
    b += [Block("p", line) for line in p.get("budget_lines") or []]
    return b
