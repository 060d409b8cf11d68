"""Test-only: stop the process dead at the N-th *instant* of a run, to test crash safety anywhere.

An instant is a point where a kill leaves a different state on disk: just before and just after
each atomic rename (dfkd_edge.io), before and after each manifest write, and each step a stage
reports as progress (a synthesis batch, a distillation epoch). ``DFKD_EDGE_KILL_AT=N`` sends the
process SIGKILL at the N-th instant (no cleanup runs, as with a real kill);
``DFKD_EDGE_COUNT_INSTANTS=FILE`` writes how many instants a run passed, at exit. Neither is
set in normal use, and then :func:`instant` only counts.
"""

from __future__ import annotations

import atexit
import os
import signal

_count = 0
_kill_at = int(os.environ.get("DFKD_EDGE_KILL_AT", "0") or 0)
_count_file = os.environ.get("DFKD_EDGE_COUNT_INSTANTS")


def instant() -> None:
    global _count
    _count += 1
    if _kill_at and _count == _kill_at:
        os.kill(os.getpid(), signal.SIGKILL)


def count() -> int:
    return _count


if _count_file:
    atexit.register(lambda: open(_count_file, "w").write(str(_count)))
