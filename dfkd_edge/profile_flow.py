"""``dfkd-edge profile``: latency rows for one model and one target, from wherever it can be measured.

- a device target without ``--remote``: the target's estimated rows (``estimated``, each with the error
  the estimate has been measured to have) for an fp32 ONNX model.
- ``--remote``: on the device over SSH (``measured-remote``; trtexec or the bundled ONNX Runtime runner).
- ``--trtexec-log``: trtexec output captured on the device (the build script keeps it): ``measured-remote``.
- neither: on this machine (``measured``): ONNX Runtime's CPU provider, its CUDA provider when
  present, TensorRT for engines when it imports and a GPU is there. A row measured here is
  labelled with this host, never with the target's name.

``--report DIR`` merges the rows into a convert run's report and re-renders it, so the
recommendation for that target moves from the estimate to the measurement.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np

from dfkd_edge.backends.onnxruntime import OrtRunner
from dfkd_edge.backends.tensorrt.engine import tensorrt_status, time_engine
from dfkd_edge.backends.tensorrt.trtexec import TrtexecParseError, batch_from_shapes, latency_from_trtexec, parse_trtexec
from dfkd_edge.errors import UserError
from dfkd_edge.report import write_report
from dfkd_edge.report.recommend import recommend, with_verdict
from dfkd_edge.runfiles import MODEL_FILES, STUDENT_FILES
from dfkd_edge.targets.host import HOST_TARGET, LatencyRow, measure_interleaved
from dfkd_edge.targets.profile import TargetProfile, load_profile
from dfkd_edge.targets.estimate import estimate_rows
from dfkd_edge.targets.remote import REMOTE_PYTHON, TRTEXEC, Remote, profile_remote
from dfkd_edge.options import parse_input_shape

log = logging.getLogger(__name__)
MODEL_SUFFIXES = (".onnx", ".engine", ".plan")


def precision_from_name(path: Path) -> str:
    n = path.name.lower()
    return "int8" if ("int8" in n or "qdq" in n) else "fp16" if "fp16" in n else "fp32"


def onnx_input(path: Path) -> tuple[str, tuple[int, ...] | None]:
    import onnx

    try:
        g = onnx.load(str(path), load_external_data=False).graph
    except Exception as e:
        raise UserError(f"{path} is not a readable ONNX model ({type(e).__name__})") from None
    inp = g.input[0]
    dims = inp.type.tensor_type.shape.dim[1:]
    shape = tuple(d.dim_value for d in dims) if all(d.HasField("dim_value") for d in dims) else None
    return inp.name, shape


def rows_from_trtexec_logs(logs: list[str], profile: TargetProfile, precision: str | None,
                           batches: tuple[int, ...]) -> list[dict]:
    """Rows from captured trtexec output; precision from the option, else from each log's name
    (the build script names them ``student_int8_qdq.engine.b1.log``, ``student_fp16.engine.b32.log``)."""
    rows = []
    for f in logs:
        p = Path(f)
        if not p.is_file():
            raise UserError(f"--trtexec-log {f} does not exist")
        try:
            parsed = parse_trtexec(p.read_text(errors="replace"))
        except TrtexecParseError as e:
            raise UserError(f"{f}: {e}") from None
        batch = batch_from_shapes(parsed["shapes"])
        if batch is None:
            if len(batches) != 1:
                raise UserError(f"{f} does not say its batch (no --shapes); pass one --batch")
            batch = batches[0]
        lat = latency_from_trtexec(parsed, batch)
        lat.pop("note")
        rows.append(LatencyRow(model="student", precision=precision or precision_from_name(p), backend="tensorrt",
                               device=f"{profile.name} (trtexec log)", kind="measured-remote", batch=batch,
                               runs=0, **lat).to_dict())
    return rows


def _local_rows(model: Path, precision: str, input_shape, batches, budget_s: float, threads: int) -> list[dict]:
    rng = np.random.default_rng(0)
    if model.suffix in (".engine", ".plan"):
        st = tensorrt_status()
        return [r.to_dict() for r in time_engine(model, precision, input_shape, batches, budget_s,
                                                 device=st["gpu"] or "gpu")]
    import onnxruntime as ort

    providers = [["CPUExecutionProvider"]]
    if "CUDAExecutionProvider" in ort.get_available_providers():
        providers.append(["CUDAExecutionProvider", "CPUExecutionProvider"])
    rows = []
    for b in batches:
        x = rng.standard_normal((b, *input_shape)).astype(np.float32)
        runners = [("student", OrtRunner(model, threads, precision, providers=p)) for p in providers]
        rows += [r.to_dict() for r in measure_interleaved(runners, x, budget_s=budget_s * len(runners),
                                                           device=HOST_TARGET)]
    return rows


def _estimated_rows(model: Path, profile: TargetProfile, precision: str | None, batches) -> list[dict]:
    """The device's estimated rows for an fp32 ONNX model: each precision the target runs (or ``precision``),
    each with the error the estimate has been measured to have."""
    if model.suffix != ".onnx":
        raise UserError(f"{model}: {profile.name} cannot be reached and an engine cannot be estimated; give the "
                        "fp32 .onnx it was built from, or --remote to measure on the device")
    import onnx

    if any(n.op_type in ("QuantizeLinear", "QLinearConv") for n in onnx.load(str(model)).graph.node):
        raise UserError(f"{model} is already quantized: estimate from the fp32 ONNX (the int8 engine is built from "
                        "it; its int8 rows are what the device runs), or pass --remote to measure on the device")
    if precision is not None and precision not in profile.precisions:
        raise UserError(f"{profile.name} does not run {precision} (it runs {', '.join(profile.precisions)})")
    log.warning("%s cannot be reached: these rows are estimated, not measured (pass --remote to measure)",
                profile.name)
    rows, _ = estimate_rows(model, profile, batches=tuple(batches), model=model.stem)
    return [r for r in rows if precision is None or r["precision"] == precision]


def merge_into_report(report_dir: str, rows: list[dict], profile: TargetProfile) -> None:
    """``rows`` into a convert or quantize run's report, the target's recommendation made again (and
    marked with the run's verdict), the report re-rendered."""
    d = Path(report_dir)
    if not (d / "report.json").is_file():
        raise UserError(f"--report {report_dir}: no report.json there (give a convert or quantize output directory)")
    report = json.loads((d / "report.json").read_text())
    names = MODEL_FILES if report.get("flow") == "quantize" else STUDENT_FILES
    rows = [{**r, "model": names.model} for r in rows]  # the run's shipped model, whatever the file is called
    keys = {(r["device"], r["kind"], r["precision"], r["batch"], r["backend"]) for r in rows}
    report["latency"] = [r for r in report["latency"]
                         if (r["device"], r["kind"], r["precision"], r["batch"], r["backend"]) not in keys] + rows
    quality = {"accuracy": report["accuracy"], "fidelity": report["fidelity"]}
    rec = recommend(profile, report["latency"], quality, report.get("targets") or {}, names, report.get("calibration"))
    if report.get("quality"):
        rec = with_verdict(rec, report["quality"], "the int8 model" if names is MODEL_FILES else "the student")
    targets = [r["target"] for r in report["recommended"]]
    if profile.name in targets:  # keep the report's order of targets
        report["recommended"][targets.index(profile.name)] = rec
    else:
        report["recommended"].append(rec)
    write_report(d, report)


def profile_command(model: str | None, target: str, *, remote: str | None = None, ssh_config: str | None = None,
                    remote_python: str = REMOTE_PYTHON, runner: str = "auto", trtexec_bin: str = TRTEXEC,
                    trtexec_logs: list[str] | None = None, precision: str | None = None,
                    input_shape: str | None = None, batches: tuple[int, ...] = (1, 32), budget_s: float = 1.0,
                    threads: int = 0, report_dir: str | None = None) -> list[dict]:
    profile = load_profile(target)
    if any(b <= 0 for b in batches) or budget_s <= 0:
        raise UserError("--batch and --budget must be positive")
    shape = parse_input_shape(input_shape)
    if trtexec_logs:
        if model:
            raise UserError("give MODEL or --trtexec-log, not both")
        rows = rows_from_trtexec_logs(trtexec_logs, profile, precision, batches)
    else:
        if not model:
            raise UserError("give the MODEL to profile (.onnx, .engine or .plan), or --trtexec-log")
        path = Path(model)
        if not path.is_file():
            raise UserError(f"{model} does not exist")
        if path.suffix not in MODEL_SUFFIXES:
            raise UserError(f"{model}: expected {', '.join(MODEL_SUFFIXES)}")
        explicit_precision = precision is not None
        precision = precision or precision_from_name(path)
        name = "input"
        if path.suffix == ".onnx":
            name, onnx_shape = onnx_input(path)
            shape = shape or onnx_shape
        if shape is None:
            raise UserError(f"{model}: pass --input-shape (it cannot be read from the file)")
        if remote:
            rows = profile_remote(path, profile, Remote(remote, ssh_config), precision, name, shape, batches,
                                  budget_s, python=remote_python, runner=runner, trtexec=trtexec_bin)
        elif not profile.is_host and profile.can_estimate:
            rows = _estimated_rows(path, profile, precision if explicit_precision else None, batches)
        else:
            if not profile.is_host:
                log.warning("measuring on this host, not on %s: pass --remote to measure on the device", profile.name)
            rows = _local_rows(path, precision, shape, batches, budget_s,
                               threads or max(1, min(4, os.cpu_count() or 1)))
    if report_dir:
        merge_into_report(report_dir, rows, profile)
    return rows
