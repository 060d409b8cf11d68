"""Runtimes, one module each, over the small :class:`Runner` base (Polygraphy's shape):
a runner is built from a model, ``activate()``-d, ``infer()``-ed, ``deactivate()``-d.
Adding a runtime is adding a module; profilers and evaluators only see ``Runner``."""

from dfkd_edge.backends.base import Runner, predict

__all__ = ["Runner", "predict"]
