"""The command line's options, grouped by the stage that uses them, and their mapping onto
``ConvertConfig`` (both ways: a stage command starts from the config its run recorded and puts
the options given on its command line on top)."""

from __future__ import annotations

import click

from dfkd_edge.config import ConvertConfig
from dfkd_edge.distill import KDConfig
from dfkd_edge.distill.vkd import VKDConfig
from dfkd_edge.errors import UserError
from dfkd_edge.export.onnx_model import is_onnx
from dfkd_edge.export.quantize import CANDIDATES, CalibConfig
from dfkd_edge.teacher import parse_input_shape

OUT = [
    click.option("--out", "out", required=True, type=click.Path(file_okay=True), help="Output directory."),
    click.option("--force", is_flag=True, help="Overwrite an output directory holding an earlier run."),
    click.option("--resume", is_flag=True,
                 help="Finish an interrupted run in --out: skip stages whose config and inputs are unchanged."),
]
TEACHER = [
    click.option("--input-shape", help="Input shape without the batch dimension, e.g. 1,28,28 (when the file does not record it)."),
    click.option("--factory", help="package.module:function building the model, when TEACHER is a state_dict."),
    click.option("--input-range", help="LO,HI: the range of the teacher's inputs (e.g. 0,1 or 0,255), when known. "
                                       "Default: read from the teacher's first BatchNorm layer."),
    click.option("--input-mean", help="Per-channel (or per-feature) mean of the teacher's inputs, comma-separated "
                                      "(one value for all), when known; with --input-std."),
    click.option("--input-std", help="Per-channel (or per-feature) standard deviation of the teacher's inputs."),
]
SYNTH = [
    click.option("--method", default="auto", show_default=True,
                 help="Transfer-set synthesis: auto (= deepinversion), deepinversion, soft-target, adversarial, gaussian, "
                      "reused-generator (Fast-DFKD-style: one generator carried across batches, --iterations "
                      "steps on the first batch, a tenth of that on the others). Several teachers: auto (= "
                      "deepinversion against their ensemble; cdfkd-mfs with --few-shot-data), deepinversion or "
                      "cdfkd-mfs (one header per teacher, trained against a generator)."),
    click.option("--samples", default=4096, show_default=True, help="Transfer-set size (training part)."),
    click.option("--holdout", default=256, show_default=True, help="Synthetic samples held out for fidelity."),
    click.option("--iterations", default=200, show_default=True, help="Optimisation steps per synthesis batch."),
    click.option("--synth-batch", default=256, show_default=True, help="Synthesis batch size."),
    click.option("--synth-start", default="auto", show_default=True,
                 help="Where the input-optimising methods (deepinversion, soft-target) start each sample: "
                      "auto (dead-leaves for images, noise otherwise), dead-leaves (flat shapes laid over "
                      "each other, images only), noise (the input domain's noise) or half (half of each "
                      "batch each way, images only)."),
]
STUDENT = [
    click.option("--student", default="auto", show_default=True, help="Student family: auto, conv2d, conv1d, mlp."),
    click.option("--width", type=int, default=None, help="Student width (default: chosen from the teacher's size)."),
    click.option("--epochs", default=KDConfig.epochs, show_default=True, help="Distillation epochs."),
    click.option("--batch-size", default=128, show_default=True, help="Distillation batch size."),
    click.option("--temperature", default=4.0, show_default=True, help="KD temperature."),
    click.option("--mixup", default=1.0, show_default=True, help="Beta(a,a) online mixup during KD; 0 turns it off."),
    click.option("--shift/--no-shift", default=True, show_default=True,
                 help="Images and signals, with online mixup: move each mixed input by up to 1/8 of its size (the teacher "
                      "labels it)."),
    click.option("--distill", "distill_mode", type=click.Choice(["kd", "vkd", "kd+vkd"]), default="kd",
                 show_default=True,
                 help="Soft targets: kd (the teacher), vkd (a class-conditional virtual generator trained on the "
                      "teacher's outputs over the transfer set; the teacher is not run while the student "
                      "trains), kd+vkd (both, weighted by --vkd-weight)."),
    click.option("--vkd-weight", default=0.5, show_default=True,
                 help="kd+vkd: the VKD term's share of the loss (0..1; KD gets the rest)."),
    click.option("--vkd-epochs", default=200, show_default=True,
                 help="Epochs of virtual-generator training over the transfer set's logits."),
    click.option("--vkd-transfer", type=click.Choice(["inverted", "virtual"]), default="inverted", show_default=True,
                 help="vkd or kd+vkd: the student's inputs: inverted (the transfer set the generator learned from) or "
                      "virtual (a second set of --samples synthesized so that the teacher's outputs match the "
                      "generator's draws; about one more synthesis' time; better on 3 of 5 zoo teachers, worse "
                      "on 1)."),
    click.option("--compare-kd/--no-compare-kd", default=True, show_default=True,
                 help="With vkd or kd+vkd: also distill a plain-KD student from the same transfer set and "
                      "report both (about one more distillation's time)."),
    click.option("--few-shot-data", type=click.Path(),
                 help="Several teachers: a few labelled samples (.npz x, y; about 10 per class) to train the "
                      "attention over the student's headers (default: their mean)."),
]
CALIB = [
    click.option("--calib-samples", default=256, show_default=True, help="Synthesized samples used for int8 calibration."),
    click.option("--calib-method", default="minmax", show_default=True, type=click.Choice(["minmax", "entropy", "percentile"])),
    click.option("--int8-format", default="auto", show_default=True,
                 type=click.Choice(["auto", *CANDIDATES]),
                 help="ONNX Runtime int8 format: auto builds each and keeps the fastest that agrees with fp32 "
                      "on this machine; a name builds only that one (the same model wherever it is built)."),
]
TARGETS = [
    click.option("--target", "targets", multiple=True, default=("host-cpu",), show_default=True,
                 help="Target device profile, by name (dfkd-edge targets list) or path to a .toml (repeatable). "
                      "The host is always measured; other targets get their artifacts and estimated latency."),
]
EVAL = [click.option("--eval-data", type=click.Path(), help="Labelled .npz (x, y) to report accuracy on.")]
LATENCY = [click.option("--latency-budget", default=1.0, show_default=True,
                        help="Seconds of timed runs per engine and batch size (more: steadier latency figures).")]
