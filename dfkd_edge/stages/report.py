"""report: report.json (the schema in docs/ARCHITECTURE.md), report.md, report.html and the plots,
from the files and figures of the stages before it; one recommended engine per target, marked with
the data-free verdict. Runs every time. ``Report`` is convert's (a student), ``ReportModel`` quantize's
(the user's own model)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from dfkd_edge.plan import against
from dfkd_edge.report import REPORT_FILES, SCHEMA_VERSION, write_report
from dfkd_edge.report.recommend import recommend, with_verdict
from dfkd_edge.runner import Stage
from dfkd_edge.synthesis.base import start_of
from dfkd_edge.runfiles import (CALIBRATION_JSON, CALIBRATION_SOURCES_JSON, LATENCY_JSON, MANIFEST, PARITY_JSON,
                                    STUDENT_PT, TARGETS_JSON, TRANSFER_SET)



def auto_choice(s) -> dict | None:
    """What ``--method auto`` chose and why, as the synthesize stage recorded it (a run recorded before that
    record existed: as decided now)."""
    decided = s.run.manifest["stages"].get("synthesize", {}).get("decided") or {"method": s.method,
                                                                               "auto_why": s.auto_why}
    return {"method": decided["method"], "why": decided["auto_why"]} if decided["auto_why"] else None

class Report(Stage):
    name, command, always = "report", "report", True

    def reads(self, s) -> list[str]:
        return [CALIBRATION_JSON, PARITY_JSON, LATENCY_JSON, STUDENT_PT, TRANSFER_SET]

    def writes(self, s) -> list[str]:
        return s.written

    def run(self, s) -> None:
        run = s.run
        run.timings["total_s"] = round(time.perf_counter() - s.t_all, 3)
        target_doc = targets_doc(s)
        calib = json.loads(run.path(CALIBRATION_JSON).read_text())
        parity = json.loads(run.path(PARITY_JSON).read_text())
        report = build_report(run, {**s.spec.to_dict(), "input_domain": s.teacher.domain.to_dict()}, s.student_doc,
                              s.ts, calib, parity, s.rows, s.quality, s.profiles, target_doc)
        report["distillation"] = s.distillation
        report["synthesis"]["auto"] = auto_choice(s)
        report["synthesis"]["start"] = start_of(s.ts.method, s.cfg.synth_start, s.spec.input_shape)
        report["compute"] = {**s.compute.to_dict(), "applies_to": "synthesis and distillation" if s.scaled else
                             f"nothing: --method {s.method} runs on the CPU",
                             "threads_per_rank": s.cfg.train_threads(s.dist)}
        report["distributed"] = s.dist.to_dict()
        if s.multi_teacher is not None:
            report["multi_teacher"] = s.multi_teacher
        s.written = write_report(run.out, report)
        s.report = report
        run.manifest["complete"] = True


class ReportModel(Report):
    """quantize's report: the user's model, its int8 engines and its calibration sources side by side."""

    command = "quantize"

    def reads(self, s) -> list[str]:
        return [CALIBRATION_JSON, CALIBRATION_SOURCES_JSON, PARITY_JSON, LATENCY_JSON, TRANSFER_SET]

    def run(self, s) -> None:
        run, cfg, q = s.run, s.cfg, s.quality
        run.timings["total_s"] = round(time.perf_counter() - s.t_all, 3)
        target_doc = targets_doc(s)
        calib = json.loads(run.path(CALIBRATION_JSON).read_text())
        report = {
            "schema": SCHEMA_VERSION,
            "flow": "quantize",
            "model": {**s.spec.to_dict(), "input_domain": s.teacher.domain.to_dict(), "onnx": cfg.onnx_model},
            "synthesis": {"method": s.ts.method, "requested": cfg.method, "purpose": "int8 calibration",
                          "train": int((~s.ts.holdout).sum()), "holdout": int(s.ts.holdout.sum()),
                          "auto": auto_choice(s),
                          "start": start_of(s.ts.method, cfg.synth_start, s.spec.input_shape)},
            "quality": q["quality"],
            "accuracy": q["accuracy"],
            "fidelity": q["fidelity"],
            "calibration_sources": s.calibration_sources["sources"],
            "calibration_sources_measured_on": s.calibration_sources["agreement_measured_on"],
            "latency": s.rows,
            "recommended": [with_verdict(recommend(p, s.rows, q, target_doc, s.files, calib), q["quality"],
                                         "the int8 model") for p in s.profiles],
            "targets": target_doc,
            "calibration": calib,
            "parity": json.loads(run.path(PARITY_JSON).read_text()),
            **run_record(run),
        }
        s.written = write_report(run.out, report)
        s.report = report
        run.manifest["complete"] = True


def targets_doc(s) -> dict:
    """report.json's ``targets``: the profiles, what was checked for TensorRT, the estimates' assumptions."""
    doc = {"profiles": {p.name: p.to_dict() for p in s.profiles}}
    if s.run.path(TARGETS_JSON).is_file() and any(p.engine == "tensorrt" for p in s.profiles):
        doc["tensorrt"] = json.loads(s.run.path(TARGETS_JSON).read_text())["tensorrt"]
    doc["estimates"] = s.estimates
    return doc


def run_record(run) -> dict:
    """What every report ends with: the model files' sizes, the host, the stage times, every file
    written, the library versions."""
    artifacts = sorted(p.name for p in run.out.iterdir() if p.is_file() and not p.name.startswith("."))
    artifacts = sorted(set(artifacts) | {*REPORT_FILES, MANIFEST})
    return {"model_sizes": model_sizes(run.out), "host": run.manifest["host"], "timings": run.timings,
            "plan": against(run.manifest.get("plan"), run.timings),
            "artifacts": artifacts, "versions": run.manifest["versions"]}


def model_sizes(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(out.glob("*.onnx"))}


def build_report(run, teacher: dict, recipe: dict, ts, calib: dict, parity: dict,
                 rows: list[dict], quality: dict, profiles: list, target_doc: dict) -> dict:
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
        "recommended": [with_verdict(recommend(p, rows, quality, target_doc, calibration=calib), quality["quality"])
                        for p in profiles],
        "targets": target_doc,
        "calibration": calib,
        "parity": parity,
        **run_record(run),
    }
