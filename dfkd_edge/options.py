"""Every option a flow takes, once: its name (the Python keyword; the CLI's flag is the same with dashes), the
``ConvertConfig`` field it sets, its help, and the commands that take it. Defaults are not written here: they are
read from the stages' dataclasses (``ConvertConfig`` and the ``KDConfig``, ``VKDConfig`` and ``CalibConfig`` it
holds), so the CLI's option groups (dfkd_edge.cli_options) and the Python API's keywords (dfkd_edge.api) show
and use the defaults the stages have. :func:`config` and :func:`overlay` are the one mapping from options to a
config; :func:`parse_input_shape` reads a shape as the CLI and the API take it; :func:`in_python_words` turns a
message that names flags into one that names keyword arguments."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

from dfkd_edge.config import ConvertConfig, quantize_base
from dfkd_edge.distill.kd import DISTILL_MODES
from dfkd_edge.distill.vkd import VKD_TRANSFERS
from dfkd_edge.errors import UserError
from dfkd_edge.export.onnx_model import is_onnx
from dfkd_edge.export.quantize import CANDIDATES
from dfkd_edge.teacher_model import RANK_KIND

AUTO_FORMAT = "auto"


@dataclass(frozen=True)
class Option:
    name: str  # the Python keyword; the flag is ``--`` + name with dashes (``flag`` when it differs)
    field: str | None  # the ConvertConfig field it sets ("kd.epochs"); None: handled by the flow itself
    help: str = ""
    choices: tuple[str, ...] | None = None
    kind: type | None = None  # when the default (None) does not say: int, str
    path: bool = False  # a file or folder
    flag: str | None = None  # the CLI's spelling when it is not the name's
    multiple: bool = False  # repeatable on the CLI (a tuple)
    switch: bool = False  # --NAME/--no-NAME on the CLI
    is_flag: bool = False  # --NAME alone sets it
    required: bool = False

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")


def _opts(*options: Option) -> dict[str, Option]:
    return {o.name: o for o in options}


OPTIONS = _opts(
    Option("out", None, "Output directory.", path=True, required=True),
    Option("force", "force", "Overwrite an output directory holding an earlier run.", is_flag=True),
    Option("resume", "resume", "Finish an interrupted run in --out: skip stages whose config and inputs are "
           "unchanged.", is_flag=True),
    Option("input_shape", "input_shape", "Input shape without the batch dimension, e.g. 1,28,28 (when the file does "
           "not record it).", kind=str),
    Option("factory", "factory", "package.module:function building the model, when TEACHER is a state_dict.",
           kind=str),
    Option("input_range", "input_range", "LO,HI: the range of the teacher's inputs (e.g. 0,1 or 0,255), when known. "
           "Default: read from the teacher's first BatchNorm layer.", kind=str),
    Option("input_mean", "input_mean", "Per-channel (or per-feature) mean of the teacher's inputs, comma-separated "
           "(one value for all), when known; with --input-std.", kind=str),
    Option("input_std", "input_std", "Per-channel (or per-feature) standard deviation of the teacher's inputs.",
           kind=str),
    Option("targets", "targets", "Target device profile, by name (dfkd-edge targets list) or path to a .toml "
           "(repeatable). The host is always measured; other targets get their artifacts and estimated latency.",
           flag="--target", multiple=True),
    Option("method", "method", "Transfer-set synthesis: auto (= deepinversion), deepinversion, soft-target, "
           "adversarial, gaussian, reused-generator (Fast-DFKD-style: one generator carried across batches, "
           "--iterations steps on the first batch, a tenth of that on the others). Several teachers: auto (= "
           "deepinversion against their ensemble; cdfkd-mfs with --few-shot-data), deepinversion or cdfkd-mfs (one "
           "header per teacher, trained against a generator)."),
    Option("samples", "samples", "Transfer-set size (training part)."),
    Option("holdout", "holdout", "Synthetic samples held out for fidelity."),
    Option("iterations", "iterations", "Optimisation steps per synthesis batch."),
    Option("synth_batch", "synth_batch", "Synthesis batch size."),
    Option("synth_start", "synth_start", "Where the input-optimising methods (deepinversion, soft-target) start each "
           "sample: auto (dead-leaves for images, noise otherwise), dead-leaves (flat shapes laid over each other, "
           "images only), noise (the input domain's noise) or half (half of each batch each way, images only)."),
    Option("student", "student", "Student family: auto, conv2d, resnet, mbv2 (images), conv1d, mlp."),
    Option("student_factory", "student_factory", "Your own student: package.module:function, called with the input "
           "shape (without batch) and the number of classes, returning a torch.nn.Module (on PYTHONPATH).", kind=str),
    Option("max_latency_ms", "max_latency_ms", "Choose the student for a device: the family and width with the most "
           "multiply-accumulates whose int8 batch-1 p50 on --latency-on fits this many milliseconds (estimated; "
           "the run says so). Not --latency-budget, the seconds spent timing.", kind=float),
    Option("latency_on", "latency_on", "The target --max-latency-ms is held on (default: the first --target that "
           "is a device).", kind=str),
    Option("latency_remote", "latency_remote", "[user@]host (or a Host alias of your ssh config) of the device "
           "--latency-on names: each --max-latency-ms candidate is timed there over SSH (trtexec for a TensorRT "
           "target, the bundled ONNX Runtime runner otherwise) instead of estimated.", kind=str),
    Option("ssh_config", "ssh_config", "ssh config file for --latency-remote, passed as `ssh -F` (default: "
           "~/.ssh/config).", path=True),
    Option("remote_python", "remote_python", "--latency-remote: Python on the device with numpy and onnxruntime (ONNX "
           "Runtime targets)."),
    Option("trtexec", "trtexec", "--latency-remote: trtexec on the device (TensorRT targets)."),
    Option("width", "width", "Student width (default: chosen from the teacher's size).", kind=int),
    Option("epochs", "kd.epochs", "Distillation epochs."),
    Option("batch_size", "kd.batch_size", "Distillation batch size."),
    Option("temperature", "kd.temperature", "KD temperature."),
    Option("mixup", "kd.mixup", "Beta(a,a) online mixup during KD; 0 turns it off."),
    Option("shift", "kd.shift", "Images and signals, with online mixup: move each mixed input by up to 1/8 of its "
           "size (the teacher labels it).", switch=True),
    Option("distill_mode", "kd.mode", "Soft targets: kd (the teacher), vkd (a class-conditional virtual generator "
           "trained on the teacher's outputs over the transfer set; the teacher is not run while the student "
           "trains), kd+vkd (both, weighted by --vkd-weight).", choices=DISTILL_MODES, flag="--distill"),
    Option("vkd_weight", "kd.vkd_weight", "kd+vkd: the VKD term's share of the loss (0..1; KD gets the rest)."),
    Option("vkd_epochs", "vkd.epochs", "Epochs of virtual-generator training over the transfer set's logits."),
    Option("vkd_transfer", "vkd.transfer", "vkd or kd+vkd: the student's inputs: inverted (the transfer set the "
           "generator learned from) or virtual (a second set of --samples synthesized so that the teacher's outputs "
           "match the generator's draws; about one more synthesis' time; better on 3 of 5 zoo teachers, worse on "
           "1).", choices=VKD_TRANSFERS),
    Option("compare_kd", "compare_kd", "With vkd or kd+vkd: also distill a plain-KD student from the same transfer "
           "set and report both (about one more distillation's time).", switch=True),
    Option("few_shot_data", "few_shot_data", "Several teachers: a few labelled samples (.npz x, y; about 10 per "
           "class) to train the attention over the student's headers (default: their mean).", path=True),
    Option("calib_samples", "calib.samples", "Synthesized samples used for int8 calibration."),
    Option("calib_method", "calib.method", "How activation ranges are read from the calibration set.",
           choices=("minmax", "entropy", "percentile")),
    Option("int8_format", "calib.formats", "ONNX Runtime int8 format: auto builds each and keeps the fastest that "
           "agrees with fp32 on this machine; a name builds only that one (the same model wherever it is built).",
           choices=(AUTO_FORMAT, *CANDIDATES)),
    Option("eval_data", "eval_data", "Labelled .npz (x, y) to report accuracy on.", path=True),
    Option("calib_data", "calib_data", "Real inputs (.npz x; labels not needed) to calibrate a second int8 model on, "
           "for comparison only: what ships is calibrated on synthesized samples.", path=True),
    Option("source", None, "MODEL is an ONNX file: the same network in PyTorch (TorchScript, .pt2, or a state_dict "
           "with --factory), which the calibration set is synthesized from (without it, from the ONNX graph run in "
           "PyTorch: BatchNorm folded into convolutions gives nothing to invert). The ONNX file itself is what gets "
           "calibrated.", path=True),
    Option("seed", "seed", "Seed for everything random."),
    Option("threads", "threads", "Threads for training and latency (0: min(4, cores); under torchrun, for synthesis "
           "and distillation: cores / processes on the node)."),
    Option("device", "device", "Where synthesis and distillation run (auto: CUDA when PyTorch sees a GPU). Under "
           "torchrun each rank takes the GPU of its LOCAL_RANK.", choices=("auto", "cpu", "cuda")),
    Option("precision", "precision", "Autocast for synthesis and distillation (auto: bf16 on a GPU that has it, else "
           "fp16; fp32 on the CPU). Exported models are fp32 either way.", choices=("auto", "fp32", "bf16", "fp16")),
    Option("channels_last", "channels_last", "NHWC memory format for image teachers and students (auto: on a GPU).",
           choices=("auto", "on", "off")),
    Option("compile", "compile", "torch.compile the student's training forward (auto: on a GPU; falls back to eager "
           "if compilation fails).", choices=("auto", "on", "off")),
    Option("latency_budget", "latency_budget_s", "Seconds of timed runs per engine and batch size (more: steadier "
           "latency figures)."),
    Option("time_budget", "time_budget", "The whole run's time on this machine, e.g. 20m, 1h30m, 900s: synthesis "
           "steps, then distillation epochs, then samples are cut (each to its floor) until the plan fits, and the "
           "int8 guardrail keeps its one-pass ranking where scoring layers one by one would pass it; the plan "
           "and the report say what was chosen. off: none.", kind=str),
)

#: quantize's own wording where its meaning differs from convert's
QUANTIZE_HELP = {
    "method": "How the calibration set is synthesized from the model: auto (= deepinversion), deepinversion, "
              "soft-target or gaussian (the input domain's noise).",
    "iterations": "Optimisation steps per synthesis batch (convert's 200 calibrated no better on the zoo's 16 "
                  "teachers, 3 seeds: docs/benchmarks.md; synthesis is most of quantize's time).",
    "time_budget": "The whole run's time on this machine, e.g. 20m, 1h30m, 900s, or off (the defaults in full): "
                   "synthesis steps, then calibration samples, then check samples are cut (each to its floor) until "
                   "the plan fits, and the int8 guardrail keeps its one-pass ranking where scoring layers one by "
                   "one would pass it; the plan and the report say what was chosen.",
}

_TEACHER = ("input_shape", "factory", "input_range", "input_mean", "input_std")
_SYNTH = ("method", "samples", "holdout", "iterations", "synth_batch", "synth_start")
_STUDENT = ("student", "width", "student_factory", "max_latency_ms", "latency_on", "latency_remote", "ssh_config",
            "remote_python", "trtexec", "epochs", "batch_size",
            "temperature", "mixup", "shift", "distill_mode", "vkd_weight",
            "vkd_epochs", "vkd_transfer", "compare_kd", "few_shot_data")
_CALIB = ("calib_samples", "calib_method", "int8_format")
_COMPUTE = ("device", "precision", "channels_last", "compile")

#: each command's options, in the order its --help lists them
COMMANDS = {
    "convert": ("out", *_TEACHER, "targets", *_SYNTH, *_STUDENT, *_CALIB, "eval_data", "seed", "threads", *_COMPUTE,
                "latency_budget", "time_budget", "force", "resume"),
    "quantize": ("out", "source", *_TEACHER, "targets", "method", "holdout", "iterations", "synth_batch",
                 "synth_start", *_CALIB, "eval_data", "calib_data", "seed", "threads", "device", "precision",
                 "latency_budget", "time_budget", "force", "resume"),
    "synthesize": ("out", *_TEACHER, *_SYNTH, *_STUDENT, "eval_data", "seed", "threads", *_COMPUTE, "force",
                   "resume"),
    "distill": (*_STUDENT, "threads", *_COMPUTE),
    "export": ("threads",),
    "calibrate": (*_CALIB, "eval_data", "threads"),
    "build": ("targets", "threads"),
    "report": ("targets", "eval_data", "latency_budget", "threads"),
}
#: the demo: convert on the built-in digits teacher with these in place of convert's defaults (half the samples:
#: the demo finishes in under 3 minutes on 2 cores)
DEMO = {"samples": 2048, "targets": ("host-cpu", "jetson-orin-nano")}


def base(command: str) -> ConvertConfig:
    """The config a command starts from when no option is given."""
    return quantize_base() if command == "quantize" else ConvertConfig(teacher="", out="")


def _get(cfg: ConvertConfig, option: Option):
    if option.field is None:
        return False if option.is_flag else None
    value = cfg
    for part in option.field.split("."):
        value = getattr(value, part)
    if option.name == "int8_format":
        return AUTO_FORMAT if tuple(value) == tuple(CANDIDATES) else value[0]
    return value


def defaults(command: str) -> dict:
    """A command's options as they are when none is given (read from the stages' dataclasses)."""
    cfg = base(command)
    return {name: _get(cfg, OPTIONS[name]) for name in COMMANDS[command] if name != "out"}


def help_text(command: str, name: str) -> str:
    return (QUANTIZE_HELP if command == "quantize" else {}).get(name, OPTIONS[name].help)


def _set(cfg: ConvertConfig, option: Option, value) -> None:
    if option.name == "input_shape":
        value = parse_input_shape(value) if isinstance(value, str) or value is None else tuple(int(d) for d in value)
    elif option.name == "targets":
        value = (value,) if isinstance(value, str) else tuple(value)
    elif option.name == "int8_format":
        value = tuple(CANDIDATES) if value == AUTO_FORMAT else (value,)
    *path, last = option.field.split(".")
    target = cfg
    for part in path:
        target = getattr(target, part)
    setattr(target, last, value)


def overlay(cfg: ConvertConfig, given: dict) -> ConvertConfig:
    """``cfg`` (a run's recorded config, or a command's base) with the options ``given`` on top."""
    c = copy.deepcopy(cfg)
    for name, value in given.items():
        option = OPTIONS[name]
        if option.field is not None:
            _set(c, option, value)
    if "eval_data" in given:
        c.eval_name = None
    return c


def config(command: str, teachers, given: dict) -> ConvertConfig:
    """The config of ``convert``, ``synthesize`` or ``quantize`` on ``teachers`` (a path or several) with the
    options ``given`` (``out`` among them); the rest keep their defaults."""
    teachers = [teachers] if isinstance(teachers, str) else [str(t) for t in teachers]
    c = base(command)
    c.teacher, c.more_teachers, c.out = teachers[0], tuple(teachers[1:]), str(given["out"])
    c = overlay(c, {k: v for k, v in given.items() if k != "out"})
    if command == "quantize":
        c.samples = c.calib.samples  # the synthesized set is the calibration set
        source = given.get("source")
        if is_onnx(c.teacher):  # calibrated as it is; synthesized from --source, else from the graph in PyTorch
            c.onnx_model, c.teacher = c.teacher, str(source or c.teacher)
        elif source:
            raise UserError(f"--source names the PyTorch network of an ONNX MODEL, and {c.teacher} is not an ONNX "
                            "file; leave --source out")
    return c


def in_python_words(message: str) -> str:
    """``message`` with each option's flag replaced by its keyword argument (``--synth-batch`` -> ``synth_batch``,
    ``--no-shift`` -> ``shift=False``), for callers of the Python API."""
    words = {}
    for o in OPTIONS.values():
        words[o.cli_flag] = o.name
        if o.switch:
            words["--no-" + o.name.replace("_", "-")] = f"{o.name}=False"
    pattern = "|".join(re.escape(f) for f in sorted(words, key=len, reverse=True))
    return re.sub(rf"({pattern})(?![\w-])", lambda m: words[m.group(1)], message)


def parse_input_shape(text: str | None) -> tuple[int, ...] | None:
    """'1,8,8' / '1x8x8' / '30' -> tuple, without the batch dimension."""
    if text is None or str(text).strip() == "":
        return None
    parts = str(text).replace("x", ",").replace(" ", "").strip("()[]").split(",")
    try:
        dims = tuple(int(p) for p in parts if p != "")
    except ValueError:
        raise UserError(
            f"--input-shape {text!r} is not a list of integers; give it without the batch "
            "dimension, e.g. 30 (vectors), 1,40 (signals) or 1,8,8 (images)") from None
    if not dims or any(d <= 0 for d in dims):
        raise UserError(f"--input-shape {text!r} must hold positive integers, e.g. 1,8,8")
    if len(dims) not in RANK_KIND:
        raise UserError(
            f"--input-shape {text!r} has {len(dims)} dimensions; supported are 1 (F), 2 (C,L) "
            "or 3 (C,H,W), without the batch dimension")
    return dims
