"""One registry for every network built by name (students, teachers of the demo, generators)."""

from __future__ import annotations

import importlib
from typing import Callable

from torch import nn

from dfkd_edge.errors import UserError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    _REGISTRY[fn.__name__] = fn
    return fn


def create_model(name: str, **kwargs) -> nn.Module:
    if name not in _REGISTRY:
        raise UserError(f"unknown model {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](**kwargs)


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def import_factory(spec: str, flag: str) -> Callable:
    """The function ``package.module:function`` names (a teacher's --factory, a --student-factory); UserError
    naming ``flag`` when it is not of that form or cannot be imported."""
    if not spec or ":" not in spec:
        raise UserError(f"{flag} {spec!r} must look like package.module:function")
    mod_name, fn_name = spec.split(":", 1)
    try:
        return getattr(importlib.import_module(mod_name), fn_name)
    except (ImportError, AttributeError) as e:
        raise UserError(f"{flag} {spec!r} cannot be imported ({e}); check it is on PYTHONPATH") from None


def checked_module(model, spec: str, flag: str) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise UserError(f"{flag} {spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model