SEED = [click.option("--seed", default=0, show_default=True, help="Seed for everything random.")]
THREADS = [click.option("--threads", default=0, show_default=True,
                        help="Threads for training and latency (0: min(4, cores); under torchrun, for synthesis and "
                             "distillation: cores / processes on the node).")]
COMPUTE = [
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
]
CONVERT = OUT[:1] + TEACHER + TARGETS + SYNTH + STUDENT + CALIB + EVAL + SEED + THREADS + COMPUTE + LATENCY + OUT[1:]
QUANTIZE_SYNTH = [
    click.option("--method", default="auto", show_default=True,
                 help="How the calibration set is synthesized from the model: auto (= deepinversion), deepinversion, "
                      "soft-target or gaussian (the input domain's noise)."),
    SYNTH[2],  # --holdout
    click.option("--iterations", default=50, show_default=True,
                 help="Optimisation steps per synthesis batch (convert's 200 calibrated no better on the zoo's 16 "
                      "teachers, 3 seeds: docs/benchmarks.md; synthesis is most of quantize's time)."),
    *SYNTH[4:],  # --synth-batch, --synth-start
]
CALIB_DATA = [click.option("--calib-data", type=click.Path(),
                           help="Real inputs (.npz x; labels not needed) to calibrate a second int8 model on, for "
                                "comparison only: what ships is calibrated on synthesized samples.")]
SOURCE = [click.option("--source", type=click.Path(),
                       help="MODEL is an ONNX file: the same network in PyTorch (TorchScript, .pt2, or a state_dict "
                            "with --factory), which the calibration set is synthesized from (without it, from the ONNX "
                            "graph run in PyTorch: BatchNorm folded into convolutions gives nothing to invert). The "
                            "ONNX file itself is what gets calibrated.")]
QUANTIZE = (OUT[:1] + SOURCE + TEACHER + TARGETS + QUANTIZE_SYNTH + CALIB + EVAL + CALIB_DATA + SEED + THREADS
            + COMPUTE[:2] + LATENCY + OUT[1:])
# each stage command: the options of its own stages (the rest come from the run's manifest)
STAGE_OPTIONS = {
    "synthesize": OUT[:1] + TEACHER + SYNTH + STUDENT + EVAL + SEED + THREADS + COMPUTE + OUT[1:],
    "distill": STUDENT + THREADS + COMPUTE,
    "export": THREADS,
    "calibrate": CALIB + EVAL + THREADS,
    "build": TARGETS + THREADS,
    "report": TARGETS + EVAL + LATENCY + THREADS,
}


def apply(opts: list):
    def deco(f):
        for o in reversed(opts):
            f = o(f)
        return f
    return deco


def _defaults(command: str, options: list, argument: str) -> dict:
    """A command's options as its command line gives them when none is typed (``out``: "OUT")."""
    @click.command()
    @click.argument(argument, nargs=-1)
    @apply(options)
    def f(**o):
        pass

    with f.make_context(command, ["ARG", "--out", "OUT"]) as ctx:
        params = dict(ctx.params)
    params.pop(argument)
    return params


def convert_defaults() -> dict:
    """convert's options as its command line gives them when none is typed."""
    return _defaults("convert", CONVERT, "teachers")


