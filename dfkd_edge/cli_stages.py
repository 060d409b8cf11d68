"""One command per stage over a run directory (dfkd_edge.flows.run_command):

    dfkd-edge synthesize TEACHER --out DIR     inspect + synthesize (starts the run)
    dfkd-edge distill DIR                      [aggregate] [virtual] distill [distill-kd-baseline]
    dfkd-edge export DIR                       fp32 ONNX + parity check
    dfkd-edge calibrate DIR                    int8 ONNX for ONNX Runtime
    dfkd-edge build DIR --target T             TensorRT targets' artifacts
    dfkd-edge report DIR                       profile (when needed), evaluate, report

Each starts from the config the run recorded, with the options typed on its own command line on
top; it refuses (exit 2) and names the command to run first when a stage before it has not run or
is stale.
"""

from __future__ import annotations

import click

from dfkd_edge import options
from dfkd_edge.cli_common import _lead_or_follow, _show_report, cli
from dfkd_edge.cli_options import for_command, given
from dfkd_edge.flows import load_run_config, run_command

_NEXT = {"synthesize": "distill", "distill": "export", "export": "calibrate", "calibrate": "report",
         "build": "report"}


def _announce(stage, ran: bool) -> None:
    click.echo(f"{stage.name}: {'done' if ran else 'up to date (kept)'}", err=True)


def _run(command: str, cfg) -> None:
    s = _lead_or_follow(cfg, lambda progress, dist: run_command(command, cfg, progress, dist, _announce))
    if s is None:
        return
    if command == "report":
        _show_report(cfg.out, s.report)
        click.echo(f"wrote {cfg.out}/report.md, report.html, report.json")
    else:
        click.echo(f"next: dfkd-edge {_NEXT[command]} {cfg.out}")


def _stage_command(command: str, help_text: str):
    @cli.command(command, help=help_text + "\n\nOptions not given keep the values the run recorded (manifest.json), "
                 "not the defaults shown.")
    @click.argument("run_dir", type=click.Path())
    @for_command(command)
    @click.pass_context
    def cmd(ctx: click.Context, run_dir: str, **params) -> None:
        cfg = options.overlay(load_run_config(run_dir), given(ctx, params))
        _run(command, cfg)
    return cmd


@cli.command("synthesize")
@click.argument("teachers", nargs=-1, required=True, type=click.Path())
@for_command("synthesize")
def synthesize(teachers: tuple[str, ...], **o) -> None:
    """Start a run in --out: inspect TEACHER and synthesize the transfer set (transfer_set.npz).

    The options of later stages keep their defaults here; give them to those stages' commands."""
    _run("synthesize", options.config("synthesize", teachers, o))


_stage_command("distill", "Distill the student in RUN_DIR from its transfer set (student.pt); with several "
               "teachers, aggregate the headers. --width/--student/--epochs give a different student.")
_stage_command("export", "Export RUN_DIR's student to fp32 ONNX with the parity check (student_fp32.onnx).")
_stage_command("calibrate", "Calibrate RUN_DIR's fp32 ONNX to int8 on synthesized samples (student_int8.onnx).")
_stage_command("build", "Write the TensorRT targets' artifacts in RUN_DIR: Q/DQ and fp16 ONNX, calibration "
               "caches, build_<target>.sh.")
_stage_command("report", "Measure (when needed), evaluate and write RUN_DIR's report (report.md/html/json).")
