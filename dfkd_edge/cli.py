"""The ``dfkd-edge`` command line. Thin: parses options (dfkd_edge.cli_options), runs a flow
(dfkd_edge.flows), owns the terminal.

Exit codes: 0 success; 2 usage or bad input (one line on stderr, no traceback unless --debug);
1 internal error.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import traceback
import warnings
from inspect import signature
from pathlib import Path

import click

from dfkd_edge import cli_stages  # noqa: F401  (registers the stage commands)
from dfkd_edge import options
from dfkd_edge.allocator import keep_freed_memory
from dfkd_edge.cli_common import _lead_or_follow, _show_report, cli
from dfkd_edge.cli_options import for_command
from dfkd_edge.data.digits import builtin_teacher_path, write_test_npz
from dfkd_edge.distill.vkd import SelfDistillConfig
from dfkd_edge.domain import infer_domain
from dfkd_edge.errors import PipelineError, UserError, require_positive
from dfkd_edge.flows import convert as run_convert, quantize as run_quantize
from dfkd_edge.io import atomic_write_json
from dfkd_edge.cost import Probe
from dfkd_edge.plan import budget_lines, default_plans, lines as plan_lines
from dfkd_edge.profile_flow import profile_command
from dfkd_edge.progress import for_stream as progress_for_stream
from dfkd_edge.selfdistill import SelfDistillJob, run_selfdistill
from dfkd_edge.targets import HOST_TARGET, list_profiles
from dfkd_edge.targets.profile import load_profile, profile_text
from dfkd_edge.options import parse_input_shape
from dfkd_edge.teacher import load_teacher

_DEBUG = False
_OOM = ("a batch does not fit in memory; lower --synth-batch (synthesis) or --batch-size (distillation) "
        "and run again with --resume")


def _fail(code: int, msg: str) -> None:
    if _DEBUG:
        traceback.print_exc()
    rank = os.environ.get("RANK", "0") if os.environ.get("WORLD_SIZE", "1") != "1" else "0"
    click.echo(f"error: {msg}" if rank == "0" else f"error (rank {rank}): {msg}", err=True)
    sys.exit(code)


def main(argv=None) -> None:
    """Entry point: maps exceptions onto the exit-code contract."""
    global _DEBUG
    args = list(sys.argv[1:] if argv is None else argv)
    _DEBUG = "--debug" in args
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    keep_freed_memory()
    logging.getLogger("dfkd_edge").setLevel(logging.DEBUG if _DEBUG else logging.INFO)
    if not _DEBUG:
        warnings.filterwarnings("ignore")
        logging.getLogger("torch").setLevel(logging.ERROR)
    try:
        cli.main(args=args, prog_name="dfkd-edge", standalone_mode=False)
    except click.exceptions.Abort:
        _fail(130, "interrupted; run the same command with --resume to continue")
    except click.ClickException as e:  # usage errors: click's own message, exit 2
        e.show()
        sys.exit(2 if e.exit_code not in (0,) else 0)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except UserError as e:
        _fail(2, str(e))
    except PipelineError as e:
        _fail(1, str(e))
    except KeyboardInterrupt:
        _fail(130, "interrupted; run the same command with --resume to continue")
    except MemoryError:
        _fail(2, _OOM)
    except RuntimeError as e:
        if any(k in str(e) for k in ("can't allocate memory", "not enough memory", "out of memory")):
            _fail(2, _OOM)
        _fail(1, f"internal error: RuntimeError: {str(e).splitlines()[0] if str(e) else ''} "
                 "(re-run with --debug for the traceback)")
    except Exception as e:  # internal error: one line, the traceback with --debug
        _fail(1, f"internal error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''} "
                 "(re-run with --debug for the traceback)")



def _run_and_show(cfg) -> dict | None:
    """convert, then the report on stdout and the verdict's warning on stderr."""
    report = _lead_or_follow(cfg, lambda progress, dist: run_convert(cfg, progress=progress, dist=dist))
    if report is None:
        return None
    _show_report(cfg.out, report)
    click.echo(f"wrote {cfg.out}/ (report.html, report.md, report.json, manifest.json, ONNX models, "
               "per-target build scripts, transfer set, student)")
    return report


