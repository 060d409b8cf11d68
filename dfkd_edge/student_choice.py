"""The student chosen for a device (``--max-latency-ms MS``): every student family that takes the teacher's inputs,
at every width, exported to ONNX and costed at int8, batch 1, on the device's profile (its fitted estimate;
dfkd_edge.targets.estimate); the candidate with the most multiply-accumulates whose p50 fits MS is the student.
A family stops at the first width that does not fit (a wider member is never faster).

The device is not reached from here: the latencies are estimates, and the choice says so with the estimate's
measured error. A candidate near MS may land on either side of it on the board."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch

from dfkd_edge.errors import UserError
from dfkd_edge.export.onnx_export import export_onnx
from dfkd_edge.models.registry import create_model
from dfkd_edge.models.students import RANK_FAMILIES, WIDTHS, count_params
from dfkd_edge.targets.estimate import at_width, estimate_error, estimate_ms, layer_costs, load_fit
from dfkd_edge.targets.profile import TargetProfile


def candidate_rows(input_shape, num_classes: int, profile: TargetProfile, limit_ms: float,
                   families: tuple[str, ...] | None = None, progress=None) -> list[dict]:
    """Each family and width up to the first that misses ``limit_ms``: MACs, parameters, int8 batch-1 p50."""
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
                ms = estimate_ms(at_width(costs, "int8"), profile, "int8", fit)["ms"]
                rows.append({"family": family, "width": width, "macs": macs, "params": count_params(model),
                             "p50_ms": round(ms, 4), "fits": ms <= limit_ms})
                if progress is not None:
                    progress(f"student candidate {family} width {width}: {ms:.3g} ms int8 batch 1 on {profile.name}")
                if ms > limit_ms:
                    for skipped in WIDTHS[i + 1:]:  # wider is slower: not built, counted done
                        if progress is not None:
                            progress(f"student candidate {family} width {skipped}: wider than the first that misses")
                    break
    return rows


def choose_for_latency(input_shape, num_classes: int, profile: TargetProfile, limit_ms: float,
                       families: tuple[str, ...] | None = None, progress=None) -> dict:
    """The choice: the chosen candidate, every candidate and how their latency was known."""
    if not profile.can_estimate or profile.is_host:
        raise UserError(f"--max-latency-ms needs a device target whose latency can be estimated; {profile.name} "
                        "cannot (name one with --latency-on or --target)")
    if not limit_ms > 0:
        raise UserError(f"--max-latency-ms must be a positive number of milliseconds, got {limit_ms}")
    rows = candidate_rows(input_shape, num_classes, profile, limit_ms, families, progress)
    fits = [r for r in rows if r["fits"]]
    if not fits:
        fastest = min(rows, key=lambda r: r["p50_ms"])
        raise UserError(f"no student fits {limit_ms} ms on {profile.name}: the fastest candidate, {fastest['family']} "
                        f"width {fastest['width']}, is estimated at {fastest['p50_ms']:.3g} ms int8 batch 1 "
                        f"(raise --max-latency-ms, or name a faster device with --latency-on)")
    best = max(fits, key=lambda r: (r["macs"], -r["p50_ms"]))
    return {"target": profile.name, "power_mode": profile.mode, "max_latency_ms": limit_ms, "how": "estimated",
            "error": estimate_error(profile, load_fit(profile.fit) if profile.fit else None),
            "precision": "int8", "batch": 1, "chosen": {"family": best["family"], "width": best["width"]},
            "rule": "the candidate with the most multiply-accumulates whose estimated int8 batch-1 p50 fits",
            "candidates": rows}
