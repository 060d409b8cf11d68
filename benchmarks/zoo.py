"""The benchmark teacher zoo: teachers this project's methods were not written against.

``python benchmarks/zoo.py [--cache DIR]`` trains every entry (minutes on 2 CPU cores), saves each
teacher in its format with its test split as eval data (``x``, ``y``), and prints a table. Teachers
are cached under ``--cache`` (default ``benchmarks/.zoo``): a second call loads them.

Spans (see ENTRIES): input domains [0, 1], [-1, 1], per-channel z-scores, raw 0-255 bytes, sensor
volts around an offset, unscaled tabular features (magnitudes 0.001 to 1,000s, BatchNorm first);
architectures nn.Sequential + MaxPool, residual, depthwise-separable (ReLU6, hard-swish), MLPs, one
CNN without BatchNorm; ranks vector, 1-D, 2-D; 2 to 10 classes; TorchScript, torch.export (.pt2)
and state_dict + factory. Data: scikit-learn's bundled sets (digits, wine, breast cancer,
make_classification) and procedural sets generated here (colour shapes 3x12x12; a 10-class 1-D
signal set, 1x64, on which a small 1-D CNN lands between 90 and 98%). MULTI lists the
multi-teacher sets (three architectures of one task).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import zoo_models as zm  # noqa: E402

DEFAULT_CACHE = HERE / ".zoo"


# ----------------------------------------------------------------------------- data

def _split(x, y, seed=0, test=0.25):
    from sklearn.model_selection import train_test_split

    return train_test_split(x, y, test_size=test, random_state=seed, stratify=y)


def digits(domain: str):
    """8x8 digits (pixel values 0..16) in one of several input domains; image or flat vector."""
    from sklearn.datasets import load_digits

    d = load_digits()
    raw = d.images.astype(np.float32)[:, None]  # 0..16
    x_tr, x_te, y_tr, y_te = _split(raw, d.target.astype(np.int64))
    f = {"01": lambda v: v / 16, "pm1": lambda v: v / 8 - 1, "255": lambda v: np.round(v * 255 / 16),
         "z": lambda v: (v / 16 - 0.3) / 0.38, "vec16": lambda v: v.reshape(len(v), -1)}[domain]
    return f(x_tr).astype(np.float32), y_tr, f(x_te).astype(np.float32), y_te


def shapes(domain: str, n: int = 6000, size: int = 12, seed: int = 0, noise: float = 0.08, contrast: float = 0.6,
           scale: float = 1.0):
    """Procedural 3xSxS colour images, 6 classes: disc, square, triangle, ring, horizontal bar, cross;
    random position, size, foreground and background colour, pixel noise. [0, 1], per-channel z or raw
    0-255 bytes (``255``). Sizes and strokes scale with S (drawn as at S = 12, times ``scale``); ``noise``
    is the pixel noise's std, ``contrast`` the least summed colour difference of shape and background."""
    rng = np.random.default_rng(seed)
    k_ = size / 12 * scale
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    y = rng.integers(0, 6, n)
    x = np.empty((n, 3, size, size), np.float32)
    for i in range(n):
        cy, cx = rng.uniform(3.5 * k_, size - 4.5 * k_, 2)
        r = rng.uniform(2.2, 3.6) * k_
        dy, dx = yy - cy, xx - cx
        k = y[i]
        if k == 0:
            m = dy ** 2 + dx ** 2 <= r ** 2
        elif k == 1:
            m = (np.abs(dy) <= r * 0.8) & (np.abs(dx) <= r * 0.8)
        elif k == 2:
            m = (dy >= -r) & (dy <= r) & (np.abs(dx) <= (dy + r) / 2)
        elif k == 3:
            d2 = dy ** 2 + dx ** 2
            m = (d2 <= r ** 2) & (d2 >= (r - 1.3 * k_) ** 2)
        elif k == 4:
            m = (np.abs(dy) <= 1.0 * k_) & (np.abs(dx) <= r)
        else:
            m = ((np.abs(dy) <= 0.8 * k_) & (np.abs(dx) <= r)) | ((np.abs(dx) <= 0.8 * k_) & (np.abs(dy) <= r))
        fg, bg = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
        while np.abs(fg - bg).sum() < contrast:
            fg, bg = rng.uniform(0, 1, 3), rng.uniform(0, 1, 3)
        img = np.where(m[None], fg[:, None, None], bg[:, None, None]) + rng.normal(0, noise, (3, size, size))
        x[i] = np.clip(img, 0, 1)
    if domain == "z":
        mean, std = np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32)
        x = (x - mean[:, None, None]) / std[:, None, None]
    elif domain == "255":
        x = np.round(x * 255)
    x_tr, x_te, y_tr, y_te = _split(x, y.astype(np.int64))
    return x_tr, y_tr, x_te, y_te


