"""Distillation: KD losses and the trainer."""

from dfkd_edge.distill.kd import KDConfig, distill, kd_loss

__all__ = ["KDConfig", "distill", "kd_loss"]
