"""The command line's options, made from the options table (dfkd_edge.options): each command's click options
with the defaults the stages' dataclasses hold, and the options a stage command was actually typed with."""

from __future__ import annotations

import click
from click.core import ParameterSource

from dfkd_edge.options import COMMANDS, OPTIONS, defaults, help_text


def _click_option(command: str, name: str, default):
    o = OPTIONS[name]
    flag = o.cli_flag
    kw: dict = {"help": help_text(command, name)}
    if o.required:
        return click.option(flag, name, required=True, type=click.Path(), **kw)
    if o.is_flag:
        return click.option(flag, name, is_flag=True, default=default, **kw)
    if o.switch:
        flag = f"{flag}/--no-{flag[2:]}"
    if o.choices:
        kw["type"] = click.Choice(list(o.choices))
    elif o.path:
        kw["type"] = click.Path()
    elif default is None and o.kind is not None:
        kw["type"] = o.kind
    return click.option(flag, name, default=default, multiple=o.multiple, show_default=default is not None, **kw)


def for_command(command: str):
    """A decorator giving a click command ``command``'s options (dfkd_edge.options.COMMANDS)."""
    d = defaults(command)

    def deco(f):
        for name in reversed(COMMANDS[command]):
            f = _click_option(command, name, d.get(name))(f)
        return f
    return deco


def given(ctx: click.Context, params: dict) -> dict:
    """The options typed on the command line (not their defaults)."""
    return {k: v for k, v in params.items() if ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE}
