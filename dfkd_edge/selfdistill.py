"""``dfkd-edge selfdistill``: train a model on labelled data with its own virtual generator.

The model is a zoo family (``conv2d``, ``conv1d``, ``mlp``, ``auto``: built fresh for the data's
shape) or a model file in any teacher format but ``.pt2`` (TorchScript, or a state_dict with
``--factory``: training continues from its weights). Training: dfkd_edge.distill.vkd.self_distill;
with ``compare_ce`` the same model from the same weights is also trained with cross-entropy alone
(same optimiser, batches and seed) and both are measured on the validation data.

Writes ``model.pt`` (TorchScript with the input shape embedded: ``dfkd-edge convert`` takes it as
a teacher), ``virtual_generator.pt`` and ``selfdistill.json``. Files are written at the end,
atomically: an interrupted run leaves the directory as it was.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dfkd_edge.data.evaldata import load_eval_data
from dfkd_edge.distill.vkd import SelfDistillConfig, generator_fidelity, save_virtual_generator, self_distill, train_ce
from dfkd_edge.errors import UserError
from dfkd_edge.io import atomic_path, atomic_write_json
from dfkd_edge.models import create_model
from dfkd_edge.models.students import STUDENT_FAMILIES, count_params
from dfkd_edge.progress import NullProgress, Progress
from dfkd_edge.runner import prepare_out_dir
from dfkd_edge.teacher import load_teacher, save_torchscript

log = logging.getLogger(__name__)

MODEL_PT, GENERATOR_PT, RESULT_JSON = "model.pt", "virtual_generator.pt", "selfdistill.json"
ZOO = ("auto", *sorted(STUDENT_FAMILIES.values()))


@dataclass
class SelfDistillJob:
    model: str
    data: str
    out: str
    factory: str | None = None
    input_shape: tuple[int, ...] | None = None
    width: int | None = None
    eval_data: str | None = None
    val_fraction: float = 0.1
    compare_ce: bool = True
    threads: int = 0
    force: bool = False
    train: SelfDistillConfig = field(default_factory=SelfDistillConfig)


def _peek(path: str) -> tuple[tuple[int, ...], int]:
    """(input shape, classes) of a labelled .npz, for models built from the zoo."""
    try:
        with np.load(path, allow_pickle=False) as z:
            shape, k = tuple(int(d) for d in z["x"].shape[1:]), int(np.max(z["y"])) + 1
    except Exception:  # noqa: BLE001 - load_eval_data below says what is wrong, in one line
        shape, k = None, None
    if shape is None or k is None:
        load_eval_data(path, (), 1)
        raise UserError(f"{path} is not a labelled .npz (x, y)")
    return shape, k


def _build(job: SelfDistillJob) -> tuple[callable, tuple[int, ...], int, str]:
    """A function making the model (fresh, identical weights each call), its input shape, classes, kind."""
    if job.model in ZOO:
        shape, k = _peek(job.data)
        family = STUDENT_FAMILIES.get(len(shape)) if job.model == "auto" else job.model
        if family is None or STUDENT_FAMILIES.get(len(shape)) != family:
            raise UserError(f"model {job.model} does not take inputs of shape {shape}; use "
                            f"{STUDENT_FAMILIES.get(len(shape), 'a model file')} or auto")
        kw = {"width": job.width} if job.width else {}

        def make() -> nn.Module:
            torch.manual_seed(job.train.seed)
            return create_model(family, input_shape=shape, num_classes=k, **kw)

        return make, shape, k, f"zoo:{family}"
    if job.width:
        raise UserError("--width applies to zoo models (auto, conv2d, conv1d, mlp), not to a model file")
    first = load_teacher(job.model, job.input_shape, job.factory)
    if first.spec.format == "exported-program":
        raise UserError(f"{Path(job.model).name} is a torch.export program, which cannot be trained here; give "
                        "a TorchScript file or a state_dict with --factory")

    def make() -> nn.Module:
        m = load_teacher(job.model, job.input_shape, job.factory).runtime
        for p in m.parameters():
            p.requires_grad_(True)
        return m

    return make, first.spec.input_shape, first.spec.num_classes, first.spec.format


def _split(x: np.ndarray, y: np.ndarray, fraction: float, seed: int):
    if not 0.0 < fraction < 0.9:
        raise UserError(f"--val-fraction must lie in (0, 0.9), got {fraction}")
    idx = np.random.default_rng(seed).permutation(len(x))
    n_val = max(1, int(round(fraction * len(x))))
    if len(x) - n_val < 2:
        raise UserError(f"{len(x)} labelled samples are too few to hold {n_val} out for validation")
    return (x[idx[n_val:]], y[idx[n_val:]]), (x[idx[:n_val]], y[idx[:n_val]])


@torch.no_grad()
def _logits(m: nn.Module, x: np.ndarray) -> np.ndarray:
    m.eval()
    return torch.cat([m(torch.from_numpy(x[i:i + 512])) for i in range(0, len(x), 512)]).numpy()


def run_selfdistill(job: SelfDistillJob, progress: Progress | None = None) -> dict:
    progress = progress or NullProgress()
    out = Path(job.out)
    prepare_out_dir(out, job.force, marker=RESULT_JSON)
    if job.threads:
        torch.set_num_threads(job.threads)
    make, shape, k, kind = _build(job)
    x, y = load_eval_data(job.data, shape, k)
    if job.eval_data:
        (x_tr, y_tr), (x_val, y_val), val_name = (x, y), load_eval_data(job.eval_data, shape, k), Path(job.eval_data).name
    else:
        (x_tr, y_tr), (x_val, y_val) = _split(x, y, job.val_fraction, job.train.seed)
        val_name = f"{len(y_val)} held out of {Path(job.data).name} (--val-fraction {job.val_fraction:g})"
    t0 = time.perf_counter()
    model = make()
    history, peer = self_distill(model, x_tr, y_tr, job.train, progress)
    seconds = time.perf_counter() - t0
    acc = float((_logits(model, x_val).argmax(1) == y_val).mean())
    result = {"model": job.model, "model_kind": kind, "data": job.data, "input_shape": list(shape), "classes": k,
              "parameters": count_params(model), "train_samples": int(len(y_tr)), "validation": val_name,
              "validation_samples": int(len(y_val)), "config": job.train.to_dict(),
              "accuracy": {"selfdistill_vkd": acc, "cross_entropy": None},
              "generator_fidelity": generator_fidelity(peer.generator, _logits(model, x_val), _logits(model, x_tr),
                                                       seed=job.train.seed),
              "history": history, "seconds": {"selfdistill_vkd": round(seconds, 3)},
              "files": [MODEL_PT, GENERATOR_PT, RESULT_JSON]}
    if job.compare_ce:
        t0 = time.perf_counter()
        baseline = make()
        train_ce(baseline, x_tr, y_tr, job.train, progress)
        result["accuracy"]["cross_entropy"] = float((_logits(baseline, x_val).argmax(1) == y_val).mean())
        result["seconds"]["cross_entropy"] = round(time.perf_counter() - t0, 3)
    with atomic_path(out / MODEL_PT) as tmp:
        save_torchscript(model.eval(), tmp, shape, trained_by="dfkd-edge selfdistill (VKD)")
    save_virtual_generator(out / GENERATOR_PT, peer.generator)
    atomic_write_json(out / RESULT_JSON, result)
    return result


__all__ = ["SelfDistillJob", "run_selfdistill", "ZOO"]
