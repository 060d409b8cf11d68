"""What the command line's modules share: the ``dfkd-edge`` command group, running a flow here or as a
follower under torchrun, and showing a report with the verdict's warning."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from dfkd_edge import distributed
from dfkd_edge.flows import follow
from dfkd_edge.progress import for_stream as progress_for_stream


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks and library logs.")
@click.version_option(package_name="dfkd-edge")
def cli(debug: bool) -> None:
    """Turn a trained PyTorch classifier into a small int8 engine without its training data."""


def _lead_or_follow(cfg, lead):
    """Run ``lead(progress, dist)`` here; under torchrun (WORLD_SIZE > 1) join the job: rank 0 leads
    and prints, the other ranks follow it (dfkd_edge.distributed) and print nothing (None)."""
    dist = distributed.from_env()
    if dist.enabled:
        distributed.init(dist, cuda=cfg.compute(dist).is_cuda)
        if not dist.is_leader:
            logging.getLogger("dfkd_edge").setLevel(logging.WARNING)
            try:
                follow(cfg, dist)
            finally:
                distributed.shutdown(dist)
            return None
    try:
        return lead(progress_for_stream(), dist)
    finally:
        distributed.shutdown(dist)


def _show_report(out: str, report: dict, subject: str = "the student") -> None:
    click.echo((Path(out) / "report.md").read_text())
    _warn_verdict(report, subject)


def _warn_verdict(report: dict, subject: str = "the student") -> None:
    """One warning line on stderr when the data-free verdict is not ok."""
    q = report.get("quality") or {}
    if q.get("verdict", "ok") != "ok":
        first = q["reasons"][0] if q.get("reasons") else "see report.md"
        click.echo(f"warning: data-free verdict {q['verdict'].upper()}: {first}; check {subject} on labelled "
                   "data before shipping it (report.md, Quality)", err=True)
