"""Transfer-set synthesis: one module per method over :class:`Synthesizer`.

``create_synthesizer(name, teacher, **cfg)`` builds one by name; ``METHODS`` lists them.
"""

from dfkd_edge.synthesis.base import AUTO_METHOD, METHODS, InputOptimizer, Synthesizer, TransferSet, create_synthesizer, register_method, resolve_method
from dfkd_edge.synthesis import adversarial as _adversarial  # noqa: F401  (registers)
from dfkd_edge.synthesis import deepinversion as _deepinversion  # noqa: F401  (registers)
from dfkd_edge.synthesis import gaussian as _gaussian  # noqa: F401  (registers)
from dfkd_edge.synthesis import reused_generator as _reused_generator  # noqa: F401  (registers)
from dfkd_edge.synthesis import soft_target as _soft_target  # noqa: F401  (registers)

__all__ = ["AUTO_METHOD", "METHODS", "resolve_method", "InputOptimizer", "Synthesizer", "TransferSet", "create_synthesizer", "register_method"]
