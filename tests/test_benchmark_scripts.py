"""The benchmark scripts under benchmarks/ are not run by the suite (they take minutes to hours), so a change to
the package could break them unnoticed: every name they import from dfkd_edge must exist, and each script must
start and print its --help."""

from __future__ import annotations

import ast
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for p in (ROOT / "benchmarks").glob("*.py"))


def _imported(path: Path) -> list[tuple[str, str | None]]:
    """(module, name or None) of every dfkd_edge import in ``path``, at any depth."""
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dfkd_edge"):
            out += [(node.module, a.name) for a in node.names]
        elif isinstance(node, ast.Import):
            out += [(a.name, None) for a in node.names if a.name.startswith("dfkd_edge")]
    return out


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_package_name_a_benchmark_imports_exists(script):
    missing = []
    for module, name in _imported(script):
        m = importlib.import_module(module)
        if name is not None and not hasattr(m, name):
            try:
                importlib.import_module(f"{module}.{name}")
            except ImportError:
                missing.append(f"{module}.{name}")
    assert not missing, f"{script.name} imports names the package no longer has: {', '.join(missing)}"


@pytest.mark.parametrize("script", [p for p in SCRIPTS if "argparse" in p.read_text()], ids=lambda p: p.name)
def test_a_benchmark_script_starts(script):
    r = subprocess.run([sys.executable, str(script), "--help"], capture_output=True, text=True, cwd=ROOT,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=1800)  # a hang guard only
    assert r.returncode == 0 and "usage" in r.stdout.lower(), r.stderr[-2000:]


def test_every_published_jetson_row_says_what_it_measured_and_where_it_comes_from():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import jetson_published
        import refmodels
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    rows = jetson_published.load_rows()
    assert len(rows) >= 8
    for r in rows:
        assert {"device", "group", "mode", "software", "model", "input", "precision", "batch", "engine", "harness",
                "metric", "ms", "trust", "source"} <= set(r), r
        assert r["harness"] == ("mlperf-nvidia" if r["metric"] in ("p90", "p99") else "trtexec"), r
        assert r["model"] in refmodels.DEVICE_NETWORKS and r["precision"] in ("int8", "fp16", "fp32")
        assert r["trust"] in ("audited", "vendor") and r["engine"] in ("gpu", "dla") and r["ms"] > 0
        jetson_published.profile_for(r["device"])  # a shipped profile estimates it
        if r["metric"] in ("p90", "p99"):  # MLPerf: the log summary's p50 is under its tail percentile
            assert 0 < r["p50_ms"] <= r["ms"]


@pytest.mark.slow
def test_the_shipped_jetson_fit_is_what_the_script_fits_and_its_held_out_error_is_what_rows_quote():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import jetson_fit
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    from dfkd_edge.targets.estimate import FIT_PARAMS, load_fit

    params, held, table = jetson_fit.evaluate()
    shipped = load_fit("jetson-gpu")
    for k in FIT_PARAMS:
        assert params[k] == pytest.approx(shipped["params"][k], rel=0.02), k
    worst_median = max(s["median_pct"] for k, s in table.items() if k.endswith(": all"))
    worst = max(s["max_pct"] for k, s in table.items() if k.endswith(": all"))
    assert worst_median == pytest.approx(shipped["held_out"]["median_pct"], abs=1.0)
    assert worst == pytest.approx(shipped["held_out"]["max_pct"], abs=1.0)
    assert len(held) == 2 * shipped["held_out"]["rows"]  # every row held out once per scheme


def test_the_student_latency_and_modelopt_tables_print(capsys):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import modelopt_compare
        import student_latency
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    runs = (("plain", "conv2d", 8, 0.9, None), ("chosen", "mbv2", 16, 0.92, 0.05))
    rows = [{"teacher": "t", "student": s, "seed": k, "family": f, "width": w, "int8": a, "max_latency_ms": lim}
            for k in (0, 1) for s, f, w, a, lim in runs]
    student_latency.table(rows)
    assert "| t | conv2d w8 | 0.05 ms | mbv2 w16 | 90.00 ± 0.00 | 92.00 ± 0.00 | +2.00 |" in capsys.readouterr().out
    side = {"accuracy": 0.9, "agreement": 0.95, "quantized_inputs": {"Conv": 2}, "weight_layers": 3,
            "float_weight_layers": 0}
    modelopt_compare.table([{"model": "m", "seed": 0, "fp32": 0.91, "q_dq": {"dfkd-edge": side,
                                                                            "modelopt": {"error": "boom"}}}])
    assert "failed: boom" in capsys.readouterr().out
