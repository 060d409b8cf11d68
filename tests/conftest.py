"""Shared fixtures: teachers of every supported rank and format, trained in seconds."""

from __future__ import annotations

import json

import pytest
import torch

from dfkd_edge.cli import main
from dfkd_edge.data import toy
from dfkd_edge.data.digits import builtin_teacher_path, write_test_npz

#: a convert configuration small enough for contract tests (seconds, not minutes)
FAST = ["--samples", "128", "--holdout", "32", "--iterations", "10", "--synth-batch", "64", "--epochs", "3",
        "--calib-samples", "32", "--threads", "1", "--latency-budget", "0.1"]


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def toy_teachers(tmp_path_factory):
    torch.set_num_threads(1)
    return toy.write_teachers(tmp_path_factory.mktemp("toy"))


@pytest.fixture(scope="session")
def digits_teacher():
    return str(builtin_teacher_path())


@pytest.fixture(scope="session")
def digits_test(tmp_path_factory):
    return str(write_test_npz(tmp_path_factory.mktemp("digits") / "digits_test.npz"))


def run_cli(args, capsys) -> tuple[int, str, str]:
    """Run the CLI in-process: (exit code, stdout, stderr)."""
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out, err = capsys.readouterr()
    return code, out, err


def read_json(path):
    return json.loads(open(path).read())


@pytest.fixture
def cli(capsys):
    return lambda *args: run_cli(args, capsys)

