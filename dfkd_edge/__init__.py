"""dfkd-edge: data-free distillation of a PyTorch teacher into a small int8 engine."""

__version__ = "0.1.0"
