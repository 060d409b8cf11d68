"""The published Jetson latencies the estimate is fitted to and checked on (benchmarks/jetson_published.toml: device,
mode, software, network, input, precision, batch, GPU or DLA, the source's metric and figure, the p50 where the
source gives one, trust, source): loading, the shipped profile of a row's device, and the rows as a table.

    python benchmarks/jetson_published.py       # the test set; benchmarks/jetson_fit.py fits and checks on it
"""

from __future__ import annotations

import argparse
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

HERE = Path(__file__).resolve().parent
ROWS = HERE / "jetson_published.toml"


def load_rows(path: Path = ROWS) -> list[dict]:
    return tomllib.loads(path.read_text())["row"]


def profile_for(device: str) -> str:
    """The shipped profile of ``device`` (a published row names the module and its memory: the longest shipped
    profile name it starts with)."""
    from dfkd_edge.targets.profile import builtin_names

    names = [n for n in builtin_names() if device.startswith(n)]
    if not names:
        raise SystemExit(f"no shipped profile for {device!r}")
    return max(names, key=len)


def print_rows(rows: list[dict]) -> None:
    """The test set as a table: what each row measured and where it comes from."""
    print("| device | mode | network | input | precision | batch | metric | ms | p50 ms | trust | group |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['device']} | {r['mode']} | {r['model']} | {'x'.join(map(str, r['input']))} | {r['precision']} | "
              f"{r['batch']} | {r['metric']} | {r['ms']:.3f} | {r.get('p50_ms', '-')} | {r['trust']} | {r['group']} |")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default=str(ROWS))
    a = ap.parse_args(argv)
    print_rows(load_rows(Path(a.rows)))


if __name__ == "__main__":
    main()
