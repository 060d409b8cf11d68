"""report.json (schema 1), its Markdown and HTML renderings and the plots they show."""

from __future__ import annotations

from pathlib import Path

from dfkd_edge.io import atomic_write_json, atomic_write_text
from dfkd_edge.report.document import render_html, render_markdown
from dfkd_edge.report.plots import accuracy_latency_plot, latency_plot

SCHEMA_VERSION = 1
REPORT_FILES = ("report.json", "report.md", "report.html", "latency.png", "accuracy_latency.png")


def write_report(out: Path, report: dict) -> list[str]:
    """report.json, the plots, report.md and report.html into ``out``; returns the file names."""
    out = Path(out)
    atomic_write_json(out / "report.json", report)
    latency_plot(report, out / "latency.png")
    accuracy_latency_plot(report, out / "accuracy_latency.png")
    atomic_write_text(out / "report.md", render_markdown(report))
    atomic_write_text(out / "report.html", render_html(report, out))
    return list(REPORT_FILES)


__all__ = ["REPORT_FILES", "SCHEMA_VERSION", "render_html", "render_markdown", "write_report"]
