"""The student chosen for a device (``--max-latency-ms MS``): every student family that takes the teacher's inputs,
at every width, exported to ONNX and costed at int8, batch 1, on the device's profile (its fitted estimate;
dfkd_edge.targets.estimate); the candidate with the most multiply-accumulates whose p50 fits MS is the student.
A family stops at the first width that does not fit (a wider member is never faster).

Without a device (no ``--latency-remote``) the latencies are estimates, and the choice says so with the estimate's
measured error: a candidate near MS may land on either side of it on the board. With one (``DeviceTimer``) each
candidate's int8 model is timed there over SSH at batch 1, as ``dfkd-edge profile --remote`` times a model, and
the choice records both figures: what the estimate said and what the device measured."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from dfkd_edge.errors import UserError
from dfkd_edge.export.onnx_export import export_onnx
from dfkd_edge.export.quantize import CANDIDATES, CalibConfig, input_name, preprocessed, quantize_one
from dfkd_edge.io import atomic_write_json, read_if_made_from
from dfkd_edge.models.registry import create_model
from dfkd_edge.models.students import RANK_FAMILIES, WIDTHS, count_params
from dfkd_edge.targets.estimate import at_width, estimate_error, estimate_ms, layer_costs, load_fit
from dfkd_edge.targets.profile import TargetProfile
from dfkd_edge.targets.remote import Remote, profile_remote

#: the int8 format a candidate is timed in on an ONNX Runtime device (the build stage's first candidate format)
DEVICE_FORMAT = next(iter(CANDIDATES))


class DeviceTimer:
    """A candidate's int8 batch-1 p50 measured on the device over SSH: TensorRT targets build the fp32 ONNX
    with ``trtexec --int8`` there (no calibration: the ranges do not change the kernels timed), ONNX Runtime
    targets run a Q/DQ model quantized here from a few random samples with the bundled runner."""

    def __init__(self, profile: TargetProfile, remote: Remote, python: str, trtexec: str, budget_s: float = 1.0,
                 memo: Path | None = None, made_from: dict | None = None):
        self.profile, self.remote, self.python, self.trtexec, self.budget_s = profile, remote, python, trtexec, budget_s
        #: each measurement as it is made (a file of ``made_from`` and the p50s by candidate): an interrupted choice
        #: resumes without timing its candidates on the device again
        self.memo, self.made_from = memo, made_from
        kept = read_if_made_from(memo, made_from) if memo is not None else None
        self.done = dict(kept["measured"]) if kept else {}  # the memo's p50s when it holds this choice's

    @property
    def runner(self) -> str:
        return "trtexec" if self.profile.engine == "tensorrt" else "onnxruntime"

    def __call__(self, fp32: Path, input_shape: tuple[int, ...], key: str | None = None) -> float:
        if key in self.done:
            return self.done[key]
        ms = self._time(fp32, input_shape)
        if self.memo is not None and key is not None:
            self.done[key] = ms
            self.memo.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.memo, {"made_from": self.made_from, "measured": self.done})
        return ms

    def _time(self, fp32: Path, input_shape: tuple[int, ...]) -> float:
        model = fp32
        if self.runner == "onnxruntime":
            model = fp32.with_name(f"{fp32.stem}_int8.onnx")
            calib = np.random.default_rng(0).standard_normal((8, *input_shape)).astype(np.float32)
            quantize_one(preprocessed(fp32, fp32.parent), model, calib, DEVICE_FORMAT, CalibConfig())
        rows = profile_remote(model, self.profile, self.remote, "int8", input_name(fp32), tuple(input_shape),
                              batches=(1,), budget_s=self.budget_s, python=self.python, runner=self.runner,
                              trtexec=self.trtexec)
        return rows[0]["p50_ms"]


def candidate_rows(input_shape, num_classes: int, profile: TargetProfile, limit_ms: float,
                   families: tuple[str, ...] | None = None, progress=None, timer: DeviceTimer | None = None
                   ) -> list[dict]:
    """Each family and width up to the first that misses ``limit_ms``: MACs, parameters, int8 batch-1 p50 (the
    estimate's, or ``timer``'s measurement on the device) and the estimate."""
    families = families or RANK_FAMILIES[len(input_shape)]
    fit = load_fit(profile.fit) if profile.fit else None
    rows = []
    with tempfile.TemporaryDirectory(prefix="dfkd-student-choice-") as d:
        for family in families:
            for i, width in enumerate(WIDTHS):
                torch.manual_seed(0)
                model = create_model(family, input_shape=tuple(input_shape), num_classes=num_classes,
                                     width=width).eval()
                path = export_onnx(model, tuple(input_shape), Path(d) / f"{family}-{width}.onnx")
                costs = layer_costs(path, 1, "fp32")
                macs = sum(c.flops for c in costs if c.kind != "other") / 2
                est = estimate_ms(at_width(costs, "int8"), profile, "int8", fit)["ms"]
                ms = timer(path, tuple(input_shape), f"{family}-{width}") if timer is not None else est
                rows.append({"family": family, "width": width, "macs": macs, "params": count_params(model),
                             "p50_ms": round(ms, 4), "estimated_ms": round(est, 4), "fits": ms <= limit_ms})
                if progress is not None:
                    progress(f"student candidate {family} width {width}: {ms:.3g} ms int8 batch 1 on {profile.name}"
                             + (" (measured)" if timer is not None else " (estimated)"))
                if ms > limit_ms:
                    for skipped in WIDTHS[i + 1:]:  # wider is slower: not built, counted done
                        if progress is not None:
                            progress(f"student candidate {family} width {skipped}: wider than the first that misses")
                    break
    return rows


def choose_for_latency(input_shape, num_classes: int, profile: TargetProfile, limit_ms: float,
                       families: tuple[str, ...] | None = None, progress=None, timer: DeviceTimer | None = None
                       ) -> dict:
    """The choice: the chosen candidate, every candidate and how their latency was known (``timer``: measured
    on the device, with how far the estimate was from each measurement)."""
    if not profile.can_estimate or profile.is_host:
        raise UserError(f"--max-latency-ms needs a device target whose latency can be estimated; {profile.name} "
                        "cannot (name one with --latency-on or --target)")
    if not limit_ms > 0:
        raise UserError(f"--max-latency-ms must be a positive number of milliseconds, got {limit_ms}")
    rows = candidate_rows(input_shape, num_classes, profile, limit_ms, families, progress, timer)
    fits = [r for r in rows if r["fits"]]
    if not fits:
        fastest = min(rows, key=lambda r: r["p50_ms"])
        raise UserError(f"no student fits {limit_ms} ms on {profile.name}: the fastest candidate, {fastest['family']} "
                        f"width {fastest['width']}, {'measures' if timer else 'is estimated at'} "
                        f"{fastest['p50_ms']:.3g} ms int8 batch 1 "
                        f"(raise --max-latency-ms, or name a faster device with --latency-on)")
    best = max(fits, key=lambda r: (r["macs"], -r["p50_ms"]))
    how = "estimated" if timer is None else "measured-remote"
    choice = {"target": profile.name, "power_mode": profile.mode, "max_latency_ms": limit_ms, "how": how,
              "error": estimate_error(profile, load_fit(profile.fit) if profile.fit else None),
              "precision": "int8", "batch": 1, "chosen": {"family": best["family"], "width": best["width"]},
              "rule": "the candidate with the most multiply-accumulates whose "
                      f"{'estimated' if timer is None else 'measured'} int8 batch-1 p50 fits",
              "candidates": rows}
    if timer is not None:
        ratios = [r["estimated_ms"] / r["p50_ms"] for r in rows if r["p50_ms"] > 0] or [1.0]
        choice["measured_on"] = {"remote": timer.remote.destination, "runner": timer.runner,
                                 "format": DEVICE_FORMAT if timer.runner == "onnxruntime" else "trtexec --int8"}
        choice["estimate_vs_measured"] = {"median_abs_error": round(float(np.median([abs(q - 1) for q in ratios])), 4),
                                          "worst_ratio": round(max(ratios, key=lambda q: abs(np.log(q))), 4),
                                          "rows": len(ratios)}
    return choice