def shapes32(domain: str):
    """The shapes at 32x32, smaller, fainter and noisier (the deeper models' task: at 12x12's settings
    they score 100%)."""
    return shapes(domain, size=32, noise=0.25, contrast=0.4, scale=0.8)


def _photographs() -> list[np.ndarray]:
    """The real photographs a machine has without downloading anything: scikit-learn's two sample images
    (a temple in China, a flower; 427x640) and matplotlib's portrait of Grace Hopper (600x512); (3, H, W)
    floats in [0, 1]. Both packages are dependencies of dfkd-edge."""
    import matplotlib
    import matplotlib.image as mpimg
    from sklearn.datasets import load_sample_images

    imgs = list(load_sample_images().images)
    imgs.append(mpimg.imread(str(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg")))
    return [np.ascontiguousarray(np.asarray(i, np.float32).transpose(2, 0, 1) / 255) for i in imgs]


#: the photographs' regions, one class each: (photograph, rows, columns) of a grid (temple 2x2, flower 2x2,
#: portrait top and bottom)
PHOTO_GRID = ((0, 2, 2), (1, 2, 2), (2, 2, 1))
#: ImageNet's per-channel mean and std: the z-score most photograph models are trained with
IMAGENET = (np.array([0.485, 0.456, 0.406], np.float32), np.array([0.229, 0.224, 0.225], np.float32))


def photos(domain: str, n: int = 6000, size: int = 32, seed: int = 0):
    """Crops of real photographs, 10 classes: the region of a photograph a crop comes from (PHOTO_GRID).
    A square window of 40-112 pixels at a random place inside the region, resized to ``size`` (antialiased),
    mirrored half the time, its brightness x U(0.75, 1.25) and each channel x U(0.92, 1.08), pixel noise
    0.02. Regions of one photograph share content (sky, foliage, petals), so the task is not trivial.
    Domains: ``01`` [0, 1], ``pm1`` [-1, 1], ``255`` raw 0-255 bytes, ``z`` ImageNet's z-score."""
    import torch.nn.functional as F

    rng = np.random.default_rng(seed)
    imgs = [torch.from_numpy(i) for i in _photographs()]
    regions = []
    for k, rows, cols in PHOTO_GRID:
        h, w = imgs[k].shape[1:]
        regions += [(k, i * h // rows, (i + 1) * h // rows, j * w // cols, (j + 1) * w // cols)
                    for i in range(rows) for j in range(cols)]
    y = rng.integers(0, len(regions), n)
    x = np.empty((n, 3, size, size), np.float32)
    for i in range(n):
        k, y0, y1, x0, x1 = regions[y[i]]
        side = min(int(rng.uniform(40, 112)), y1 - y0, x1 - x0)
        top, left = rng.integers(y0, y1 - side + 1), rng.integers(x0, x1 - side + 1)
        crop = F.interpolate(imgs[k][None, :, top:top + side, left:left + side], size=(size, size),
                             mode="bilinear", antialias=True, align_corners=False)[0].numpy()
        if rng.uniform() < 0.5:
            crop = crop[:, :, ::-1]
        gain = rng.uniform(0.75, 1.25) * rng.uniform(0.92, 1.08, 3)
        x[i] = np.clip(crop * gain[:, None, None] + rng.normal(0, 0.02, crop.shape), 0, 1)
    x = {"01": lambda v: v, "pm1": lambda v: 2 * v - 1, "255": lambda v: np.round(v * 255),
         "z": lambda v: (v - IMAGENET[0][:, None, None]) / IMAGENET[1][:, None, None]}[domain](x)
    x_tr, x_te, y_tr, y_te = _split(x.astype(np.float32), y.astype(np.int64))
    return x_tr, y_tr, x_te, y_te


def signal10(domain: str, n: int = 6000, length: int = 64, seed: int = 0):
    """10 classes of 1-D signal = 5 waveforms (sine, square, sawtooth, triangle, pulse train) x 2
    frequency bands (1-2.6 and 2.8-4.5 cycles), random amplitude, phase and drift, heavy noise.
    ``z``: standardised per sample set; ``volts``: a sensor's 2.5 V offset, 0.8 V per unit."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    wave, band = y % 5, y // 5
    t = np.linspace(0, 1, length, endpoint=False)[None, :]
    f = np.where(band == 0, rng.uniform(1.0, 2.6, n), rng.uniform(2.8, 4.5, n))[:, None]
    u = (f * t + rng.uniform(0, 1, (n, 1))) % 1.0
    forms = np.stack([np.sin(2 * np.pi * u), np.sign(np.sin(2 * np.pi * u)), 2 * u - 1, 1 - 4 * np.abs(u - 0.5),
                      np.where(u < 0.2, 1.0, -0.25)])
    sig = rng.uniform(0.5, 1.5, (n, 1)) * forms[wave, np.arange(n)]
    sig = sig + rng.uniform(-0.5, 0.5, (n, 1)) * t + rng.normal(0, 0.15, (n, length))
    x = sig[:, None, :].astype(np.float32)
    if domain == "volts":
        x = 2.5 + 0.8 * x
    x_tr, x_te, y_tr, y_te = _split(x, y.astype(np.int64))
    return x_tr, y_tr, x_te, y_te


def tabular(name: str):
    """Unscaled tabular features: wine (13 f, 3 classes), breast cancer (30 f, 2), or a 20-feature,
    5-class make_classification whose features are multiplied by 10^U(-2, 3) and shifted."""
    from sklearn import datasets

    if name == "wine":
        d = datasets.load_wine()
        x, y = d.data, d.target
    elif name == "cancer":
        d = datasets.load_breast_cancer()
        x, y = d.data, d.target
    else:
        x, y = datasets.make_classification(3000, 20, n_informative=12, n_redundant=4, n_classes=5,
                                            n_clusters_per_class=1, class_sep=1.2, random_state=0)
        rng = np.random.default_rng(0)
        x = x * 10 ** rng.uniform(-2, 3, 20) + 10 ** rng.uniform(-2, 3, 20)
    x_tr, x_te, y_tr, y_te = _split(x.astype(np.float32), y.astype(np.int64))
    return x_tr, y_tr, x_te, y_te


# ----------------------------------------------------------------------------- entries

@dataclass
class Entry:
    name: str
    data: tuple  # (function, argument)
    build: object  # () -> nn.Module
    fmt: str  # torchscript | exported-program | state-dict
    domain: str  # in words, for the table
    arch: str
    epochs: int = 40
    lr: float = 3e-3
    factory: str | None = None  # for state-dict teachers: zoo_models:<name>

    @property
    def file(self) -> str:
        fmt = self.fmt
        if fmt == "exported-program" and os.environ.get("ZOO_PT2_AS") == "torchscript":
            fmt = "torchscript"  # a torch older than the one that saved the cache cannot read its .pt2 files
        return self.name + {"torchscript": ".pt", "exported-program": ".pt2", "state-dict": ".state.pt"}[fmt]


ENTRIES = [
    Entry("digits01-seq", (digits, "01"), lambda: zm.seq_cnn(2, 1, 10), "torchscript", "[0, 1]",
          "Sequential CNN + MaxPool, BN"),
    Entry("digits255-res", (digits, "255"), lambda: zm.ResNet(2, 1, 10), "exported-program", "raw 0-255",
          "ResNet (residual adds), BN"),
    Entry("digitsz-dw", (digits, "z"), zm.digitsz_dw, "state-dict", "z-score", "depthwise-separable, ReLU6, BN",
          factory="zoo_models:digitsz_dw"),
    Entry("digitspm1-nobn", (digits, "pm1"), lambda: zm.seq_cnn(2, 1, 10, bn=False), "torchscript", "[-1, 1]",
          "Sequential CNN + MaxPool, no BN", lr=1e-3),
    Entry("shapes01-mbv", (shapes, "01"), lambda: zm.MobileNet(2, 3, 6, act=nn.Hardswish), "torchscript", "[0, 1] RGB",
          "depthwise-separable, hard-swish, BN", epochs=25),
    Entry("shapesz-res", (shapes, "z"), lambda: zm.ResNet(2, 3, 6), "exported-program", "per-channel z-score RGB",
          "ResNet (residual adds), BN", epochs=25),
    Entry("signal10z-cnn", (signal10, "z"), lambda: zm.seq_cnn(1, 1, 10), "torchscript", "zero-mean signal",
          "1-D Sequential CNN + MaxPool, BN", epochs=30),
    Entry("signal10v-res", (signal10, "volts"), zm.signal10_volts_res, "state-dict", "volts, 2.5 offset",
          "1-D ResNet (residual adds), BN", epochs=30, factory="zoo_models:signal10_volts_res"),
    Entry("wine-bnfirst", (tabular, "wine"), lambda: zm.bn_first_mlp(13, 3), "torchscript", "unscaled (0.1-1,680)",
          "MLP, BN first", epochs=150),
    Entry("cancer-bnfirst", (tabular, "cancer"), lambda: zm.bn_first_mlp(30, 2), "exported-program",
          "unscaled (0.001-4,254)", "MLP, BN first", epochs=100),
    Entry("tab5-bnfirst", (tabular, "mixed"), zm.tab5_mixed_bnfirst, "state-dict", "mixed scales (10^-2-10^3)",
          "MLP, BN first", epochs=60, factory="zoo_models:tab5_mixed_bnfirst"),
    Entry("digitsvec-mlp", (digits, "vec16"), lambda: zm.linear_bn_mlp(64, 10), "torchscript", "raw 0-16 vector",
          "MLP, Linear then BN", epochs=60),
]

# three architectures of one task each (the multi-teacher sets); members not in ENTRIES are trained too
EXTRA = [
    Entry("digits01-res", (digits, "01"), lambda: zm.ResNet(2, 1, 10, width=12), "torchscript", "[0, 1]", "ResNet"),
    Entry("digits01-dw", (digits, "01"), zm.digits01_dw, "exported-program", "[0, 1]", "depthwise, hard-swish"),
    Entry("signal10z-res", (signal10, "z"), lambda: zm.ResNet(1, 1, 10, width=12), "torchscript", "zero-mean signal",
          "1-D ResNet", epochs=30),
    Entry("signal10z-dw", (signal10, "z"), lambda: zm.MobileNet(1, 1, 10, width=16), "exported-program",
          "zero-mean signal", "1-D depthwise", epochs=30),
]
# deeper image models (32x32 colour shapes) for the int8 benchmarks (benchmarks/quantize_bench.py): ``--deep``
DEEP = [
    Entry("shapes32z-r18", (shapes32, "z"), lambda: zm.resnet18_style(3, 6, width=32), "torchscript",
          "per-channel z-score RGB", "ResNet-18 layout (residual adds), width 32, BN", epochs=12),
    Entry("shapes32-mbv2", (shapes32, "01"), lambda: zm.mobilenetv2_style(3, 6, act=nn.Hardswish), "exported-program",
          "[0, 1] RGB", "MobileNetV2 inverted residuals, hard-swish, BN", epochs=15),
    Entry("shapes32b-res", (shapes32, "255"), lambda: zm.ResNet(2, 3, 6, width=32), "exported-program",
          "raw 0-255 RGB", "ResNet (residual adds), width 32, BN", epochs=15),
]
# crops of real photographs (32x32 RGB, 10 classes) in the four usual normalisations, four architectures
PHOTOS = [
    Entry("photoz-res", (photos, "z"), lambda: zm.ResNet(2, 3, 10, width=16), "torchscript",
          "ImageNet z-score RGB photographs", "ResNet (residual adds), widths 16/32/64, BN", epochs=20),
    Entry("photo01-mbv2", (photos, "01"), lambda: zm.mobilenetv2_style(3, 10), "exported-program",
          "[0, 1] RGB photographs", "MobileNetV2 inverted residuals, ReLU6, BN", epochs=20),
    Entry("photopm1-seq", (photos, "pm1"), zm.photo_seq, "state-dict", "[-1, 1] RGB photographs",
          "Sequential CNN + MaxPool, BN", epochs=20, factory="zoo_models:photo_seq"),
    Entry("photo255-dw", (photos, "255"), lambda: zm.MobileNet(2, 3, 10, act=nn.Hardswish), "torchscript",
          "raw 0-255 RGB photographs", "depthwise-separable, hard-swish, BN", epochs=20),
]
# (--factory applies to every teacher of a run, so the members are TorchScript or torch.export files)
MULTI = {"digits01-trio": ["digits01-seq", "digits01-res", "digits01-dw"],
         "signal10z-trio": ["signal10z-cnn", "signal10z-res", "signal10z-dw"]}
BY_NAME = {e.name: e for e in ENTRIES + PHOTOS + EXTRA + DEEP}


def code_commit() -> str:
    """The commit of the dfkd_edge package that runs (``+dirty`` when it differs from that commit), for every
    result row; "unknown" outside a git checkout."""
    import subprocess

    import dfkd_edge

    root = Path(dfkd_edge.__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "dfkd_edge"], cwd=root, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


# ----------------------------------------------------------------------------- training

def train(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, lr: float, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    steps = epochs * ((len(xt) + 63) // 64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(xt), generator=gen)
        for i in range(0, len(xt), 64):
            idx = perm[i:i + 64]
            if len(idx) < 2:
                continue
            loss = nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


def accuracy(model, x: np.ndarray, y: np.ndarray) -> float:
    with torch.no_grad():
        return float((model(torch.from_numpy(x)).argmax(1).numpy() == y).mean())


def save(model: nn.Module, entry: Entry, path: Path, input_shape) -> None:
    if entry.fmt == "torchscript":
        torch.jit.save(torch.jit.script(model), str(path))  # input shape not recorded: a user's own file
    elif entry.fmt == "exported-program":
        batch = torch.export.Dim("batch", min=1, max=4096)
        ep = torch.export.export(model, (torch.zeros(2, *input_shape),), dynamic_shapes=({0: batch},))
        torch.export.save(ep, str(path))
    else:
        torch.save(model.state_dict(), str(path))


def _save_split(entry: Entry, paths: dict, x_tr, y_tr, x_te, y_te) -> None:
    np.savez(paths["train"], x=x_tr, y=y_tr)
    np.savez(paths["eval"], x=x_te, y=y_te)


def build(entry: Entry, cache: Path = DEFAULT_CACHE) -> dict:
    """Train (or load from ``cache``) one teacher; returns its paths and figures."""
    cache.mkdir(parents=True, exist_ok=True)
    meta_file = cache / f"{entry.name}.json"
    paths = {"teacher": str(cache / entry.file), "train": str(cache / f"{entry.name}.train.npz"),
             "eval": str(cache / f"{entry.name}.test.npz")}
    if meta_file.exists() and (cache / entry.file).exists():
        # a cache moved to another machine: its paths are this cache's, and the data (deterministic) is
        # made again where it was left behind
        if not (Path(paths["train"]).exists() and Path(paths["eval"]).exists()):
            _save_split(entry, paths, *entry.data[0](entry.data[1]))
        return {**json.loads(meta_file.read_text()), **paths}
    fn, arg = entry.data
    x_tr, y_tr, x_te, y_te = fn(arg)
    t0 = time.perf_counter()
    model = train(entry.build(), x_tr, y_tr, entry.epochs, entry.lr)
    acc = accuracy(model, x_te, y_te)
    save(model, entry, cache / entry.file, x_tr.shape[1:])
    _save_split(entry, paths, x_tr, y_tr, x_te, y_te)
    meta = {"name": entry.name, "teacher": str(cache / entry.file), "format": entry.fmt, "factory": entry.factory,
            "input_shape": list(x_tr.shape[1:]), "classes": int(y_tr.max() + 1), "domain": entry.domain,
            "arch": entry.arch, "train": str(cache / f"{entry.name}.train.npz"),
            "eval": str(cache / f"{entry.name}.test.npz"), "accuracy": acc, "train_s": round(time.perf_counter() - t0, 1),
            "input_min": float(x_tr.min()), "input_max": float(x_tr.max())}
    meta_file.write_text(json.dumps(meta, indent=1))
    return meta


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", default=str(DEFAULT_CACHE))
    ap.add_argument("--only", nargs="*", help="entry names (default: all, multi-teacher members included)")
    ap.add_argument("--deep", action="store_true", help="also the deeper 32x32 image models (DEEP; about 15 minutes)")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    entries = [BY_NAME[n] for n in a.only] if a.only else ENTRIES + PHOTOS + EXTRA + (DEEP if a.deep else [])
    print("| teacher | domain | architecture | format | input shape | classes | test accuracy |")
    print("|---|---|---|---|---|---|---|")
    for e in entries:
        m = build(e, Path(a.cache))
        print(f"| {e.name} | {e.domain} | {e.arch} | {e.fmt} | {'x'.join(map(str, m['input_shape']))} | "
              f"{m['classes']} | {100 * m['accuracy']:.2f}% |", flush=True)


if __name__ == "__main__":
    main()
