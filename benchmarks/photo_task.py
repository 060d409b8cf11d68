"""A reference model trained at real size: MobileNetV2 (benchmarks/refmodels.py, 22 classes) at 128x128 on crops of
real photographs, so that fp32 / int8 / real-calibration accuracy can be compared at a size users ship.

The task (``make``): scikit-learn's two sample photographs (a temple, a flower; 427x640) and matplotlib's portrait
(600x512), each cut into a grid of regions (3x3, 3x3, 2x2: 22 classes); a sample is a square crop of 48-160
pixels at a random place inside its region, resized to 128x128, mirrored half the time, its brightness x
U(0.75, 1.25) and each channel x U(0.92, 1.08), pixel noise 0.02, then ImageNet's z-score. Neighbouring regions
share content (sky, foliage, petals, skin), so the task is not trivial. 12,000 samples: 10,000 to train, 2,000 to
test, kept as bytes.

``python benchmarks/photo_task.py`` trains once (AdamW, cosine, ``--epochs``) and writes under
``benchmarks/.refmodels/photo22/``: the model as TorchScript (``mobilenet_v2-22.pt``), ``torch.export``
(``.pt2``) and state_dict (``.sd.pt``, ``--factory refmodels:mobilenet_v2`` needs ``classes=22``: use the
TorchScript), ``test.npz`` / ``calib.npz`` (x, y: the test split; 512 training samples as real calibration
data) and ``photo22.json`` (accuracy, the recipe, the seconds it took, the commit).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import refmodels  # noqa: E402
import zoo  # noqa: E402
from dfkd_edge.allocator import keep_freed_memory  # noqa: E402

GRID = ((0, 3, 3), (1, 3, 3), (2, 2, 2))
SIZE = 128
OUT = Path(__file__).resolve().parent / ".refmodels" / "photo22"


def regions() -> list[tuple[int, int, int, int, int]]:
    imgs = zoo._photographs()
    out = []
    for k, rows, cols in GRID:
        h, w = imgs[k].shape[1:]
        out += [(k, i * h // rows, (i + 1) * h // rows, j * w // cols, (j + 1) * w // cols)
                for i in range(rows) for j in range(cols)]
    return out


def make(n: int = 12000, size: int = SIZE, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(x uint8 (n, 3, size, size), y int64): the crops as bytes (ImageNet's z-score applied by ``to_input``)."""
    rng = np.random.default_rng(seed)
    imgs = [torch.from_numpy(i) for i in zoo._photographs()]
    regs = regions()
    y = rng.integers(0, len(regs), n)
    x = np.empty((n, 3, size, size), np.uint8)
    for i in range(n):
        k, y0, y1, x0, x1 = regs[y[i]]
        side = min(int(rng.uniform(48, 160)), y1 - y0, x1 - x0)
        top, left = rng.integers(y0, y1 - side + 1), rng.integers(x0, x1 - side + 1)
        crop = F.interpolate(imgs[k][None, :, top:top + side, left:left + side], size=(size, size),
                             mode="bilinear", antialias=True, align_corners=False)[0].numpy()
        if rng.uniform() < 0.5:
            crop = crop[:, :, ::-1]
        gain = rng.uniform(0.75, 1.25) * rng.uniform(0.92, 1.08, 3)
        img = np.clip(crop * gain[:, None, None] + rng.normal(0, 0.02, crop.shape), 0, 1)
        x[i] = np.round(img * 255).astype(np.uint8)
    return x, y.astype(np.int64)


def to_input(x: np.ndarray) -> np.ndarray:
    mean, std = zoo.IMAGENET
    return ((x.astype(np.float32) / 255 - mean[:, None, None]) / std[:, None, None]).astype(np.float32)


def code_commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).parent, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def accuracy(model, x: np.ndarray, y: np.ndarray, batch: int = 100) -> float:
    model.eval()
    hits = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            hits += int((model(torch.from_numpy(to_input(x[i:i + batch]))).argmax(1).numpy() == y[i:i + batch]).sum())
    return hits / len(x)