def _calib(o: dict):
    calib = CalibConfig(samples=o["calib_samples"], method=o["calib_method"])
    if o.get("int8_format", "auto") != "auto":
        calib.formats = (o["int8_format"],)
    return calib


def config_from_options(teachers, **o) -> ConvertConfig:
    """A ConvertConfig from convert's options (every one given, as click passes them)."""
    kd = KDConfig(epochs=o["epochs"], batch_size=o["batch_size"], temperature=o["temperature"], mixup=o["mixup"],
                  shift=o.get("shift", True), mode=o["distill_mode"], vkd_weight=o["vkd_weight"])
    calib = _calib(o)
    teachers = [teachers] if isinstance(teachers, str) else list(teachers)
    return ConvertConfig(teacher=teachers[0], more_teachers=tuple(teachers[1:]), few_shot_data=o["few_shot_data"],
                         out=o["out"], input_shape=parse_input_shape(o["input_shape"]),
                         factory=o["factory"], input_range=o["input_range"], input_mean=o["input_mean"],
                         input_std=o["input_std"], targets=tuple(o["targets"]), method=o["method"],
                         samples=o["samples"], holdout=o["holdout"], iterations=o["iterations"],
                         synth_start=o.get("synth_start", "auto"), synth_batch=o["synth_batch"], student=o["student"],
                         width=o["width"], kd=kd, calib=calib,
                         eval_data=o["eval_data"], vkd=VKDConfig(epochs=o["vkd_epochs"], transfer=o.get("vkd_transfer", VKDConfig.transfer)),
                         compare_kd=o["compare_kd"],
                         seed=o["seed"], threads=o["threads"], force=o["force"], resume=o["resume"],
                         device=o["device"], precision=o["precision"], channels_last=o["channels_last"],
                         compile=o["compile_"], latency_budget_s=o["latency_budget"])


def quantize_defaults() -> dict:
    """quantize's options as its command line gives them when none is typed."""
    return _defaults("quantize", QUANTIZE, "model")


def quantize_config(model: str, **o) -> ConvertConfig:
    """A ConvertConfig for ``dfkd-edge quantize`` (its options, as click passes them): the synthesized set
    is the calibration set, ``--calib-samples`` of it."""
    calib = _calib(o)
    onnx_model = None
    if is_onnx(model):  # calibrated as it is; synthesized from --source, else from the graph run in PyTorch
        onnx_model, model = model, o.get("source") or model
    elif o.get("source"):
        raise UserError(f"--source names the PyTorch network of an ONNX MODEL, and {model} is not an ONNX file; "
                        "leave --source out")
    return ConvertConfig(teacher=model, onnx_model=onnx_model, out=o["out"], input_shape=parse_input_shape(o["input_shape"]),
                         factory=o["factory"], input_range=o["input_range"], input_mean=o["input_mean"],
                         input_std=o["input_std"], targets=tuple(o["targets"]), method=o["method"],
                         samples=o["calib_samples"], holdout=o["holdout"], iterations=o["iterations"],
                         synth_start=o["synth_start"], synth_batch=o["synth_batch"], calib=calib,
                         eval_data=o["eval_data"], calib_data=o["calib_data"], seed=o["seed"], threads=o["threads"],
                         force=o["force"], resume=o["resume"], device=o["device"], precision=o["precision"],
                         latency_budget_s=o["latency_budget"])


_FIELDS = {"latency_budget": "latency_budget_s", "compile_": "compile"}  # option -> ConvertConfig field
_NESTED = {"epochs": ("kd", "epochs"), "batch_size": ("kd", "batch_size"), "temperature": ("kd", "temperature"),
           "mixup": ("kd", "mixup"), "shift": ("kd", "shift"), "distill_mode": ("kd", "mode"),
           "vkd_weight": ("kd", "vkd_weight"),
           "vkd_epochs": ("vkd", "epochs"), "vkd_transfer": ("vkd", "transfer"), "calib_samples": ("calib", "samples"), "calib_method": ("calib", "method")}


def overlay(cfg: ConvertConfig, given_opts: dict) -> ConvertConfig:
    """``cfg`` (a run's recorded config) with the options a stage command was given on top."""
    import copy

    c = copy.deepcopy(cfg)
    for k, v in given_opts.items():
        if k in _NESTED:
            part, name = _NESTED[k]
            setattr(getattr(c, part), name, v)
        elif k == "input_shape":
            c.input_shape = parse_input_shape(v)
        elif k == "int8_format":
            c.calib.formats = tuple(CANDIDATES) if v == "auto" else (v,)
        elif k == "targets":
            c.targets = tuple(v)
        else:
            setattr(c, _FIELDS.get(k, k), v)
    if "eval_data" in given_opts:
        c.eval_name = None
    return c


def given(ctx: click.Context, params: dict) -> dict:
    """The options typed on the command line (not click's defaults)."""
    from click.core import ParameterSource

    return {k: v for k, v in params.items() if ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE}
