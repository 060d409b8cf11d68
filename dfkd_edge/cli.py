"""The ``dfkd-edge`` command line. Thin: parses options, runs dfkd_edge.pipeline, owns the terminal.

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
from pathlib import Path

import click

from dfkd_edge.errors import PipelineError, UserError, require_positive

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


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks and library logs.")
@click.version_option(package_name="dfkd-edge")
def cli(debug: bool) -> None:
    """Turn a trained PyTorch classifier into a small int8 engine without its training data."""


def _convert_options(f):
    opts = [
        click.option("--out", "out", required=True, type=click.Path(file_okay=True), help="Output directory."),
        click.option("--input-shape", help="Input shape without the batch dimension, e.g. 1,28,28 (when the file does not record it)."),
        click.option("--factory", help="package.module:function building the model, when TEACHER is a state_dict."),
        click.option("--input-range", help="LO,HI: the range of the teacher's inputs (e.g. 0,1 or 0,255), when known. "
                                           "Default: read from the teacher's first BatchNorm layer."),
        click.option("--input-mean", help="Per-channel (or per-feature) mean of the teacher's inputs, comma-separated "
                                          "(one value for all), when known; with --input-std."),
        click.option("--input-std", help="Per-channel (or per-feature) standard deviation of the teacher's inputs."),
        click.option("--target", "targets", multiple=True, default=("host-cpu",), show_default=True,
                     help="Target device profile, by name (dfkd-edge targets list) or path to a .toml (repeatable). "
                          "The host is always measured; other targets get their artifacts and estimated latency."),
        click.option("--method", default="auto", show_default=True,
                     help="Transfer-set synthesis: auto (= deepinversion), deepinversion, soft-target, adversarial, gaussian, "
                          "reused-generator (Fast-DFKD-style: one generator carried across batches, --iterations "
                          "steps on the first batch, a tenth of that on the others)."),
        click.option("--samples", default=2048, show_default=True, help="Transfer-set size (training part)."),
        click.option("--holdout", default=256, show_default=True, help="Synthetic samples held out for fidelity."),
        click.option("--iterations", default=200, show_default=True, help="Optimisation steps per synthesis batch."),
        click.option("--synth-batch", default=256, show_default=True, help="Synthesis batch size."),
        click.option("--student", default="auto", show_default=True, help="Student family: auto, conv2d, conv1d, mlp."),
        click.option("--width", type=int, default=None, help="Student width (default: chosen from the teacher's size)."),
        click.option("--epochs", default=100, show_default=True, help="Distillation epochs."),
        click.option("--batch-size", default=128, show_default=True, help="Distillation batch size."),
        click.option("--temperature", default=4.0, show_default=True, help="KD temperature."),
        click.option("--mixup", default=1.0, show_default=True, help="Beta(a,a) online mixup during KD; 0 turns it off."),
        click.option("--distill", "distill_mode", type=click.Choice(["kd", "vkd", "kd+vkd"]), default="kd",
                     show_default=True,
                     help="Soft targets: kd (the teacher), vkd (a class-conditional virtual generator trained on the "
                          "teacher's outputs over the transfer set; the teacher is not run while the student "
                          "trains), kd+vkd (both, weighted by --vkd-weight)."),
        click.option("--vkd-weight", default=0.5, show_default=True,
                     help="kd+vkd: the VKD term's share of the loss (0..1; KD gets the rest)."),
        click.option("--vkd-epochs", default=200, show_default=True,
                     help="Epochs of virtual-generator training over the transfer set's logits."),
        click.option("--compare-kd/--no-compare-kd", default=True, show_default=True,
                     help="With vkd or kd+vkd: also distill a plain-KD student from the same transfer set and "
                          "report both (about one more distillation's time)."),
        click.option("--few-shot-data", type=click.Path(),
                     help="Several teachers: a few labelled samples (.npz x, y; about 10 per class) to train the "
                          "attention over the student's headers (default: their mean)."),
        click.option("--calib-samples", default=256, show_default=True, help="Synthesized samples used for int8 calibration."),
        click.option("--calib-method", default="minmax", show_default=True, type=click.Choice(["minmax", "entropy", "percentile"])),
        click.option("--eval-data", type=click.Path(), help="Labelled .npz (x, y) to report accuracy on."),
        click.option("--seed", default=0, show_default=True, help="Seed for everything random."),
        click.option("--threads", default=0, show_default=True, help="Threads for training and latency (0: min(4, cores); under torchrun, for synthesis and "
                          "distillation: cores / processes on the node)."),
        click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True,
                     help="Where synthesis and distillation run (auto: CUDA when PyTorch sees a GPU). Under torchrun "
                          "each rank takes the GPU of its LOCAL_RANK."),
        click.option("--precision", type=click.Choice(["auto", "fp32", "bf16", "fp16"]), default="auto",
                     show_default=True,
                     help="Autocast for synthesis and distillation (auto: bf16 on a GPU that has it, else fp16; "
                          "fp32 on the CPU). Exported models are fp32 either way."),
        click.option("--channels-last", type=click.Choice(["auto", "on", "off"]), default="auto", show_default=True,
                     help="NHWC memory format for image teachers and students (auto: on a GPU)."),
        click.option("--compile", "compile_", type=click.Choice(["auto", "on", "off"]), default="auto",
                     show_default=True,
                     help="torch.compile the student's training forward (auto: on a GPU; falls back to eager if "
                          "compilation fails)."),
        click.option("--latency-budget", default=1.0, show_default=True,
                     help="Seconds of timed runs per engine and batch size (more: steadier latency figures)."),
        click.option("--force", is_flag=True, help="Overwrite an output directory holding an earlier run."),
        click.option("--resume", is_flag=True,
                     help="Finish an interrupted run in --out: skip stages whose config and inputs are unchanged."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


def _config(teachers, **o):
    from dfkd_edge.distill import KDConfig
    from dfkd_edge.distill.vkd import VKDConfig
    from dfkd_edge.export.quantize import CalibConfig
    from dfkd_edge.pipeline import ConvertConfig
    from dfkd_edge.teacher import parse_input_shape

    kd = KDConfig(epochs=o["epochs"], batch_size=o["batch_size"], temperature=o["temperature"], mixup=o["mixup"],
                  mode=o["distill_mode"], vkd_weight=o["vkd_weight"])
    calib = CalibConfig(samples=o["calib_samples"], method=o["calib_method"])
    teachers = [teachers] if isinstance(teachers, str) else list(teachers)
    return ConvertConfig(teacher=teachers[0], more_teachers=tuple(teachers[1:]), few_shot_data=o["few_shot_data"],
                         out=o["out"], input_shape=parse_input_shape(o["input_shape"]),
                         factory=o["factory"], input_range=o["input_range"], input_mean=o["input_mean"],
                         input_std=o["input_std"], targets=tuple(o["targets"]), method=o["method"], samples=o["samples"],
                         holdout=o["holdout"], iterations=o["iterations"], synth_batch=o["synth_batch"],
                         student=o["student"], width=o["width"], kd=kd, calib=calib, eval_data=o["eval_data"],
                         vkd=VKDConfig(epochs=o["vkd_epochs"]), compare_kd=o["compare_kd"],
                         seed=o["seed"], threads=o["threads"], force=o["force"], resume=o["resume"],
                         device=o["device"], precision=o["precision"], channels_last=o["channels_last"],
                         compile=o["compile_"],
                         latency_budget_s=o["latency_budget"])


def _run_and_show(cfg) -> dict | None:
    """Run convert here; under torchrun (WORLD_SIZE > 1) join the job: rank 0 runs convert and prints,
    the other ranks follow it (dfkd_edge.distributed) and print nothing."""
    from rich.console import Console

    from dfkd_edge import distributed
    from dfkd_edge.pipeline import convert, follow
    from dfkd_edge.progress import RichProgress

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
    console = Console(stderr=True)
    try:
        report = convert(cfg, progress=RichProgress(console), dist=dist)
    finally:
        distributed.shutdown(dist)
    md = (Path(cfg.out) / "report.md").read_text()
    click.echo(md)
    click.echo(f"wrote {cfg.out}/ (report.html, report.md, report.json, manifest.json, ONNX models, "
               "per-target build scripts, transfer set, student)")
    _warn_verdict(report)
    return report


def _warn_verdict(report: dict) -> None:
    """One warning line on stderr when the data-free verdict is not ok."""
    q = report.get("quality") or {}
    if q.get("verdict", "ok") != "ok":
        first = q["reasons"][0] if q.get("reasons") else "see report.md"
        click.echo(f"warning: data-free verdict {q['verdict'].upper()}: {first}; check the student on labelled "
                   "data before shipping it (report.md, Quality)", err=True)


@cli.command()
@click.argument("teachers", nargs=-1, required=True, type=click.Path())
@_convert_options
def convert(teachers: tuple[str, ...], **o) -> None:
    """Synthesize a transfer set from TEACHER, distill a student, export fp32/int8 ONNX and profile it.

    Several TEACHERS (same input shape and classes) are distilled together into one multi-header
    student (CDFKD-MFS), exported as one model."""
    _run_and_show(_config(teachers, **o))


@cli.command()
@click.option("--out", required=True, type=click.Path(), help="Output directory.")
@click.option("--seed", default=0, show_default=True)
@click.option("--threads", default=0, show_default=True, help="0: min(4, cores).")
@click.option("--force", is_flag=True, help="Overwrite an earlier run in --out.")
@click.option("--resume", is_flag=True, help="Finish an interrupted demo in --out.")
@click.option("--target", "targets", multiple=True, default=("host-cpu", "jetson-orin-nano"), show_default=True,
              help="Target profiles (repeatable).")
def demo(out: str, seed: int, threads: int, force: bool, resume: bool, targets: tuple[str, ...]) -> None:
    """Run convert on the built-in digits teacher and evaluate on the digits test split."""
    from dfkd_edge.data.digits import builtin_teacher_path, write_test_npz

    with tempfile.TemporaryDirectory(prefix="dfkd-digits-") as tmp:
        test_npz = write_test_npz(Path(tmp) / "digits_test.npz")
        args = [str(builtin_teacher_path()), "--out", out, "--seed", str(seed), "--threads", str(threads),
                "--eval-data", str(test_npz)] + (["--force"] if force else []) + (["--resume"] if resume else [])
        args += [a for t in targets for a in ("--target", t)]
        with convert.make_context("convert", args) as ctx:
            opts = dict(ctx.params)
        opts.pop("teachers")
        cfg = _config(str(builtin_teacher_path()), **opts)
        cfg.eval_name = "sklearn-digits test split (450)"
        _run_and_show(cfg)


@cli.command()
@click.argument("model")
@click.argument("data", type=click.Path())
@click.option("--out", required=True, type=click.Path(), help="Output directory.")
@click.option("--factory", help="package.module:function, when MODEL is a state_dict.")
@click.option("--input-shape", help="Input shape without the batch dimension (when MODEL does not record it).")
@click.option("--width", type=int, help="Width of a zoo MODEL (auto, conv2d, conv1d, mlp).")
@click.option("--eval-data", type=click.Path(), help="Labelled .npz to validate on (default: hold out --val-fraction).")
@click.option("--val-fraction", default=0.1, show_default=True, help="Share of DATA held out for validation.")
@click.option("--epochs", default=100, show_default=True)
@click.option("--batch-size", default=128, show_default=True)
@click.option("--lr", default=5e-3, show_default=True, help="Peak learning rate (AdamW, one-cycle).")
@click.option("--temperature", default=4.0, show_default=True)
@click.option("--vkd-weight", default=1.0, show_default=True, help="Weight of the VKD term next to cross-entropy.")
@click.option("--compare-ce/--no-compare-ce", default=True, show_default=True,
              help="Also train the same model with cross-entropy alone and report both.")
@click.option("--seed", default=0, show_default=True)
@click.option("--threads", default=0, show_default=True, help="0: PyTorch's default.")
@click.option("--force", is_flag=True, help="Overwrite an earlier selfdistill run in --out.")
def selfdistill(model, data, out, factory, input_shape, width, eval_data, val_fraction, epochs, batch_size, lr,
                temperature, vkd_weight, compare_ce, seed, threads, force) -> None:
    """Train MODEL on the labelled DATA (.npz x, y) with its own concurrently trained virtual generator
    as the soft-target source (self-distillation via VKD). MODEL: auto, conv2d, conv1d, mlp (built for
    the data's shape) or a model file (TorchScript, or a state_dict with --factory)."""
    from rich.console import Console

    from dfkd_edge.distill.vkd import SelfDistillConfig
    from dfkd_edge.progress import RichProgress
    from dfkd_edge.selfdistill import SelfDistillJob, run_selfdistill
    from dfkd_edge.teacher import parse_input_shape

    require_positive((("--epochs", epochs), ("--batch-size", batch_size), ("--lr", lr), ("--temperature", temperature)))
    if vkd_weight < 0:
        raise UserError(f"--vkd-weight must not be negative, got {vkd_weight}")
    job = SelfDistillJob(model=model, data=data, out=out, factory=factory, input_shape=parse_input_shape(input_shape),
                         width=width, eval_data=eval_data, val_fraction=val_fraction, compare_ce=compare_ce,
                         threads=threads, force=force,
                         train=SelfDistillConfig(epochs=epochs, batch_size=batch_size, lr=lr, temperature=temperature,
                                                 vkd_weight=vkd_weight, seed=seed))
    r = run_selfdistill(job, RichProgress(Console(stderr=True)))
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
    """Print what dfkd-edge sees in TEACHER (TeacherSpec and its input domain, as JSON)."""
    from dfkd_edge.domain import infer_domain
    from dfkd_edge.teacher import load_teacher, parse_input_shape

    t = load_teacher(teacher, parse_input_shape(input_shape), factory)
    click.echo(json.dumps({**t.spec.to_dict(), "input_domain": infer_domain(t).to_dict()}, indent=2))


@cli.group()
def targets() -> None:
    """Device profiles: what runs on each target and how fast it is on paper."""


@targets.command("list")
def targets_list() -> None:
    """The profiles shipped with dfkd-edge."""
    from dfkd_edge.targets import list_profiles

    rows = [("name", "kind", "runtime", "precisions", "int8 peak", "memory")]
    for p in list_profiles():
        runtime = (f"TensorRT {p.tensorrt[0]}" + (f"-{p.tensorrt[1]}" if p.tensorrt[1] != p.tensorrt[0] else "")
                   + ".x" if p.tensorrt else "ONNX Runtime " + "/".join(e.replace("ExecutionProvider", "")
                                                                       for e in p.onnxruntime_ep))
        peak = f"{p.peak['int8'] / 1e12:g} TOPS" if "int8" in p.peak else "measured"
        mem = f"{p.bandwidth_gbs:g} GB/s" if p.bandwidth_gbs else "-"
        rows.append((p.name, p.kind, runtime, ",".join(p.precisions), peak, mem))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())
    click.echo("\nA profile of your own: copy one (`dfkd-edge targets show NAME > my.toml`), edit it and pass "
               "--target my.toml.")


