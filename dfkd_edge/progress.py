"""Progress reporting without printing from library code: the CLI passes a rich-backed one."""

from __future__ import annotations

import contextlib
from typing import Iterator, Protocol


class Task(Protocol):
    def advance(self, n: int = 1, **fields) -> None: ...


class Progress(Protocol):
    def task(self, description: str, total: int) -> contextlib.AbstractContextManager[Task]: ...


class _NullTask:
    def advance(self, n: int = 1, **fields) -> None:
        pass


class NullProgress:
    @contextlib.contextmanager
    def task(self, description: str, total: int) -> Iterator[_NullTask]:
        yield _NullTask()


class RichProgress:
    """A rich progress bar per task; ``fields`` (e.g. loss=0.12) are shown after the bar."""

    def __init__(self, console=None) -> None:
        self.console = console

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
                    info = " ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                    for k, v in self.shown.items())
                    rp.update(tid, advance=n, info=info)

            yield _T()
