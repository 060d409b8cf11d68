"""The package's import graph against its layers (docs/ARCHITECTURE.md, "Layers"): the library <- the pipeline <-
the interfaces. No module imports a layer above its own, no import circle (importing ``a.b.c`` runs ``a`` and
``a.b`` first, so a package's ``__init__`` counts), and no function-local import of the package's own modules
but those the table in docs/ARCHITECTURE.md allows (the lazy API of ``import dfkd_edge``)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "dfkd_edge"
LAYERS = {"library": 0, "pipeline": 1, "interface": 2}


def modules() -> dict[str, Path]:
    out = {}
    for p in PKG.rglob("*.py"):
        parts = p.relative_to(ROOT).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = p
    return out


def layer_table() -> dict[str, str]:
    """docs/ARCHITECTURE.md's table: ``| module or package | layer |`` rows under "## Layers"."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    return {m: layer for m, layer in re.findall(r"^\| `([\w.]+)` \| (\w+) \|", section, re.M)}


def layer_of(module: str, table: dict[str, str]) -> str:
    name = module
    while name not in table:
        assert name.count(".") > 1, f"{module} has no layer in docs/ARCHITECTURE.md"
        name = name.rsplit(".", 1)[0]
    return table[name]


def imports(mods: dict[str, Path]) -> tuple[dict[str, set[str]], list[tuple[str, str]]]:
    """(module -> the package modules importing it runs, [(module, target) of each function-local import])."""
    graph, local = {m: set() for m in mods}, []
    for m, path in mods.items():
        tree = ast.parse(path.read_text())
        top = {id(n) for n in tree.body}
        top |= {id(n) for t in tree.body if isinstance(t, ast.If) for n in ast.walk(t)}  # TYPE_CHECKING, version checks
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = m.split(".") if is_pkg else m.split(".")[:-1]
                    parts = parts[: len(parts) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            for name in names:
                if not name.startswith("dfkd_edge"):
                    continue
                while name not in mods and "." in name:
                    name = name.rsplit(".", 1)[0]
                chain = name.split(".")
                # the packages a module sits in are already running when it runs: not edges
                targets = {".".join(chain[:i]) for i in range(1, len(chain) + 1)
                           if not m.startswith(".".join(chain[:i]) + ".")} - {m}
                if id(node) in top:
                    graph[m] |= targets
                elif name != m:
                    local.append((m, name))
    return graph, local


def test_every_module_has_a_layer_and_none_imports_a_layer_above_it():
    mods, table = modules(), layer_table()
    graph, _ = imports(mods)
    upward = [f"{m} ({layer_of(m, table)}) imports {t} ({layer_of(t, table)})" for m in sorted(graph)
              for t in sorted(graph[m]) if t != "dfkd_edge" and LAYERS[layer_of(t, table)] > LAYERS[layer_of(m, table)]]
    assert not upward, "\n".join(upward)


def test_no_import_circle():
    graph, _ = imports(modules())
    graph = {m: {t for t in ts if t != "dfkd_edge"} for m, ts in graph.items()}  # the root only names the version
    state, cycles = {}, []

    def visit(m, path):
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                cycles.append(" -> ".join(path[path.index(t):] + [t]))
            elif t not in state:
                visit(t, path + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    assert not cycles, "\n".join(cycles)


def test_function_local_imports_only_where_the_table_allows():
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text().split("## Layers", 1)[1].split("\n## ", 1)[0]
    allowed = set(re.findall(r"^- local: `([\w.]+)` -> `([\w.]+)`", text, re.M))
    _, local = imports(modules())
    extra = sorted(set(local) - allowed)
    assert not extra, "function-local imports of the package: " + ", ".join(f"{m} -> {t}" for m, t in extra)



def test_the_python_api_imports_neither_click_nor_the_cli():
    code = ("import sys, dfkd_edge, dfkd_edge.api; dfkd_edge.convert; "
            "print(sorted(m for m in sys.modules if m == 'click' or m.startswith(('click.', 'dfkd_edge.cli'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert out.stdout.strip() == "[]", out.stdout
