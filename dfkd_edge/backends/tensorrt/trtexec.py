"""Reading trtexec's performance summary into latency rows.

trtexec ends a timed run with ``=== Performance summary ===``, ``Throughput: N qps`` and
``Latency: min = ... ms, max = ... ms, mean = ... ms, median = ... ms, percentile(90%) = ... ms,
percentile(95%) = ... ms, percentile(99%) = ... ms`` (older versions print only percentile(99%)
or ``percentile = ... ms at 99%``), then the same for Enqueue Time, H2D Latency, GPU Compute
Time and D2H Latency. ``Latency`` is host latency (H2D + compute + D2H), which is what a user's
program waits for, so rows take their percentiles from it; the GPU compute line is kept too.
"""

from __future__ import annotations

import re

_SUMMARY = "=== Performance summary ==="
_NUM = r"([0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)"
_METRICS = ("Latency", "Enqueue Time", "H2D Latency", "GPU Compute Time", "D2H Latency")


class TrtexecParseError(ValueError):
    pass


def _stats(body: str) -> dict[str, float]:
    out = {}
    for key in ("min", "max", "mean", "median"):
        m = re.search(rf"\b{key} = {_NUM} ms", body)
        if m:
            out[key] = float(m.group(1))
    for m in re.finditer(rf"percentile\(([0-9.]+)%\) = {_NUM} ms", body):
        out[f"p{float(m.group(1)):g}"] = float(m.group(2))
    m = re.search(rf"percentile = {_NUM} ms at ([0-9.]+)%", body)  # TensorRT 7/early 8
    if m:
        out[f"p{float(m.group(2)):g}"] = float(m.group(1))
    return out


def parse_trtexec(text: str) -> dict:
    """``{throughput_qps, latency: {...}, gpu_compute: {...}, ..., version, batch_shapes}`` from trtexec output."""
    i = text.rfind(_SUMMARY)
    if i < 0:
        raise TrtexecParseError("no '=== Performance summary ===' in the trtexec output (did the run fail?)")
    summary = text[i:]
    out: dict = {}
    m = re.search(rf"Throughput: {_NUM} qps", summary)
    if not m:
        raise TrtexecParseError("no 'Throughput: N qps' line in the performance summary")
    out["throughput_qps"] = float(m.group(1))
    for metric in _METRICS:
        m = re.search(rf"\]\s*{re.escape(metric)}: (.*)$|^{re.escape(metric)}: (.*)$", summary, re.M)
        if m:
            key = metric.lower().replace(" ", "_").replace("_time", "")
            out[key] = _stats(m.group(1) or m.group(2))
    if "latency" not in out or "median" not in out["latency"]:
        raise TrtexecParseError("no 'Latency: ... median = ... ms' line in the performance summary")
    v = re.search(r"\[TensorRT v([0-9]+)\]", text)
    out["version"] = int(v.group(1)) if v else None
    s = re.search(r"--shapes=(\S+)", text) or re.search(r"Input inference shapes?: (\S+)", text)
    out["shapes"] = s.group(1) if s else None
    return out


def batch_from_shapes(shapes: str | None) -> int | None:
    """The batch of the first input in a trtexec shape spec such as ``input:32x1x8x8``."""
    if not shapes:
        return None
    m = re.search(r":([0-9]+)x", shapes) or re.search(r"=([0-9]+)x", shapes)
    return int(m.group(1)) if m else None


def latency_from_trtexec(parsed: dict, batch: int) -> dict:
    """p50/p90/p99 (ms) and throughput of one inference of ``batch`` inputs from a parsed summary.

    trtexec's qps counts inferences (each of ``batch`` inputs); rows count inputs per second.
    p90 falls back to p99 and p99 to max when an older trtexec printed fewer percentiles; the
    fallback is recorded."""
    lat = parsed["latency"]
    p90 = lat.get("p90", lat.get("p95", lat.get("p99")))
    p99 = lat.get("p99", lat.get("max"))
    return {"p50_ms": lat["median"], "p90_ms": p90, "p99_ms": p99,
            "throughput_qps": round(parsed["throughput_qps"] * batch, 1),
            "note": None if "p90" in lat else "trtexec printed no percentile(90%); p90 shows the next percentile up"}