@cli.command()
@click.argument("teachers", nargs=-1, required=True, type=click.Path())
@for_command("convert")
def convert(teachers: tuple[str, ...], **o) -> None:
    """Synthesize a transfer set from TEACHER, distill a student, export fp32/int8 ONNX and profile it.

    Several TEACHERS (same input shape and classes) are distilled together into one student: by
    default inverted as an ensemble and distilled from its mean logits; with --method cdfkd-mfs (or
    --few-shot-data) into one multi-header student (CDFKD-MFS), exported as one model."""
    _run_and_show(options.config("convert", teachers, o))


@cli.command()
@click.argument("model", type=click.Path())
@for_command("quantize")
def quantize(model: str, **o) -> None:
    """Your own MODEL in int8, calibrated without your data: a calibration set synthesized from MODEL
    itself, ONNX fp32 and int8 (checked against MODEL), the TensorRT artifacts of TensorRT targets,
    latency, and the same model calibrated on Gaussian noise (and on --calib-data) side by side."""
    cfg = options.config("quantize", model, o)
    report = run_quantize(cfg, progress_for_stream())
    _show_report(cfg.out, report, "the int8 model")
    click.echo(f"wrote {cfg.out}/ (report.html, report.md, report.json, manifest.json, model_fp32.onnx, "
               "model_int8.onnx, per-target build scripts, calibration set)")


_CONVERT = options.defaults("convert")


@cli.command()
@click.option("--out", required=True, type=click.Path(), help="Output directory.")
@click.option("--seed", default=_CONVERT["seed"], show_default=True, help=options.OPTIONS["seed"].help)
@click.option("--threads", default=_CONVERT["threads"], show_default=True, help=options.OPTIONS["threads"].help)
@click.option("--force", is_flag=True, help="Overwrite an earlier run in --out.")
@click.option("--resume", is_flag=True, help="Finish an interrupted demo in --out.")
@click.option("--target", "targets", multiple=True, default=options.DEMO["targets"], show_default=True,
              help="Target profiles (repeatable).")
def demo(out: str, seed: int, threads: int, force: bool, resume: bool, targets: tuple[str, ...]) -> None:
    """Run convert on the built-in digits teacher and evaluate on the digits test split.

    It synthesizes half convert's default number of inputs, to finish in under 3 minutes on 2 cores."""
    with tempfile.TemporaryDirectory(prefix="dfkd-digits-") as tmp:
        test_npz = write_test_npz(Path(tmp) / "digits_test.npz")
        given = {**options.DEMO, "out": out, "seed": seed, "threads": threads, "force": force, "resume": resume,
                 "targets": targets, "eval_data": str(test_npz)}
        cfg = options.config("convert", str(builtin_teacher_path()), given)
        cfg.eval_name = "sklearn-digits test split (450)"
        _run_and_show(cfg)


_SD_JOB, _SD_TRAIN = SelfDistillJob(model="", data="", out=""), SelfDistillConfig()


@cli.command()
@click.argument("model")
@click.argument("data", type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="Output directory.")
@click.option("--factory", help="package.module:function, when MODEL is a state_dict.")
@click.option("--input-shape", help="Input shape without the batch dimension (when MODEL does not record it).")
@click.option("--width", type=int, help="Width of a zoo MODEL (auto, conv2d, conv1d, mlp).")
@click.option("--eval-data", type=click.Path(), help="Labelled .npz to validate on (default: hold out --val-fraction).")
@click.option("--val-fraction", default=_SD_JOB.val_fraction, show_default=True, help="Share of DATA held out for validation.")
@click.option("--epochs", default=_SD_TRAIN.epochs, show_default=True)
@click.option("--batch-size", default=_SD_TRAIN.batch_size, show_default=True)
@click.option("--lr", default=_SD_TRAIN.lr, show_default=True, help="Peak learning rate (AdamW, one-cycle).")
@click.option("--temperature", default=_SD_TRAIN.temperature, show_default=True)
@click.option("--vkd-weight", default=_SD_TRAIN.vkd_weight, show_default=True, help="Weight of the VKD term next to cross-entropy.")
@click.option("--compare-ce/--no-compare-ce", default=_SD_JOB.compare_ce, show_default=True,
              help="Also train the same model with cross-entropy alone and report both.")
