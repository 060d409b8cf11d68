"""report: report.json (the schema in docs/ARCHITECTURE.md), report.md, report.html and the plots,
from the files and figures of the stages before it; one recommended engine per target, marked with
the data-free verdict. Runs every time."""

from __future__ import annotations

import json
import time
from pathlib import Path

from dfkd_edge.report import REPORT_FILES, SCHEMA_VERSION, write_report
from dfkd_edge.report.recommend import recommend, with_verdict
from dfkd_edge.runner import Stage
from dfkd_edge.synthesis.base import start_of
from dfkd_edge.stages.files import (CALIBRATION_JSON, LATENCY_JSON, MANIFEST, PARITY_JSON, STUDENT_PT, TARGETS_JSON,
                                    TRANSFER_SET)


class Report(Stage):
    name, command, always = "report", "report", True

    def reads(self, s) -> list[str]:
        return [CALIBRATION_JSON, PARITY_JSON, LATENCY_JSON, STUDENT_PT, TRANSFER_SET]

    def writes(self, s) -> list[str]:
        return s.written

    def run(self, s) -> None:
        run = s.run
        run.timings["total_s"] = round(time.perf_counter() - s.t_all, 3)
        target_doc = {"profiles": {p.name: p.to_dict() for p in s.profiles}}
        if run.path(TARGETS_JSON).is_file() and any(p.engine == "tensorrt" for p in s.profiles):
            target_doc["tensorrt"] = json.loads(run.path(TARGETS_JSON).read_text())["tensorrt"]
        target_doc["estimates"] = s.estimates
        calib = json.loads(run.path(CALIBRATION_JSON).read_text())
        parity = json.loads(run.path(PARITY_JSON).read_text())
        report = build_report(run, {**s.spec.to_dict(), "input_domain": s.teacher.domain.to_dict()}, s.student_doc,
                              s.ts, calib, parity, s.rows, s.quality, s.profiles, target_doc)
        report["distillation"] = s.distillation
        report["synthesis"]["auto"] = {"method": s.method, "why": s.auto_why} if s.auto_why else None
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


def model_sizes(out: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(out.glob("*.onnx"))}


def build_report(run, teacher: dict, recipe: dict, ts, calib: dict, parity: dict,
                 rows: list[dict], quality: dict, profiles: list, target_doc: dict) -> dict:
    artifacts = sorted(p.name for p in run.out.iterdir() if p.is_file() and not p.name.startswith("."))
    artifacts = sorted(set(artifacts) | {*REPORT_FILES, MANIFEST})
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
        "recommended": [with_verdict(recommend(p, rows, quality, target_doc), quality["quality"]) for p in profiles],
        "targets": target_doc,
        "model_sizes": model_sizes(run.out),
        "calibration": calib,
        "parity": parity,
        "host": run.manifest["host"],
        "timings": run.timings,
        "artifacts": artifacts,
        "versions": run.manifest["versions"],
    }
