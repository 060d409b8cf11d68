"""Fit the Jetson GPU latency model (dfkd_edge.targets.estimate.fitted_ms) to the published TensorRT latencies of
benchmarks/jetson_published.toml, and measure how wrong it is on rows it was not fitted to.

    python benchmarks/jetson_fit.py            # the held-out table and its summary
    python benchmarks/jetson_fit.py --write    # also write dfkd_edge/targets/fits/jetson-gpu.toml

Each row's network is written out layer for layer (benchmarks/refmodels.py), exported to ONNX as dfkd-edge
exports, and costed per layer at the row's batch and precision on the shipped profile of its device (at the
profile's default power mode: the modes the sources ran). The six parameters (FIT_PARAMS) and a seventh,
HARNESS (the fraction of the estimate NVIDIA's MLPerf harness ran at: CUDA graphs and NVIDIA's plugins, against
trtexec on an engine built from an ONNX file, which the estimate is; it multiplies the rows whose ``harness`` is
"mlperf-nvidia" and nothing a user is shown), are found by minimising the squared log ratio estimate / published p50, each row weighted by 1 / (rows of its group at its
batch) so that a board measured in three MLPerf rounds counts once. Held out: every row of one device (all its
groups) or every row of one network is left out, the rest fitted, the left-out rows estimated; each row is
held out once per scheme. The summary is the worst of the two schemes, at batch 1 and 8, for ResNets and for
depthwise networks; --write stores the fit on all rows with that held-out error, which every estimated row in a
report then quotes.
"""

from __future__ import annotations

import argparse
import math
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from scipy.optimize import minimize

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import refmodels  # noqa: E402
from jetson_published import ROWS, load_rows, profile_for  # noqa: E402

from dfkd_edge.export.onnx_export import export_onnx  # noqa: E402
from dfkd_edge.targets.estimate import FIT_PARAMS, at_width, fitted_ms, fits_dir, layer_costs  # noqa: E402
from dfkd_edge.targets.profile import ALIASES, load_profile  # noqa: E402

