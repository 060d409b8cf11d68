"""Several teachers into one multi-header student (CDFKD-MFS, Hao et al. 2022): the student's width and the
**attention aggregation** over its headers, fitted with a few labelled samples (``train_attention``: the
student's AttentionAggregation with cross-entropy, everything else frozen). The trainer itself is
dfkd_edge.synthesis.cdfkd_mfs.
"""

from __future__ import annotations


import numpy as np
import torch
import torch.nn.functional as F

from dfkd_edge.models import create_model
from dfkd_edge.models.students import MIN_WIDTH, _WIDTHS, count_params


def train_attention(student, x: np.ndarray, y: np.ndarray, epochs: int = 200, lr: float = 0.05,
                    seed: int = 0, check: bool = True) -> dict:
    """Fit the student's attention aggregation on a few labelled samples, the rest frozen.

    The attention starts at zero (uniform weights: exactly the headers' mean). With ``check`` (and
    at least 20 samples) it is first fitted on each half of the samples and scored on the other
    half (cross-entropy); it is kept only when it beats the mean there, else the weights stay
    uniform and the shipped model is the mean. Returns the figures of each step."""
    if student.attention is None:
        raise ValueError("the student has no attention aggregation")
    x_t, y_t = torch.from_numpy(np.asarray(x, np.float32)), torch.from_numpy(np.asarray(y, np.int64))
    student.eval()
    with torch.no_grad():
        stacked = torch.stack(student.header_outputs(x_t)[0])  # frozen: computed once
    att = student.attention

    def fit(idx) -> list[float]:
        torch.manual_seed(seed)
        with torch.no_grad():
            att.weight.zero_()
            att.bias.zero_()
        opt = torch.optim.Adam(att.parameters(), lr=lr)
        losses = []
        for _ in range(epochs):
            loss = F.cross_entropy(att(stacked[:, idx]), y_t[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        return losses

    doc = {"samples": int(len(y_t)), "epochs": epochs, "checked": bool(check and len(y_t) >= 20)}
    if doc["checked"]:
        perm = torch.randperm(len(y_t), generator=torch.Generator().manual_seed(seed))
        halves = (perm[: len(perm) // 2], perm[len(perm) // 2:])
        nll_att = nll_mean = 0.0
        for fit_idx, val_idx in (halves, halves[::-1]):
            fit(fit_idx)
            with torch.no_grad():
                nll_att += float(F.cross_entropy(att(stacked[:, val_idx]), y_t[val_idx]))
                nll_mean += float(F.cross_entropy(stacked[:, val_idx].mean(0), y_t[val_idx]))
        doc.update(held_out_nll_attention=nll_att / 2, held_out_nll_mean=nll_mean / 2)
        doc["kept"] = nll_att + 1e-6 < nll_mean  # a margin: float noise is not "better"
    else:
        doc["kept"] = True
    losses = fit(torch.arange(len(y_t)))
    if not doc["kept"]:
        with torch.no_grad():
            att.weight.zero_()
            att.bias.zero_()
    with torch.no_grad():
        doc["accuracy_attention"] = float((att(stacked).argmax(1) == y_t).float().mean())
        doc["accuracy_mean"] = float((stacked.mean(0).argmax(1) == y_t).float().mean())
    doc["loss"] = losses
    return doc


def multi_student_width(input_shape, num_classes: int, teacher_params: list[int], headers: int,
                        family: str | None = None) -> int:
    """The widest width whose multi-header student stays within 1/4 of the largest teacher (>= 8)."""
    budget = max(teacher_params) / 4
    best = MIN_WIDTH
    for w in _WIDTHS:
        m = create_model("multihead", input_shape=input_shape, num_classes=num_classes, width=w, headers=headers,
                         family=family)
        if count_params(m) <= budget:
            best = w
    return best


__all__ = ["multi_student_width", "train_attention"]
