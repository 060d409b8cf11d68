"""One registry for every network built by name (students, teachers of the demo, generators)."""

from __future__ import annotations

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
