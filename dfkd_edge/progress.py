"""Progress reporting without printing from library code: the CLI passes one made by :func:`for_stream`, a
rich bar on a terminal and plain lines at intervals elsewhere (CI, nohup, a log file)."""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Callable, Iterator, Protocol, TextIO


class Task(Protocol):
    def advance(self, n: int = 1, **fields) -> None: ...


class Progress(Protocol):
    def task(self, description: str, total: int) -> contextlib.AbstractContextManager[Task]: ...

    def message(self, text: str) -> None: ...


class _NullTask:
    def advance(self, n: int = 1, **fields) -> None:
        pass


class NullProgress:
    @contextlib.contextmanager
    def task(self, description: str, total: int) -> Iterator[_NullTask]:
        yield _NullTask()

    def message(self, text: str) -> None:
        pass


class RichProgress:
    """A rich progress bar per task; ``fields`` (e.g. loss=0.12) are shown after the bar."""

    def __init__(self, console=None) -> None:
        self.console = console

    def message(self, text: str) -> None:
        if self.console is not None:
            self.console.print(text, markup=False, highlight=False)

    @contextlib.contextmanager
    def task(self, description: str, total: int):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as RP, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        with RP(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[info]}"),
                console=self.console, transient=False) as rp:
            tid = rp.add_task(description, total=total, info="")

            class _T:
                shown: dict = {}

                def advance(self, n: int = 1, **fields) -> None:
                    self.shown.update(fields)  # fields not given this time keep their last value
                    rp.update(tid, advance=n, info=_fields(self.shown))

            yield _T()


def duration(seconds: float) -> str:
    """``1h02m``, ``3m05s``, ``42s``: a span as a person reads it."""
    s = int(round(max(0.0, seconds)))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _fields(shown: dict) -> str:
    return " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items())


class LineProgress:
    """Plain lines where no terminal shows a bar: a task's first step, then at most one line per
    ``interval_s`` seconds, and its last step, each with the count, elapsed time and the ETA the rate so far
    gives: ``synthesis: 120/512 (23%) 2m10s elapsed, ETA 7m05s loss=0.31``. ``clock`` is injectable."""

    def __init__(self, stream: TextIO | None = None, interval_s: float = 15.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream, self.interval_s, self.clock = stream, interval_s, clock

    def message(self, text: str) -> None:
        self._write(text)

    def _write(self, line: str) -> None:
        stream = self.stream or sys.stderr
        stream.write(line + "\n")
        stream.flush()

    @contextlib.contextmanager
    def task(self, description: str, total: int):
        owner, start = self, self.clock()

        class _T:
            done, shown, last = 0, {}, None

            def advance(self, n: int = 1, **fields) -> None:
                self.done += n
                self.shown.update(fields)
                now = owner.clock()
                last_step = self.done >= total
                if self.last is not None and now - self.last < owner.interval_s and not last_step:
                    return
                self.last = now
                spent = now - start
                pct = f" ({100 * self.done / total:.0f}%)" if total else ""
                eta = (f", ETA {duration(spent / self.done * (total - self.done))}"
                       if self.done and not last_step else "")
                info = _fields(self.shown)
                owner._write(f"{description}: {self.done}/{total}{pct} {duration(spent)} elapsed{eta}"
                             f"{' ' + info if info else ''}")

        yield _T()


def for_stream(console=None, interval_s: float = 15.0) -> Progress:
    """A rich bar when ``console`` (rich's, on stderr by default) is a terminal; plain lines otherwise."""
    if console is None:
        from rich.console import Console

        console = Console(stderr=True)
    if console.is_terminal:
        return RichProgress(console)
    return LineProgress(console.file, interval_s)