def train(epochs: int, batch: int, lr: float, seed: int, n_train: int) -> dict:
    OUT.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    x, y = make(n_train + 2000, seed=seed)
    x_tr, y_tr, x_te, y_te = x[:n_train], y[:n_train], x[n_train:], y[n_train:]
    torch.manual_seed(seed)
    model = refmodels.init_weights(refmodels.mobilenet_v2(len(regions())), seed)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.05)
    steps = epochs * math.ceil(n_train / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.15)
    rng = np.random.default_rng(seed)
    orders = [rng.permutation(n_train) for _ in range(epochs)]
    history = []
    recipe = {"epochs": epochs, "batch": batch, "lr": lr, "seed": seed, "n_train": n_train}
    ckpt = OUT / "train.ckpt"
    if ckpt.is_file():  # an interrupted training goes on from its last finished epoch
        state = torch.load(ckpt, weights_only=False)
        if state["recipe"] == recipe:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["opt"])
            sched.load_state_dict(state["sched"])
            history = state["history"]
            t0 -= history[-1]["seconds"] if history else 0.0
            print(f"resumed after epoch {len(history)}", flush=True)
    for ep in range(len(history), epochs):
        model.train()
        order = orders[ep]
        loss_sum = 0.0
        for i in range(0, n_train, batch):
            idx = order[i:i + batch]
            xb = torch.from_numpy(to_input(x_tr[idx]))
            loss = F.cross_entropy(model(xb), torch.from_numpy(y_tr[idx]), label_smoothing=0.1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss) * len(idx)
        acc = accuracy(model, x_te, y_te)
        history.append({"epoch": ep + 1, "loss": round(loss_sum / n_train, 4), "test_accuracy": round(acc, 4),
                        "seconds": round(time.perf_counter() - t0, 1)})
        print(json.dumps(history[-1]), flush=True)
        torch.save({"recipe": recipe, "model": model.state_dict(), "opt": opt.state_dict(),
                    "sched": sched.state_dict(), "history": history}, ckpt.with_suffix(".tmp"))
        ckpt.with_suffix(".tmp").replace(ckpt)
    model.eval()
    ex = torch.zeros(2, 3, SIZE, SIZE)
    torch.jit.save(torch.jit.trace(model, ex[:1]), str(OUT / "mobilenet_v2-22.pt"))
    dim = {0: torch.export.Dim("batch", min=1, max=4096)}
    torch.export.save(torch.export.export(model, (ex,), dynamic_shapes=(dim,)), str(OUT / "mobilenet_v2-22.pt2"))
    torch.save(model.state_dict(), str(OUT / "mobilenet_v2-22.sd.pt"))
    np.savez(OUT / "test.npz", x=to_input(x_te), y=y_te)
    pick = np.random.default_rng(seed + 1).choice(n_train, 512, replace=False)
    np.savez(OUT / "calib.npz", x=to_input(x_tr[pick]), y=y_tr[pick])
    doc = {"model": "mobilenet_v2", "classes": len(regions()), "input_shape": [3, SIZE, SIZE],
           "parameters": refmodels.parameters(model), "train_samples": n_train, "test_samples": len(y_te),
           "epochs": epochs, "batch": batch, "lr": lr, "seed": seed, "test_accuracy": history[-1]["test_accuracy"],
           "history": history, "train_s": round(time.perf_counter() - t0, 1), "commit": code_commit(),
           "threads": torch.get_num_threads()}
    (OUT / "photo22.json").write_text(json.dumps(doc, indent=1))
    return doc


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--train-samples", type=int, default=10000)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    keep_freed_memory()  # as the CLI does: 1.6x faster training steps at this size
    doc = train(a.epochs, a.batch, a.lr, a.seed, a.train_samples)
    print(json.dumps({k: v for k, v in doc.items() if k != "history"}))


if __name__ == "__main__":
    main()
