"""The blocks of a ``dfkd-edge quantize`` report (the user's own model in int8), rendered by
dfkd_edge.report.render like convert's: the verdict, the recommendation, the calibration sources
side by side, the quality signals, then the latency, files and details both reports share."""

from __future__ import annotations

from dfkd_edge.quality import in_model_words
from dfkd_edge.report.render import (_STARTS, Block, _domain_text, _file_blocks, _latency_blocks, _pct,
                                     _quality_blocks, _signal_rows, _trt_blocks, _without_verdict)

#: the signals of dfkd_edge.quality.assess_calibration, in this report's words
_SIGNALS = {"class_coverage": "class coverage of the calibration set (entropy of the model's top-1, over an even "
                              "spread's)",
            "classes_seen": "classes the model predicts on the calibration set, over what an even spread reaches",
            "classes_missing": "classes the model never predicts on the calibration set",
            "teacher_confidence": "model's mean top-1 probability on the calibration set",
            "bn_mismatch": "BatchNorm statistics mismatch of held-out synthetic samples (standard units)"}
_SOURCE_NAMES = {"synthetic": "synthesized from the model (shipped)", "gaussian": "Gaussian N(0, 1) noise",
                 "real": "real inputs (--calib-data)"}


def model_sections(report: dict) -> list[Block]:
    trt = (report.get("targets") or {}).get("tensorrt")
    return _summary(report) + _trt_blocks(trt) + _latency_blocks(report) + _file_blocks(report, trt)


def _summary(report: dict) -> list[Block]:
    m, syn, acc, fid = report["model"], report["synthesis"], report["accuracy"], report["fidelity"]
    calib = report["calibration"]
    title = (m.get("onnx") or m["path"]).rsplit("/", 1)[-1]
    b = [Block("h1", f"dfkd-edge quantize report: {title}")]
    b += _quality_blocks(report.get("quality"), "this int8 model", "the model")
    source = (f"`{title}` (ONNX, calibrated as it is), synthesized from its PyTorch source `{m['path'].rsplit('/', 1)[-1]}`, "
              if m.get("onnx") else "")
    b.append(Block("p", f"Model: {source}{m['format']}, input {tuple(m['input_shape'])}, {m['num_classes']} classes, "
                        f"{m['num_params']:,} parameters, quantized to int8 as it is (no student). Calibration set: "
                        f"{syn['train']} samples synthesized from the model by {syn['method']}"
                        + (f" ({in_model_words(syn['auto']['why'])})" if syn.get("auto") else "")
                        + (f", each started as {_STARTS[syn['start']]}" if syn.get("start") else "")
                        + f", +{syn['holdout']} held out to check the int8 model against the model. No real data "
                        "was used to calibrate." + _domain_text(m)))
    b += [Block("h2", "Recommended"),
          Block("table", header=["target", "file", "precision", "backend", "basis", "status", "why"],
                rows=[[r["target"], f"`{r['file']}`", r["precision"], r["backend"], r.get("kind") or "-",
                       str(r.get("status", "-")).upper(), _without_verdict(r["reason"])]
                      for r in report["recommended"]]),
          Block("h2", "Calibration sources"),
          Block("p", f"The same model calibrated for ONNX Runtime ({report['calibration']['chosen_format']}, "
                     f"{calib['method']}, the same guardrail) on each source; top-1 agreement with the fp32 model "
                     f"on {report['calibration_sources_measured_on']}, and how far the int8 output distribution is "
                     "from fp32's there (mean KL divergence: lower is closer; it tells sources apart where agreement "
                     "is 100% for all)."),
          Block("table", header=["calibration source", "samples", f"int8 accuracy ({acc['dataset'] or 'no eval data'})",
                                 "agreement with fp32", "output KL to fp32 (nats)", "layers left in float"],
                rows=[_source_row(r) for r in report["calibration_sources"]]),
          Block("h2", "Quality"),
          Block("table", header=["model", f"accuracy ({acc['dataset'] or 'no eval data'})",
                                 "agreement with the model (held-out synthetic)"],
                rows=[["model (PyTorch)", _pct(acc["model"]), "-"],
                      ["model fp32 (ONNX)", _pct(acc["model_fp32"]), _pct(fid["model_fp32"])],
                      [f"model int8 ({calib['chosen_format']})", _pct(acc["model_int8"]), _pct(fid["model_int8"])]])]
    if report.get("quality"):
        b.append(Block("p", "Data-free signals (no real data needed; dfkd_edge/quality.py says how each is computed):"))
        b.append(Block("table", header=["signal", "value", "bounds"], rows=_signal_rows(report["quality"], _SIGNALS)))
    return b


def _source_row(r: dict) -> list[str]:
    floats = r["float_layers"]
    left = "none" if not floats else f"{len(floats)}: " + ", ".join(f"`{n}`" for n in floats[:6]) + (
        ", ..." if len(floats) > 6 else "")
    if not r["guardrail_held"]:
        left += " (agreement threshold still not met)"
    return [_SOURCE_NAMES.get(r["source"], r["source"]), str(r["samples"]), _pct(r["accuracy"]),
            _pct(r["agreement_with_fp32"]), _kl(r.get("output_kl_to_fp32")), left]


def _kl(v: float | None) -> str:
    return "-" if v is None else f"{v:.2g}"
