"""The README's local command blocks run as written (each block marked ``<!-- tests/test_readme.py runs the next
block -->``), in the README's order, in one working folder: the demo, the worked example with its own teacher,
quantize, stage by stage and the Python API. Setup steps (a virtual environment, pip) are this test's own
environment. ``convert`` and ``synthesize`` lines get the sizes the README names for a quick try, and nothing
else. Every stage command that writes files other than the report is run a second time and must say that its
stages are up to date. The test command itself is what ``.ci/run`` runs, verbatim."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
MARK = "<!-- tests/test_readme.py runs the next block -->"
#: only a guard against a hung command (two hours): a slow or busy machine must not fail the test
HANG_GUARD_S = 7200
#: stage commands that write files other than the report
WRITES = {"synthesize", "distill", "export", "calibrate", "build"}


def marked_blocks() -> list[tuple[str, str]]:
    """(language, code) of each marked block."""
    out = []
    for part in README.split(MARK)[1:]:
        m = re.match(r"\s*```(\w*)\n(.*?)\n```", part, re.S)
        assert m, "a mark not followed by a code block"
        out.append((m.group(1), m.group(2)))
    return out


def quick_sizes() -> list[str]:
    m = re.search(r"A quick try: add `([^`]+)`", README)
    assert m, "the README names no quick-try sizes"
    return m.group(1).split()


def shell_lines(code: str) -> list[list[str]]:
    """The block's commands: continuations joined, comments dropped, setup steps (venv, pip) left out."""
    lines = []
    for line in code.replace("\\\n", " ").splitlines():
        line = line.split("  #", 1)[0].strip()
        if not line or line.startswith("#"):
            continue
        steps = [s.strip() for s in line.split("&&")]
        steps = [s for s in steps if not s.startswith(("python3 -m venv", ". .venv", "pip "))]
        lines += [shlex.split(s) for s in steps]
    return lines


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess:
    exe = {"dfkd-edge": [sys.executable, "-m", "dfkd_edge"], "python": [sys.executable]}
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    return subprocess.run(exe[argv[0]] + argv[1:], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=HANG_GUARD_S)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("readme")


def test_the_readme_marks_the_blocks_and_ci_runs_its_test_command():
    langs = [lang for lang, _ in marked_blocks()]
    assert langs.count("python") == 1 and len(langs) == 5
    test_command = re.search(r"\*\*Set up and run the tests\*\*.*?```\n(.*?)\n```", README, re.S).group(1)
    assert test_command in (ROOT / ".ci" / "run").read_text()


@pytest.mark.slow
@pytest.mark.parametrize("index", range(5))
def test_a_readme_block_runs_as_written(work, index):
    lang, code = marked_blocks()[index]
    if lang == "python":
        script = work / "readme_api.py"
        script.write_text(code)
        r = subprocess.run([sys.executable, str(script)], cwd=work, capture_output=True, text=True, timeout=HANG_GUARD_S,
                           env={**os.environ, "PYTHONWARNINGS": "ignore"})
        assert r.returncode == 0, r.stderr[-3000:]
        return
    for argv in shell_lines(code):
        if argv[:2] in (["dfkd-edge", "convert"], ["dfkd-edge", "synthesize"]):
            argv = argv + quick_sizes()
        r = run(argv, work)
        assert r.returncode == 0, f"{shlex.join(argv)} exited {r.returncode}:\n{r.stderr[-3000:]}"
        if argv[0] == "dfkd-edge" and argv[1] in WRITES:
            again = run(argv, work)
            said = re.findall(r"^([\w-]+): (done|up to date)", again.stderr, re.M)
            assert again.returncode == 0 and said and all(s == "up to date" for _, s in said), \
                f"{shlex.join(argv)} a second time: {again.stderr[-2000:]}"