@targets.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="The parsed profile as JSON instead of its TOML.")
def targets_show(name: str, as_json: bool) -> None:
    """One profile (NAME, or the path of a .toml): its TOML with the sources of every figure."""
    from dfkd_edge.targets.profile import load_profile, profile_text

    p = load_profile(name)  # validates, UserError on anything wrong
    click.echo(json.dumps(p.to_dict(), indent=2) if as_json else profile_text(name).rstrip())


@cli.command()
@click.argument("model", type=click.Path(), required=False)
@click.option("--target", "target", default="host-cpu", show_default=True, help="Target profile name or .toml path.")
@click.option("--remote", help="[user@]host (or a Host alias of your ssh config) to measure on, over SSH.")
@click.option("--ssh-config", type=click.Path(), help="ssh config file passed as `ssh -F` (default: ~/.ssh/config).")
@click.option("--remote-python", default="python3", show_default=True,
              help="Python on the device with numpy and onnxruntime (for the ONNX Runtime runner).")
@click.option("--runner", type=click.Choice(["auto", "trtexec", "onnxruntime"]), default="auto", show_default=True,
              help="On the device: trtexec (TensorRT targets, engines) or the bundled ONNX Runtime runner.")
@click.option("--trtexec", "trtexec_bin", default="trtexec", show_default=True, help="trtexec on the device.")
@click.option("--trtexec-log", type=click.Path(), multiple=True,
              help="Read latency from trtexec output already captured (e.g. the build script's logs); no MODEL needed.")
