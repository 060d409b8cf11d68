"""Latency on this machine: warm-up, fixed thread count, many timed runs, percentiles."""

from __future__ import annotations

import os
import platform
import time
from dataclasses import asdict, dataclass

import numpy as np

from dfkd_edge.backends.base import Runner

HOST_TARGET = "host-cpu"


@dataclass
class LatencyRow:
    model: str
    precision: str
    backend: str
    device: str
    kind: str
    batch: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    throughput_qps: float
    runs: int

    def to_dict(self) -> dict:
        return asdict(self)


def host_info(threads: int) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {"cpu": cpu, "machine": platform.machine(), "cores": os.cpu_count(), "threads": threads}


#: warm-up and ``min_runs`` give way to time where calls are long (a batch of 32 at 224x224 takes a second): past
#: this many times ``budget_s``, at least ``LONG_MIN_CALLS`` calls each
LONG_CALL_CAP = 5.0
LONG_MIN_CALLS = 3


def time_runner(runner: Runner, x: np.ndarray, warmup: int = 10, min_runs: int = 30,
                max_runs: int = 1000, budget_s: float = 1.0) -> np.ndarray:
    """Seconds per call: ``warmup`` untimed calls, then at least ``min_runs`` and at most ``max_runs`` timed
    calls, stopping once ``budget_s`` has been spent. Where calls are long, the warm-up and the timed calls each
    stop after ``LONG_CALL_CAP`` x ``budget_s`` once ``LONG_MIN_CALLS`` have run (a fast model's counts are
    unchanged)."""
    cap = LONG_CALL_CAP * budget_s
    start = time.perf_counter()
    for i in range(warmup):
        if i >= LONG_MIN_CALLS and time.perf_counter() - start > cap:
            break
        runner.infer(x)
    times = []
    start = time.perf_counter()
    while len(times) < max_runs and (len(times) < min_runs or time.perf_counter() - start < budget_s):
        if len(times) >= LONG_MIN_CALLS and time.perf_counter() - start > cap:
            break
        t0 = time.perf_counter()
        runner.infer(x)
        times.append(time.perf_counter() - t0)
    return np.asarray(times)


def measure_interleaved(runners: list[tuple[str, Runner]], x: np.ndarray, rounds: int = 5,
                        budget_s: float = 1.0, device: str = HOST_TARGET) -> list[LatencyRow]:
    """Time several runners in turn, A B C A B C ..., ``rounds`` times, and pool each one's times.

    Shared machines drift; interleaving spreads the drift over every runner alike, so rows
    measured together can be compared (the recommendation compares them)."""
    times: list[list[np.ndarray]] = [[] for _ in runners]
    for _, r in runners:
        r.activate()
    try:
        for k in range(rounds):
            for i, (_, r) in enumerate(runners):
                times[i].append(time_runner(r, x, warmup=10 if k == 0 else 2, min_runs=10,
                                            budget_s=budget_s / rounds))
    finally:
        for _, r in runners:
            r.deactivate()
    return [latency_row(r, model, x, np.concatenate(t), device) for (model, r), t in zip(runners, times)]


def latency_row(runner: Runner, model: str, x: np.ndarray, t: np.ndarray, device: str = HOST_TARGET) -> LatencyRow:
    ms = t * 1000.0
    batch = int(x.shape[0])
    return LatencyRow(model=model, precision=runner.precision, backend=runner.backend, device=device,
                      kind="measured", batch=batch, p50_ms=round(float(np.percentile(ms, 50)), 4),
                      p90_ms=round(float(np.percentile(ms, 90)), 4), p99_ms=round(float(np.percentile(ms, 99)), 4),
                      throughput_qps=round(batch / float(t.mean()), 1), runs=int(len(t)))
