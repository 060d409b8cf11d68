"""Progress where no terminal shows a bar (CI, nohup, a log file): plain lines at intervals, each with the count,
elapsed time and an ETA. The clock is injected: no test depends on timing."""

from __future__ import annotations

import io

from rich.console import Console

from dfkd_edge.progress import LineProgress, RichProgress, duration, for_stream


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_lines_at_intervals_with_an_eta_and_the_last_step():
    out, clock = io.StringIO(), Clock()
    p = LineProgress(out, interval_s=10, clock=clock)
    with p.task("synthesis", 100) as t:
        for i in range(100):
            clock.t += 1.0  # one step a second
            t.advance(1, loss=0.5 - i / 1000)
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("synthesis: 1/100 (1%) 1s elapsed, ETA 1m39s")
    assert len(lines) == 11  # the first step, every 10 s after it, and the last
    assert lines[5].startswith("synthesis: 51/100 (51%) 51s elapsed, ETA 49s")
    assert lines[-1].startswith("synthesis: 100/100 (100%) 1m40s elapsed loss=0.401")
    assert "ETA" not in lines[-1]


def test_a_file_gets_lines_and_a_terminal_gets_a_bar():
    assert isinstance(for_stream(Console(file=io.StringIO(), force_terminal=False)), LineProgress)
    assert isinstance(for_stream(Console(file=io.StringIO(), force_terminal=True)), RichProgress)


def test_durations_read_as_people_write_them():
    assert [duration(s) for s in (0, 42.4, 185, 3720)] == ["0s", "42s", "3m05s", "1h02m"]