@click.option("--seed", default=_SD_TRAIN.seed, show_default=True)
@click.option("--threads", default=_SD_JOB.threads, show_default=True, help="0: PyTorch's default.")
@click.option("--force", is_flag=True, help="Overwrite an earlier selfdistill run in --out.")
def selfdistill(model, data, out, factory, input_shape, width, eval_data, val_fraction, epochs, batch_size, lr,
                temperature, vkd_weight, compare_ce, seed, threads, force) -> None:
    """Train MODEL on the labelled DATA (.npz x, y) with its own concurrently trained virtual generator
    as the soft-target source (self-distillation via VKD). MODEL: auto, conv2d, conv1d, mlp (built for
    the data's shape) or a model file (TorchScript, or a state_dict with --factory)."""
    require_positive((("--epochs", epochs), ("--batch-size", batch_size), ("--lr", lr), ("--temperature", temperature)))
    if vkd_weight < 0:
        raise UserError(f"--vkd-weight must not be negative, got {vkd_weight}")
    job = SelfDistillJob(model=model, data=data, out=out, factory=factory, input_shape=parse_input_shape(input_shape),
                         width=width, eval_data=eval_data, val_fraction=val_fraction, compare_ce=compare_ce,
                         threads=threads, force=force,
                         train=SelfDistillConfig(epochs=epochs, batch_size=batch_size, lr=lr, temperature=temperature,
                                                 vkd_weight=vkd_weight, seed=seed))
    r = run_selfdistill(job, progress_for_stream())
    acc = r["accuracy"]
    line = f"validation accuracy ({r['validation']}): self-distillation (VKD) {100 * acc['selfdistill_vkd']:.2f}%"
    if acc["cross_entropy"] is not None:
        line += f", cross-entropy alone {100 * acc['cross_entropy']:.2f}%"
    click.echo(line)
    click.echo(f"wrote {out}/ (model.pt: TorchScript, usable as a convert teacher; virtual_generator.pt; "
               "selfdistill.json)")


@cli.command()
@click.argument("teacher", type=click.Path())
@click.option("--input-shape", help="Input shape without the batch dimension.")
@click.option("--factory", help="package.module:function, when TEACHER is a state_dict.")
def inspect(teacher: str, input_shape: str | None, factory: str | None) -> None:
    """Print what dfkd-edge sees in TEACHER (TeacherSpec and its input domain, as JSON) and, on stderr, what
    `convert` and `quantize` with their defaults would take on this machine, stage by stage (the JSON's
    "plans")."""
    t = load_teacher(teacher, parse_input_shape(input_shape), factory)
    t.domain = infer_domain(t)
    plans = default_plans(t, options.base("convert"), options.config("quantize", teacher, {"out": ""}))
    for flow in ("convert", "quantize"):
        click.echo(f"dfkd-edge {flow} with its defaults (probes of a few samples; a run plans again at its own "
                   "batches):", err=True)
        budget = plans[flow].get("budget")
        for line in (budget_lines(budget) if budget else []) + plan_lines(plans[flow], Probe.from_dict(plans["probe"])):
            click.echo(line, err=True)
    click.echo(json.dumps({**t.spec.to_dict(), "input_domain": t.domain.to_dict(), "plans": plans}, indent=2))


@cli.group()
def targets() -> None:
    """Device profiles: what runs on each target and how fast it is on paper."""


