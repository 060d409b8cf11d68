"""The Jetson estimate held against published figures: each row of benchmarks/jetson_published.toml (device, mode,
software, network, precision, batch, the source's metric and figure) set against what ``dfkd-edge profile``'s
roofline estimate (dfkd_edge.targets.estimate, the shipped device profile nearest the row's device) gives for the
same network, written out layer for layer (benchmarks/refmodels.py) and exported to ONNX as dfkd-edge exports.

    python benchmarks/jetson_published.py

The estimate is a p50; each row is compared with the source's p50 where it gives one (MLPerf's log summaries
do), else with the figure it publishes (a trtexec median). Prints one line per row and the median and largest
|estimate / published - 1|; the estimate is not fitted to these rows here.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import refmodels  # noqa: E402

ROWS = HERE / "jetson_published.toml"


def load_rows(path: Path = ROWS) -> list[dict]:
    return tomllib.loads(path.read_text())["row"]


def profile_for(device: str) -> str:
    """The shipped profile of ``device`` (a published row names the module and its memory: the longest shipped
    profile name it starts with)."""
    from dfkd_edge.targets.profile import builtin_names

    names = [n for n in builtin_names() if device.startswith(n)]
    if not names:
        raise SystemExit(f"no shipped profile for {device!r}")
    return max(names, key=len)


def estimates(rows: list[dict], work: Path) -> list[dict]:
    from dfkd_edge.export.onnx_export import export_onnx
    from dfkd_edge.targets.estimate import at_width, estimate_ms, layer_costs
    from dfkd_edge.targets.profile import load_profile

    onnx = {}
    out = []
    for r in rows:
        key = (r["model"], tuple(r["input"]))
        if key not in onnx:
            net = refmodels.init_weights(refmodels.FACTORIES[r["model"]](1000)).eval()
            onnx[key] = export_onnx(net, tuple(r["input"]), work / f"{r['model']}.onnx")
        profile = load_profile(profile_for(r["device"]))
        costs = at_width(layer_costs(onnx[key], r["batch"], "fp32"), r["precision"])
        est = estimate_ms(costs, profile, r["precision"])["ms"]
        published = r.get("p50_ms", r["ms"])
        out.append({**r, "profile": profile.name, "estimate_ms": est, "compared_with": published,
                    "ratio": est / published})
    return out


def print_table(rows: list[dict]) -> None:
    print("| device (profile) | model | precision | batch | source's metric | published ms | p50 ms | estimate ms "
          "| estimate / published | trust |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['device']} ({r['profile']}) | {r['model']} | {r['precision']} | {r['batch']} | {r['metric']} | "
              f"{r['ms']:.3f} | {r.get('p50_ms', '-')} | {r['estimate_ms']:.3f} | {r['ratio']:.2f} | {r['trust']} |")
    err = [abs(r["ratio"] - 1) for r in rows]
    print(f"\n{len(rows)} rows: median |estimate / published - 1| {statistics.median(err):.0%}, largest "
          f"{max(err):.0%}; estimate / published {min(r['ratio'] for r in rows):.2f}-"
          f"{max(r['ratio'] for r in rows):.2f}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default=str(ROWS))
    a = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="jetson-published-") as d:
        print_table(estimates(load_rows(Path(a.rows)), Path(d)))


if __name__ == "__main__":
    main()