@click.option("--precision", type=click.Choice(["int8", "fp16", "fp32"]), default=None,
              help="What the model computes in (default: from the file name, fp32 otherwise).")
@click.option("--input-shape", help="Input shape without batch, when not read from the ONNX (engines, trtexec).")
@click.option("--batch", "batches", type=int, multiple=True, default=(1, 32), show_default=True)
@click.option("--budget", default=1.0, show_default=True, help="Seconds of timed runs per batch size.")
@click.option("--threads", default=0, show_default=True, help="Local ONNX Runtime threads (0: min(4, cores)).")
@click.option("--report", "report_dir", type=click.Path(), help="A convert output directory: add these rows to "
              "its report (replacing rows of the same device, kind, precision and batch) and re-render it.")
def profile(model, target, remote, ssh_config, remote_python, runner, trtexec_bin, trtexec_log, precision,
            input_shape, batches, budget, threads, report_dir) -> None:
    """Measure the latency of MODEL (.onnx, or a TensorRT .engine/.plan) for a target: here, or on the
    device with --remote, or from captured trtexec logs (--trtexec-log)."""
    from dfkd_edge.targets.profiling import profile_command

    rows = profile_command(model, target, remote=remote, ssh_config=ssh_config, remote_python=remote_python,
                           runner=runner, trtexec_bin=trtexec_bin, trtexec_logs=list(trtexec_log),
                           precision=precision, input_shape=input_shape, batches=tuple(batches), budget_s=budget,
                           threads=threads, report_dir=report_dir)
    click.echo(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
