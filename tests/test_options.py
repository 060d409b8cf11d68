"""The options table (dfkd_edge.options): the CLI's and the Python API's defaults are the stages' dataclasses',
every option reaches its config field, and errors speak the caller's words."""

from __future__ import annotations

import ast
from pathlib import Path

import click
import pytest

import dfkd_edge.api as api
from dfkd_edge import options
from dfkd_edge.cli import cli as cli_group
from dfkd_edge.config import ConvertConfig, quantize_base
from dfkd_edge.errors import UserError

ROOT = Path(__file__).resolve().parents[1]


def _click_defaults(command: str) -> dict:
    cmd = cli_group.commands[command]
    return {p.name: (tuple(p.default) if p.multiple and p.default is not None else p.default)
            for p in cmd.params if isinstance(p, click.Option) and p.name != "out"}


@pytest.mark.parametrize("command", sorted(options.COMMANDS))
def test_the_cli_shows_the_defaults_of_the_stages_dataclasses(command):
    assert _click_defaults(command) == options.defaults(command)


def test_no_option_given_is_the_dataclasses_config():
    assert options.config("convert", "t.pt", {"out": "o"}).to_dict() == ConvertConfig(teacher="t.pt", out="o").to_dict()
    every = {"out": "o", **options.defaults("convert")}
    assert options.config("convert", "t.pt", every).to_dict() == ConvertConfig(teacher="t.pt", out="o").to_dict()
    q = quantize_base()
    q.teacher, q.out, q.samples = "m.pt", "o", q.calib.samples
    assert options.config("quantize", "m.pt", {"out": "o"}).to_dict() == q.to_dict()


def _other(value, option):
    """A valid value other than ``value`` for ``option``."""
    if option.choices:
        return next(c for c in option.choices if c != value)
    if option.name == "targets":
        return ("jetson-orin-nano",)
    if option.name == "input_shape":
        return "1,8,8"
    if isinstance(value, bool) or option.is_flag:
        return not value
    if isinstance(value, (int, float)):
        return value + 3
    return "x.npz"


@pytest.mark.parametrize("name", sorted(n for n, o in options.OPTIONS.items() if o.field))
def test_every_option_reaches_its_config_field(name):
    option = options.OPTIONS[name]
    command = "quantize" if name == "calib_data" else "convert"
    before = options.defaults(command)[name]
    value = _other(before, option)
    cfg = options.config(command, "t.pt", {"out": "o", name: value})
    got = options._get(cfg, option)
    assert got == (options.parse_input_shape(value) if name == "input_shape" else value) != before


def test_no_cli_option_declaration_carries_a_literal_default():
    literals = []
    for module in ("cli.py", "cli_options.py", "cli_stages.py", "cli_common.py"):
        tree = ast.parse((ROOT / "dfkd_edge" / module).read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "option":
                for kw in node.keywords:
                    if kw.arg == "default" and isinstance(kw.value, (ast.Constant, ast.Tuple, ast.List)) and \
                            not (isinstance(kw.value, ast.Constant) and kw.value.value is None):
                        literals.append(f"{module}:{node.lineno}")
    assert not literals, literals


@pytest.mark.parametrize("command", sorted(options.COMMANDS))
def test_the_api_takes_the_options_the_cli_takes(command):
    cli_names = {p.name for p in cli_group.commands[command].params if isinstance(p, click.Option)} - {"out"}
    assert cli_names == set(options.COMMANDS[command]) - {"out"}
    with pytest.raises(TypeError, match="unknown option"):
        api._options(command, {"not_an_option": 1})
    assert api._options(command, {n: None for n in cli_names}).keys() == cli_names


@pytest.mark.parametrize("given, said, flag", [({"epochs": 0}, "epochs must be positive", "--epochs"),
                                               ({"synth_batch": -1}, "synth_batch must be positive", "--synth-batch"),
                                               ({"distill_mode": "xx"}, "distill_mode", "--distill")])
def test_api_errors_name_arguments_not_flags(tmp_path, digits_teacher, given, said, flag, cli):
    with pytest.raises(UserError) as e:
        api.convert(digits_teacher, out=tmp_path / "o", **given)
    assert said in str(e.value) and flag not in str(e.value)
    code, _, err = cli("convert", digits_teacher, "--out", tmp_path / "c", flag, *(str(v) for v in given.values()))
    assert code == 2 and flag in err


def test_python_words_leave_other_text_alone():
    assert options.in_python_words("--no-shift with --synth-batch 4; --target x; --distill-x") == \
        "shift=False with synth_batch 4; targets x; --distill-x"

