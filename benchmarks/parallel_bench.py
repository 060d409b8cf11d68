"""Benchmark jobs over several worker processes, every result in one file: for a machine with many cores
(and a GPU the workers share).

    python benchmarks/parallel_bench.py --jobs jobs.txt --workers 14 --results out.jsonl [--deadline 540]

Each line of ``--jobs`` is one shell command (blank lines and ``#`` comments are skipped), optionally led by
``[tag]``: the command must write its JSON-lines results to the path ``{results}`` stands for (zoo_bench.py
and quantize_bench.py take ``--results {results}``). Jobs start in the file's order, at most ``--workers`` at
a time; as each ends its rows are appended to ``--results``, each with ``"tag"`` (the job's tag) added, and
one line is printed. At ``--deadline`` seconds the jobs still running are stopped and named, so that a
limited machine returns whatever finished.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path


def parse_jobs(text: str) -> list[tuple[str, str]]:
    """(tag, command) for each job line."""
    jobs = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        tag = ""
        if line.startswith("["):
            tag, line = line[1:].split("]", 1)
        jobs.append((tag.strip(), line.strip()))
    return jobs


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--jobs", required=True)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--results", required=True)
    ap.add_argument("--deadline", type=float, default=None, help="seconds; then running jobs are stopped")
    ap.add_argument("--logs", default=None, help="folder for each job's output (default: a temporary one)")
    a = ap.parse_args(argv)
    jobs = parse_jobs(Path(a.jobs).read_text())
    tmp = Path(tempfile.mkdtemp(prefix="parallel-bench-"))
    logs = Path(a.logs) if a.logs else tmp
    logs.mkdir(parents=True, exist_ok=True)
    out = Path(a.results)
    t0, queue, running = time.monotonic(), list(enumerate(jobs)), {}
    while queue or running:
        while queue and len(running) < a.workers and (a.deadline is None or time.monotonic() - t0 < a.deadline):
            i, (tag, cmd) = queue.pop(0)
            res = tmp / f"job{i}.jsonl"
            log = open(logs / f"job{i}.log", "w")
            p = subprocess.Popen(cmd.replace("{results}", str(res)), shell=True, stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True)
            running[i] = (p, tag, cmd, res, time.monotonic(), log)
        for i, (p, tag, cmd, res, started, log) in list(running.items()):
            if p.poll() is None:
                continue
            log.close()
            rows = [json.loads(x) for x in res.read_text().splitlines() if x.strip()] if res.exists() else []
            with out.open("a") as f:
                for r in rows:
                    f.write(json.dumps({**r, "tag": tag}) + "\n")
            print(f"[{time.monotonic() - t0:6.0f} s] job {i} [{tag}] rc {p.returncode}, {len(rows)} rows, "
                  f"{time.monotonic() - started:.0f} s: {cmd[:150]}", flush=True)
            if p.returncode:
                print((logs / f"job{i}.log").read_text()[-1500:], flush=True)
            del running[i]
        if a.deadline is not None and time.monotonic() - t0 > a.deadline:
            for i, (p, tag, cmd, *_rest) in running.items():
                os.killpg(p.pid, signal.SIGTERM)
                print(f"stopped at the deadline: job {i} [{tag}] {cmd[:150]}", flush=True)
            for i, (tag, cmd) in queue:
                print(f"not started: job {i} [{tag}] {cmd[:150]}", flush=True)
            break
        time.sleep(0.5)


if __name__ == "__main__":
    main()