#: the fitted factor between NVIDIA's MLPerf harness and trtexec (module docstring)
HARNESS = "mlperf_harness_factor"
SEARCHED = (*FIT_PARAMS, HARNESS)
DEPTHWISE = {"mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "efficientnet_b0", "ssd_mobilenet_v1"}
#: where the search starts (a plain roofline's guesses) and the bounds it keeps to
START = {"tensor_efficiency": 0.5, "depthwise_efficiency": 0.5, "bandwidth_efficiency": 0.7,
         "fill_blocks_per_sm": 1.0, "kernel_us": 5.0, "fixed_us": 50.0, HARNESS: 1.0}
BOUNDS = {"tensor_efficiency": (0.02, 1.0), "depthwise_efficiency": (0.02, 1.0), "bandwidth_efficiency": (0.05, 1.0),
          "fill_blocks_per_sm": (0.01, 100.0), "kernel_us": (0.1, 100.0), "fixed_us": (1.0, 2000.0),
          HARNESS: (0.2, 5.0)}


def costed(rows: list[dict], work: Path) -> list[dict]:
    """Each row with its device family, profile and per-layer costs at its batch and precision."""
    onnx, fp32 = {}, {}
    out = []
    for r in rows:
        key = (r["model"], tuple(r["input"]))
        if key not in onnx:
            net = refmodels.init_weights(refmodels.DEVICE_NETWORKS[r["model"]]()).eval()
            onnx[key] = export_onnx(net, tuple(r["input"]), work / f"{r['model']}-{r['input'][-1]}.onnx")
        if (key, r["batch"]) not in fp32:
            fp32[key, r["batch"]] = layer_costs(onnx[key], r["batch"], "fp32")
        name = profile_for(r["device"])
        out.append({**r, "profile": load_profile(name), "family": ALIASES.get(name, name),
                    "costs": at_width(fp32[key, r["batch"]], r["precision"]), "published": r.get("p50_ms", r["ms"])})
    return out


def _params(x: np.ndarray) -> dict:
    return {k: float(math.exp(v)) for k, v in zip(SEARCHED, x)}


def estimate(r: dict, params: dict) -> float:
    """The row's estimate: trtexec's p50 (what a user is shown), times HARNESS for a row NVIDIA's MLPerf harness
    measured."""
    ms = fitted_ms(r["costs"], r["profile"], r["precision"], params)["ms"]
    return ms * (params[HARNESS] if r["harness"] == "mlperf-nvidia" else 1.0)


def fit(rows: list[dict]) -> dict:
    """Parameters minimising the weighted squared log ratio over ``rows``."""
    n = {}
    for r in rows:
        n[r["group"], r["batch"]] = n.get((r["group"], r["batch"]), 0) + 1
    w = np.array([1.0 / n[r["group"], r["batch"]] for r in rows])
    pub = np.log([r["published"] for r in rows])

    def loss(x):
        p = _params(x)
        return float(np.sum(w * (np.log([estimate(r, p) for r in rows]) - pub) ** 2))

    bounds = [tuple(math.log(b) for b in BOUNDS[k]) for k in SEARCHED]
    best = None
    for fill in (0.1, 1.0, 10.0):  # a few starts: the loss is not convex in the fill and floor terms
        x0 = np.array([math.log(fill if k == "fill_blocks_per_sm" else START[k]) for k in SEARCHED])
        res = minimize(loss, x0, method="Powell", bounds=bounds, options={"xtol": 1e-3, "ftol": 1e-6})
        if best is None or res.fun < best.fun:
            best = res
    return _params(best.x)


def held_out(rows: list[dict], key: str) -> list[dict]:
    """Every row estimated by a fit on the rows that share none of its ``key`` (family or model)."""
    out = []
    for value in sorted({r[key] for r in rows}):
        params = fit([r for r in rows if r[key] != value])
        out += [{**r, "estimate_ms": estimate(r, params), "scheme": f"{key} held out"} for r in rows if r[key] == value]
    return out


def summary(rows: list[dict]) -> dict:
    err = [abs(r["estimate_ms"] / r["published"] - 1) for r in rows]
    ratio = [r["estimate_ms"] / r["published"] for r in rows]
    return {"rows": len(rows), "median_pct": 100 * statistics.median(err), "max_pct": 100 * max(err),
            "min_ratio": min(ratio), "max_ratio": max(ratio)}


def print_rows(rows: list[dict]) -> None:
    print("| scheme | device (profile, mode) | model | precision | batch | published p50 ms | estimate ms "
          "| estimate / published | trust |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['scheme']} | {r['device']} ({r['profile'].name}, {r['profile'].mode}) | {r['model']} | "
              f"{r['precision']} | {r['batch']} | {r['published']:.3f} | {r['estimate_ms']:.3f} | "
              f"{r['estimate_ms'] / r['published']:.2f} | {r['trust']} |")


def print_summary(table: dict) -> None:
    print("\n| held out | rows | median abs error | worst abs error | estimate / published |")
    print("|---|---|---|---|---|")
    for name, s in table.items():
        print(f"| {name} | {s['rows']} | {s['median_pct']:.0f}% | {s['max_pct']:.0f}% | "
              f"{s['min_ratio']:.2f}-{s['max_ratio']:.2f} |")


def slices(rows: list[dict]) -> dict:
    """The summary of the held-out rows overall and per batch and network family."""
    out = {"all": summary(rows)}
    for label, keep in (("batch 1", lambda r: r["batch"] == 1), ("batch 8", lambda r: r["batch"] == 8),
                        ("ResNet", lambda r: r["model"] not in DEPTHWISE),
                        ("depthwise", lambda r: r["model"] in DEPTHWISE)):
        part = [r for r in rows if keep(r)]
        if part:
            out[label] = summary(part)
    return out


def evaluate(path: Path = ROWS) -> tuple[dict, list[dict], dict]:
    """(parameters fitted on every row, every row held out once per scheme, the held-out summaries)."""
    with tempfile.TemporaryDirectory(prefix="jetson-fit-") as d:
        rows = costed(load_rows(path), Path(d))
    held = held_out(rows, "family") + held_out(rows, "model")
    table = {f"{scheme}: {label}": s
             for scheme in ("family held out", "model held out")
             for label, s in slices([r for r in held if r["scheme"] == scheme]).items()}
    return fit(rows), held, table


def write_fit(params: dict, table: dict, rows: int, out: Path) -> None:
    schemes = [table[k] for k in table if k.endswith(": all")]
    worst = {"rows": rows, "median_pct": max(s["median_pct"] for s in schemes),
             "max_pct": max(s["max_pct"] for s in schemes), "min_ratio": min(s["min_ratio"] for s in schemes),
             "max_ratio": max(s["max_ratio"] for s in schemes)}
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True).stdout.strip()
    lines = ["# The Jetson GPU latency model's parameters (dfkd_edge.targets.estimate.fitted_ms), fitted to the",
             "# published TensorRT latencies of benchmarks/jetson_published.toml by benchmarks/jetson_fit.py --write.",
             "# [held_out] is its error on rows left out of the fit (a whole device or a whole network at a time;",
             "# the worse of the two schemes): what every estimated row in a report quotes.",
             "# Do not edit: run the script.",
             f'commit = "{commit}"', f"rows = {rows}", "", "[params]"]
    lines += [f"{k} = {params[k]:.6g}" for k in FIT_PARAMS]
    lines += ["# NVIDIA's MLPerf harness (CUDA graphs, its own plugins) ran at this fraction of the estimate, which is",
              "# trtexec's on an engine built from the ONNX file; fitted with the rest, not applied to any estimate",
              f"{HARNESS} = {params[HARNESS]:.6g}"]
    lines += ["", "[held_out]",
              'scheme = "a whole device or a whole network left out of the fit, the worse of the two"',
              f"rows = {worst['rows']}", f"median_pct = {worst['median_pct']:.1f}", f"max_pct = {worst['max_pct']:.1f}",
              f"min_ratio = {worst['min_ratio']:.3f}", f"max_ratio = {worst['max_ratio']:.3f}"]
    out.write_text("\n".join(lines) + "\n")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default=str(ROWS))
    ap.add_argument("--write", action="store_true", help="write dfkd_edge/targets/fits/jetson-gpu.toml")
    a = ap.parse_args(argv)
    params, held, table = evaluate(Path(a.rows))
    print_rows(held)
    print_summary(table)
    print("\nfitted on every row: " + ", ".join(f"{k} {v:.4g}" for k, v in params.items()))
    if a.write:
        out = Path(str(fits_dir())) / "jetson-gpu.toml"
        write_fit(params, table, len(held) // 2, out)
        print(f"wrote {out}")


if __name__ == "__main__":
    main()
