"""dfkd-edge: data-free distillation of a PyTorch teacher into a small int8 engine.

The Python API (dfkd_edge.api): ``dfkd_edge.convert``, ``dfkd_edge.quantize`` (the user's own model
in int8) and ``dfkd_edge.synthesize`` here; every
stage as ``dfkd_edge.api.distill | export | calibrate | build | report`` (``dfkd_edge.distill``,
``.export`` and ``.report`` are the packages that implement them). Each returns a ``Result``.
"""

from dfkd_edge.version import __version__  # noqa: F401

_API = ("convert", "quantize", "synthesize", "Result")


def __getattr__(name):  # the API is imported on first use: `import dfkd_edge` stays light
    if name in _API:
        from dfkd_edge import api

        return getattr(api, name)
    raise AttributeError(f"module 'dfkd_edge' has no attribute {name!r}")
