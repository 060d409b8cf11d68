"""Small teachers of other input ranks, trained in seconds, for tests and benchmarks.

* signals (N, 1, 40): four classes of waveform (sine, square, sawtooth, triangle) with random
  frequency (1-4 cycles), phase and amplitude, plus Gaussian noise (sigma 0.3); seeded.
* vectors (N, 30): scikit-learn's bundled breast-cancer data (569 x 30, 2 classes),
  standardised with the training split's mean/std; split 0.25 stratified, random_state 0.

``python -m dfkd_edge.data.toy --out DIR`` writes both teachers (TorchScript, input shape not
recorded, as a user's own file would be) and their test splits as eval-data .npz files.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch
from torch import nn


def signal_dataset(n: int, length: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    t = np.linspace(0, 1, length, endpoint=False)[None, :]
    f = rng.uniform(1, 4, (n, 1))
    ph = rng.uniform(0, 1, (n, 1))
    a = rng.uniform(0.7, 1.3, (n, 1))
    u = (f * t + ph) % 1.0
    waves = np.stack([np.sin(2 * np.pi * u), np.sign(np.sin(2 * np.pi * u)), 2 * u - 1, 1 - 4 * np.abs(u - 0.5)])
    x = a * waves[y, np.arange(n)] + rng.normal(0, 0.3, (n, length))
    return x[:, None, :].astype(np.float32), y.astype(np.int64)


def vector_dataset() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    d = load_breast_cancer()
    x_tr, x_te, y_tr, y_te = train_test_split(d.data, d.target, test_size=0.25, random_state=0, stratify=d.target)
    mu, sd = x_tr.mean(0), x_tr.std(0) + 1e-8
    f = lambda v: ((v - mu) / sd).astype(np.float32)  # noqa: E731
    return f(x_tr), y_tr.astype(np.int64), f(x_te), y_te.astype(np.int64)


class SignalCNN(nn.Module):
    def __init__(self, classes: int = 4, width: int = 32):
        super().__init__()

        def block(cin, cout, stride=1):
            return [nn.Conv1d(cin, cout, 5, stride=stride, padding=2, bias=False), nn.BatchNorm1d(cout), nn.ReLU()]

        self.features = nn.Sequential(*block(1, width), *block(width, 2 * width, 2), *block(2 * width, 2 * width, 2),
                                      nn.AdaptiveAvgPool1d(1), nn.Flatten())
        self.classifier = nn.Linear(2 * width, classes)

    def forward(self, x):
        return self.classifier(self.features(x))


class VectorMLP(nn.Module):
    def __init__(self, features: int = 30, classes: int = 2, hidden: int = 128):
        super().__init__()
        self.features = nn.Sequential(nn.Linear(features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                                      nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU())
        self.classifier = nn.Linear(hidden, classes)

    def forward(self, x):
        return self.classifier(self.features(x))


def fit(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, seed: int = 0, lr: float = 3e-3) -> nn.Module:
    torch.manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 64):
            idx = perm[i:i + 64]
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def train_signal_teacher(seed: int = 0, epochs: int = 25):
    x_tr, y_tr = signal_dataset(2000, seed=seed)
    x_te, y_te = signal_dataset(500, seed=seed + 1000)
    torch.manual_seed(seed)  # the initial weights too, not only the training order
    m = fit(SignalCNN(), x_tr, y_tr, epochs, seed)
    return m, (x_te, y_te), accuracy(m, x_te, y_te)


def train_vector_teacher(seed: int = 0, epochs: int = 40):
    x_tr, y_tr, x_te, y_te = vector_dataset()
    torch.manual_seed(seed)
    m = fit(VectorMLP(), x_tr, y_tr, epochs, seed)
    return m, (x_te, y_te), accuracy(m, x_te, y_te)


def write_teachers(out: str | Path, seed: int = 0) -> dict:
    """TorchScript teachers without recorded input shapes, plus eval .npz files; returns paths and accuracies."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    res = {}
    for name, train in (("signal", train_signal_teacher), ("vector", train_vector_teacher)):
        m, (x, y), acc = train(seed)
        torch.jit.save(torch.jit.script(m), str(out / f"{name}_teacher.pt"))
        np.savez(out / f"{name}_test.npz", x=x, y=y)
        res[name] = {"teacher": str(out / f"{name}_teacher.pt"), "eval": str(out / f"{name}_test.npz"), "accuracy": acc}
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description="Write the 1-D-signal and feature-vector toy teachers.")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    for name, r in write_teachers(a.out, a.seed).items():
        print(f"{name}: {r['teacher']} (test accuracy {r['accuracy']:.4f}), eval data {r['eval']}")


if __name__ == "__main__":
    main()
