"""scikit-learn's bundled digits: the one real data set available offline.

Split and preprocessing (fixed, so every figure in the docs is reproducible):

* ``sklearn.datasets.load_digits()``: 1797 images of 8x8 pixels with values 0..16.
* ``train_test_split(test_size=0.25, random_state=0, stratify=y)``: 1347 train, 450 test.
* ``x = (pixels / 16 - 0.5) / 0.5`` -> values in [-1, 1], shape (N, 1, 8, 8), float32.

The demo teacher is reproduced with ``python -m dfkd_edge.data.digits --out dfkd_edge/data/digits_teacher.pt``.
"""

from __future__ import annotations

import argparse
import logging
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dfkd_edge.models.teachers import DigitsCNN
from dfkd_edge.teacher import save_torchscript

log = logging.getLogger(__name__)

INPUT_SHAPE = (1, 8, 8)
TEACHER_FILE = "digits_teacher.pt"


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x_train, y_train, x_test, y_test), preprocessed as documented above."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = ((d.images.astype(np.float32) / 16.0 - 0.5) / 0.5)[:, None, :, :]
    y = d.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(x, y, test_size=0.25, random_state=0, stratify=y)
    return x_tr, y_tr, x_te, y_te


def write_test_npz(path: str | Path) -> Path:
    """The digits test split in the eval-data format (``x``, ``y``)."""
    _, _, x_te, y_te = load_split()
    path = Path(path)
    np.savez(path, x=x_te, y=y_te)
    return path


def builtin_teacher_path() -> Path:
    return Path(str(resources.files("dfkd_edge.data").joinpath(TEACHER_FILE)))


def _shift(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random +-1 pixel translation (zero-padded with the background value -1)."""
    n = x.shape[0]
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), value=-1.0)
    dx = torch.randint(0, 3, (n,), generator=gen)
    dy = torch.randint(0, 3, (n,), generator=gen)
    return torch.stack([padded[i, :, dy[i]:dy[i] + 8, dx[i]:dx[i] + 8] for i in range(n)])


def train_teacher(epochs: int = 60, seed: int = 0, width: int = 32, model: nn.Module | None = None
                  ) -> tuple[nn.Module, float]:
    """Train the demo DigitsCNN (or ``model``) on the train split; returns (model, test accuracy)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    x_tr, y_tr, x_te, y_te = load_split()
    xt, yt = torch.from_numpy(x_tr), torch.from_numpy(y_tr)
    model = model if model is not None else DigitsCNN(width=width)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=epochs * ((len(xt) + 63) // 64))
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), 64):
            idx = perm[i:i + 64]
            xb = _shift(xt[idx], gen)
            loss = nn.functional.cross_entropy(model(xb), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        acc = (model(torch.from_numpy(x_te)).argmax(1).numpy() == y_te).mean()
    return model, float(acc)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Train and save the built-in digits teacher (TorchScript).")
    ap.add_argument("--out", default=str(Path(__file__).with_name(TEACHER_FILE)))
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    model, acc = train_teacher(a.epochs, a.seed)
    save_torchscript(model, a.out, INPUT_SHAPE, dataset="sklearn-digits", test_accuracy=round(acc, 4))
    print(f"saved {a.out}: test accuracy {acc:.4f}")


if __name__ == "__main__":
    main()
