"""Latency runs sized by what a call costs: a fast model keeps its warm-up and its minimum count, a slow one (a
batch of 32 at 224x224) stops after a few calls once LONG_CALL_CAP x the budget is spent. The clock is a fake one
the runner advances: nothing here depends on this machine's speed."""

from __future__ import annotations

import numpy as np

from dfkd_edge.targets import host


class _Clock:
    t = 0.0

    def __call__(self) -> float:
        return self.t


class _Runner:
    def __init__(self, clock: _Clock, seconds: float) -> None:
        self.clock, self.seconds, self.calls = clock, seconds, 0

    def infer(self, x):
        self.calls += 1
        self.clock.t += self.seconds


def _timed(monkeypatch, seconds: float) -> tuple[np.ndarray, int]:
    clock = _Clock()
    monkeypatch.setattr(host.time, "perf_counter", clock)
    r = _Runner(clock, seconds)
    t = host.time_runner(r, np.zeros((1, 3)), warmup=10, min_runs=10, budget_s=0.2)
    return t, r.calls


def test_fast_calls_keep_the_warmup_and_the_minimum(monkeypatch):
    t, calls = _timed(monkeypatch, 0.001)
    assert len(t) == 200 and calls == 210  # 0.2 s of 1 ms calls after 10 warm-ups


def test_long_calls_stop_after_the_cap_with_a_few_of_each(monkeypatch):
    t, calls = _timed(monkeypatch, 0.5)  # the cap: 5 x 0.2 s = 1 s
    assert len(t) == host.LONG_MIN_CALLS and calls == 2 * host.LONG_MIN_CALLS
    assert np.allclose(t, 0.5)
