"""The report's two plots, with matplotlib's Agg backend (no display needed)."""

from __future__ import annotations

from pathlib import Path

_KIND_STYLE = {"measured": {"facecolor": "#3b6fb6"}, "measured-remote": {"facecolor": "#2f9e66"},
               "estimated": {"facecolor": "#f0a030", "hatch": "//"}}


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def latency_plot(report: dict, path: Path) -> Path:
    """p50 at batch 1 for every row, one bar each, log scale, coloured by kind."""
    plt = _plt()
    rows = [r for r in report["latency"] if r["batch"] == 1]
    devices = list(dict.fromkeys(r["device"] for r in rows))
    rows.sort(key=lambda r: devices.index(r["device"]))  # stable: one block per device
    labels = [f"{r['device']} · {r['model']} · {r['backend']} · {r['precision']}" for r in rows]
    choice = (report.get("student") or {}).get("chosen_for")
    bars_h = 0.38 * len(rows) + 1.4
    if choice:
        fig, (ax, cax) = plt.subplots(2, 1, figsize=(9, bars_h + 3.6), dpi=110,
                                      gridspec_kw={"height_ratios": [bars_h, 3.6]})
        _candidates(cax, choice)
    else:
        fig, ax = plt.subplots(figsize=(9, bars_h), dpi=110)
    for i, r in enumerate(rows):
        ax.barh(i, r["p50_ms"], edgecolor="#333", linewidth=0.5, **_KIND_STYLE.get(r["kind"], {}))
        ax.text(r["p50_ms"] * 1.05, i, f"{r['p50_ms']:.3g} ms", va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency at batch 1 (ms, log scale)")
    handles = [plt.Rectangle((0, 0), 1, 1, edgecolor="#333", **st) for st in _KIND_STYLE.values()]
    ax.legend(handles, list(_KIND_STYLE), fontsize=8, loc="lower right")
    ax.set_title("Latency by target, backend and precision", fontsize=10)
    lo = min(r["p50_ms"] for r in rows)
    hi = max(r["p50_ms"] for r in rows)
    ax.set_xlim(lo / 2, hi * 4)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _candidates(ax, choice: dict) -> None:
    """The student candidates --max-latency-ms weighed: int8 batch-1 p50 (estimated, or measured on the device)
    against multiply-accumulates, one marker per family, the limit as a line, the chosen one ringed."""
    markers = ["o", "s", "^", "D", "v"]
    families = list(dict.fromkeys(c["family"] for c in choice["candidates"]))
    for i, fam in enumerate(families):
        cs = [c for c in choice["candidates"] if c["family"] == fam]
        ax.plot([c["p50_ms"] for c in cs], [c["macs"] for c in cs], marker=markers[i % len(markers)], linestyle="-",
                label=fam, markersize=5)
    best = next(c for c in choice["candidates"] if (c["family"], c["width"]) == (choice["chosen"]["family"],
                                                                                choice["chosen"]["width"]))
    ax.scatter([best["p50_ms"]], [best["macs"]], s=180, facecolors="none", edgecolors="#d62728", linewidths=1.5,
               label=f"chosen: {best['family']} width {best['width']}", zorder=3)
    ax.axvline(choice["max_latency_ms"], color="#d62728", linestyle="--", linewidth=1,
               label=f"--max-latency-ms {choice['max_latency_ms']:g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    how = "estimated" if choice["how"] == "estimated" else "measured"
    ax.set_xlabel(f"{how} int8 p50 at batch 1 on {choice['target']} (ms, log scale)")
    ax.set_ylabel("multiply-accumulates")
    ax.set_title("Student candidates (estimated, not measured)" if how == "estimated" else
                 f"Student candidates (measured on {choice['measured_on']['remote']})", fontsize=10)
    ax.legend(fontsize=7, loc="upper left")


def accuracy_latency_plot(report: dict, path: Path) -> Path:
    """Quality (accuracy, or fidelity without eval data) against batch-1 p50 of each shippable engine:
    colour = device, marker = precision, hollow = estimated. The teacher is shown where measured."""
    plt = _plt()
    m = "model" if report.get("flow") == "quantize" else "student"  # the shipped model's keys
    basis = "accuracy" if report["accuracy"][f"{m}_fp32"] is not None else "fidelity"
    q = report[basis]
    fig, ax = plt.subplots(figsize=(8, 4.6), dpi=110)
    devices = list(dict.fromkeys(r["device"] for r in report["latency"]))
    colours = plt.get_cmap("tab10")
    markers = {"int8": "o", "fp16": "D", "fp32": "^"}
    for r in report["latency"]:
        if r["batch"] != 1 or r["backend"].startswith("torch") and r["model"] != "teacher":
            continue
        val = q.get("teacher") if r["model"] == "teacher" else q.get(
            f"{m}_{'int8' if r['precision'] == 'int8' else 'fp32'}")
        if val is None:
            continue
        c = colours(devices.index(r["device"]) % 10)
        est = r["kind"] == "estimated"
        label = f"{r['device']} {r['model']} {r['precision']}" + (" (estimated)" if est else "")
        ax.scatter(r["p50_ms"], 100 * val, marker="s" if r["model"] == "teacher" else markers[r["precision"]],
                   s=60, facecolor="none" if est else c, edgecolor=c, linewidth=1.5, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency at batch 1 (ms, log scale)")
    ax.set_ylabel(f"{basis} (%)" + ("" if basis == "accuracy" else " to the teacher"))
    ax.set_title(f"{basis.capitalize()} vs latency (hollow: estimated; square: teacher; "
                 "circle int8, diamond fp16, triangle fp32)", fontsize=8)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
