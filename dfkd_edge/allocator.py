"""Keep freed memory in the process instead of handing it back to the system at every free.

glibc's malloc serves a request above its mmap threshold (at most 32 MB) with a fresh mapping and unmaps it on
free, so the next tensor of that size faults in every page again. At 224x224 most activations of a batch are
above it: ``dfkd-edge inspect`` on ResNet-50 took 7.9 million minor page faults and 24.7 s; with mappings off and
the heap trimmed only above 1 GB, 0.43 million and 13.7 s, its peak memory 1.3 GB -> 1.6 GB (docs/benchmarks.md,
"Why does the CLI change how memory is allocated?"). The CLI calls :func:`keep_freed_memory` once at start;
the Python API leaves the process's allocator alone.
"""

from __future__ import annotations

import ctypes
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc's mallopt parameters
#: free memory at the top of the heap is handed back above this
TRIM_BYTES = 1 << 30


def keep_freed_memory(trim_bytes: int = TRIM_BYTES) -> bool:
    """Serve every allocation from the heap and trim it only above ``trim_bytes``; True when set. Nothing is
    changed off glibc, or when the user chose an allocator (LD_PRELOAD) or malloc settings (MALLOC_* variables)."""
    if not sys.platform.startswith("linux") or os.environ.get("LD_PRELOAD"):
        return False
    if any(k.startswith("MALLOC_") for k in os.environ):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, int(trim_bytes)))