@targets.command("list")
def targets_list() -> None:
    """The profiles shipped with dfkd-edge."""
    rows = [("name", "kind", "runtime", "precisions", "int8 peak", "memory", "power modes (*: default)")]
    for p in list_profiles():
        runtime = (f"TensorRT {p.tensorrt[0]}" + (f"-{p.tensorrt[1]}" if p.tensorrt[1] != p.tensorrt[0] else "")
                   + ".x" if p.tensorrt else "ONNX Runtime " + "/".join(e.replace("ExecutionProvider", "")
                                                                       for e in p.onnxruntime_ep))
        peak = f"{p.peak['int8'] / 1e12:.3g} TOPS" if "int8" in p.peak else "measured"
        mem = f"{p.bandwidth_gbs:g} GB/s" if p.bandwidth_gbs else "-"
        modes = ", ".join(m + ("*" if m == p.mode else "") for m in p.mode_table) or "-"
        rows.append((p.name, p.kind, runtime, ",".join(p.precisions), peak, mem, modes))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    click.echo("\nPeaks and bandwidth at the default power mode; NAME:MODE for another (jetson-orin-nano:MAXN_SUPER). "
               "A profile of your own: copy one (`dfkd-edge targets show NAME > my.toml`), edit it and pass "
               "--target my.toml.")


@targets.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="The parsed profile as JSON instead of its TOML.")
def targets_show(name: str, as_json: bool) -> None:
    """One profile (NAME, or the path of a .toml): its TOML with the sources of every figure."""
    p = load_profile(name)  # validates, UserError on anything wrong
    click.echo(json.dumps(p.to_dict(), indent=2) if as_json else profile_text(name).rstrip())


_PROFILE = {k: p.default for k, p in signature(profile_command).parameters.items()}


@cli.command()
@click.argument("model", type=click.Path(), required=False)
@click.option("--target", "target", default=HOST_TARGET, show_default=True, help="Target profile name or .toml path.")
@click.option("--remote", help="[user@]host (or a Host alias of your ssh config) to measure on, over SSH.")
@click.option("--ssh-config", type=click.Path(), help="ssh config file passed as `ssh -F` (default: ~/.ssh/config).")
@click.option("--remote-python", default=_PROFILE["remote_python"], show_default=True,
              help="Python on the device with numpy and onnxruntime (for the ONNX Runtime runner).")
@click.option("--runner", type=click.Choice(["auto", "trtexec", "onnxruntime"]), default=_PROFILE["runner"], show_default=True,
              help="On the device: trtexec (TensorRT targets, engines) or the bundled ONNX Runtime runner.")
@click.option("--trtexec", "trtexec_bin", default=_PROFILE["trtexec_bin"], show_default=True, help="trtexec on the device.")
@click.option("--trtexec-log", type=click.Path(), multiple=True,
              help="Read latency from trtexec output already captured (e.g. the build script's logs); no MODEL needed.")
@click.option("--precision", type=click.Choice(["int8", "fp16", "fp32"]),
              help="What the model computes in (default: from the file name, fp32 otherwise).")
@click.option("--input-shape", help="Input shape without batch, when not read from the ONNX (engines, trtexec).")
@click.option("--batch", "batches", type=int, multiple=True, default=_PROFILE["batches"], show_default=True)
@click.option("--budget", default=_PROFILE["budget_s"], show_default=True, help="Seconds of timed runs per batch size.")
@click.option("--threads", default=_PROFILE["threads"], show_default=True, help="Local ONNX Runtime threads (0: min(4, cores)).")
@click.option("--report", "report_dir", type=click.Path(), help="A convert output directory: add these rows to "
              "its report (replacing rows of the same device, kind, precision and batch) and re-render it.")
@click.option("--json", "json_path", type=click.Path(), help="Also write the rows printed to this file (JSON list).")
def profile(model, target, remote, ssh_config, remote_python, runner, trtexec_bin, trtexec_log, precision,
            input_shape, batches, budget, threads, report_dir, json_path) -> None:
    """Latency of MODEL (.onnx, or a TensorRT .engine/.plan) for a target: estimated for a device target
    (from the fp32 ONNX, with the estimate's measured error), measured on the device with --remote, read
    from captured trtexec logs (--trtexec-log), or measured here for the host target."""
    rows = profile_command(model, target, remote=remote, ssh_config=ssh_config, remote_python=remote_python,
                           runner=runner, trtexec_bin=trtexec_bin, trtexec_logs=list(trtexec_log),
                           precision=precision, input_shape=input_shape, batches=tuple(batches), budget_s=budget,
                           threads=threads, report_dir=report_dir)
    if json_path:
        atomic_write_json(Path(json_path), rows)
    click.echo(json.dumps(rows, indent=2))



if __name__ == "__main__":
    main()
