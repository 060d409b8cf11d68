"""report.md: the few tables a person reads in ten seconds."""

from __future__ import annotations


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def _ms(v: float) -> str:
    """Three significant digits: tiny models run in tens of microseconds."""
    return f"{v:.3g}" if v < 1 else f"{v:.2f}"


def _guard_line(calib: dict) -> str:
    g = calib.get("guardrail") or {}
    if not g:
        return ""
    head = (f"int8 guardrail: top-1 agreement with fp32 {_pct(calib['chosen']['agreement_with_fp32'])} on "
            f"{g['checked_on']} inputs (threshold {_pct(g['threshold'])})")
    if not g["triggered"]:
        return head + "; every layer quantized."
    return (head + f"; plain int8 reached {_pct(g['agreement_before'])}, so these layers stay in float: "
            + ", ".join(f"`{n}`" for n in g["excluded"]) + ("." if g["held"] else " (threshold still not met)."))


def render_markdown(report: dict) -> str:
    acc, fid = report["accuracy"], report["fidelity"]
    t, s = report["teacher"], report["student"]
    lines = [
        f"# dfkd-edge report: {t['path'].rsplit('/', 1)[-1]}",
        "",
        f"Teacher: {t['format']}, input {tuple(t['input_shape'])}, {t['num_classes']} classes, "
        f"{t['num_params']:,} parameters. Student: `{s['name']}` width {s['width']}, {s['num_params']:,} "
        f"parameters ({s['num_params'] / max(t['num_params'], 1):.1%} of the teacher). "
        f"Transfer set: {report['synthesis']['method']}, {report['synthesis']['train']} samples "
        f"(+{report['synthesis']['holdout']} held out). No real training data was used.",
        "",
        "## Recommended",
        "",
        "| target | file | precision | backend | why |",
        "|---|---|---|---|---|",
    ]
    for r in report["recommended"]:
        lines.append(f"| {r['target']} | `{r['file']}` | {r['precision']} | {r['backend']} | {r['reason']} |")
    lines += [
        "",
        "## Quality",
        "",
        f"| model | accuracy ({acc['dataset'] or 'no eval data'}) | fidelity to teacher (held-out synthetic) |",
        "|---|---|---|",
        f"| teacher | {_pct(acc['teacher'])} | - |",
        f"| student fp32 | {_pct(acc['student_fp32'])} | {_pct(fid['student_fp32'])} |",
        f"| student int8 ({report['calibration']['chosen_format']}) | {_pct(acc['student_int8'])} | "
        f"{_pct(fid['student_int8'])} |",
        "",
        "## Latency (measured on this host)",
        "",
        "| model | precision | backend | batch | p50 ms | p90 ms | p99 ms | throughput /s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["latency"]:
        lines.append(f"| {r['model']} | {r['precision']} | {r['backend']} | {r['batch']} | {_ms(r['p50_ms'])} | "
                     f"{_ms(r['p90_ms'])} | {_ms(r['p99_ms'])} | {r['throughput_qps']:,.0f} |")
    h = report["host"]
    lines += [
        "",
        f"Host: {h['cpu']}, {h['threads']} thread(s) of {h['cores']} cores; kind = measured.",
        f"int8 calibration: {report['calibration']['method']} on {report['calibration']['samples']} synthesized "
        f"samples; formats tried: " + ", ".join(
            f"{c['format']} {_ms(c['p50_ms_batch1'])} ms / fidelity {_pct(c['fidelity'])}"
            for c in report["calibration"]["candidates"]) + ".",
        _guard_line(report["calibration"]),
        f"ONNX parity: max |torch - onnxruntime| = {report['parity']['max_abs_diff']:.2e}.",
        "",
        "Stage times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in report["timings"].items()),
        "",
    ]
    return "\n".join(lines)
