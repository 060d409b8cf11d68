"""Distillation: KD losses and the trainer; virtual knowledge (VKD) in dfkd_edge.distill.vkd."""

from dfkd_edge.distill.kd import DISTILL_MODES, KDConfig, distill, kd_loss

__all__ = ["DISTILL_MODES", "KDConfig", "distill", "kd_loss"]
