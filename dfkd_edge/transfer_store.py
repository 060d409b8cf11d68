"""The transfer set on disk, written and read in batches so memory does not grow with its size.

The file stays an ordinary ``.npz`` (``np.load(path, allow_pickle=False)`` reads it): members
``x``, ``logits``, ``holdout`` and ``method``, stored uncompressed. :func:`write_transfer_set`
streams ``x`` into it batch by batch; :class:`TransferSetFile` reads rows of ``x`` by offset with
``os.pread`` (not mmap, so pages read once do not stay resident in the process), while the small
members (logits: N x classes, the holdout mask) are loaded whole.
"""

from __future__ import annotations

import os
import struct
import zipfile
from pathlib import Path
from typing import Iterable

import numpy as np

from dfkd_edge.errors import UserError
from dfkd_edge.io import atomic_path


def write_transfer_set(path: str | Path, batches: Iterable[np.ndarray], n: int, input_shape: tuple[int, ...],
                       logits, holdout: np.ndarray, method: str) -> None:
    """Write the transfer set, pulling ``x`` from ``batches`` one batch at a time (atomically).

    ``logits`` is an array, or a callable returning it once every batch has been pulled (so a
    caller can label each batch as it streams past)."""
    header = {"descr": np.lib.format.dtype_to_descr(np.dtype(np.float32)), "fortran_order": False,
              "shape": (int(n), *map(int, input_shape))}
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as z:
        written = 0
        with z.open("x.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_2_0(f, header)
            for b in batches:
                b = np.ascontiguousarray(b, dtype=np.float32)
                f.write(b.tobytes())
                written += len(b)
        if written != n:
            raise RuntimeError(f"transfer set: wrote {written} rows, expected {n}")
        logits = logits() if callable(logits) else logits
        for name, arr in (("logits", logits.astype(np.float32)), ("holdout", holdout.astype(bool)),
                          ("method", np.array(method))):
            with z.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, arr, allow_pickle=False)


class TransferSetFile:
    """A transfer set read lazily: ``rows(idx)`` reads just those inputs from disk."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            with np.load(self.path, allow_pickle=False) as z:
                self.logits = z["logits"].astype(np.float32)
                self.holdout = z["holdout"].astype(bool)
                self.method = str(z["method"])
            self._locate_x()
        except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
            raise UserError(f"{self.path} is not a dfkd-edge transfer set ({e}); re-run synthesis") from None
        self.train_idx = np.flatnonzero(~self.holdout)
        self.hold_idx = np.flatnonzero(self.holdout)

    def _locate_x(self) -> None:
        with zipfile.ZipFile(self.path) as z:
            info = z.getinfo("x.npy")
        with open(self.path, "rb") as f:
            f.seek(info.header_offset)
            local = f.read(30)
            if local[:4] != b"PK\x03\x04":
                raise ValueError("bad zip local header")
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            f.seek(info.header_offset + 30 + name_len + extra_len)
            if info.compress_type != zipfile.ZIP_STORED:
                raise ValueError("x is compressed; transfer sets are written uncompressed")
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f)
            if fortran or dtype != np.float32:
                raise ValueError(f"x must be C-ordered float32, got {dtype}")
            self._offset = f.tell()
        self.shape = tuple(shape)
        self.input_shape = self.shape[1:]
        self._row_bytes = int(np.prod(self.input_shape, dtype=np.int64)) * 4

    def __len__(self) -> int:
        return self.shape[0]

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """Inputs at ``idx`` (in that order), float32 (len(idx), *input_shape)."""
        idx = np.asarray(idx, dtype=np.int64)
        out = np.empty((len(idx), *self.input_shape), dtype=np.float32)
        flat = out.reshape(len(idx), -1)
        fd = os.open(self.path, os.O_RDONLY)
        try:
            for j, i in enumerate(idx):
                buf = os.pread(fd, self._row_bytes, self._offset + int(i) * self._row_bytes)
                flat[j] = np.frombuffer(buf, dtype=np.float32)
        finally:
            os.close(fd)
        return out

    def subset(self, idx: np.ndarray) -> "Rows":
        return Rows(self, np.asarray(idx, dtype=np.int64))

    @property
    def train(self) -> tuple["Rows", np.ndarray]:
        """(rows of the training part, their logits): rows are read from disk batch by batch."""
        return self.subset(self.train_idx), self.logits[self.train_idx]

    @property
    def held_out(self) -> tuple[np.ndarray, np.ndarray]:
        """The held-out part, in memory (it is small)."""
        return self.rows(self.hold_idx), self.logits[self.hold_idx]


class Rows:
    """A view of some rows of a TransferSetFile: ``len()`` and ``take(positions)``."""

    def __init__(self, store: TransferSetFile, idx: np.ndarray) -> None:
        self.store, self.idx = store, idx
        self.shape = (len(idx), *store.input_shape)

    def __len__(self) -> int:
        return len(self.idx)

    def take(self, positions) -> np.ndarray:
        return self.store.rows(self.idx[np.asarray(positions, dtype=np.int64)])


def take(x, idx: np.ndarray) -> np.ndarray:
    """Rows ``idx`` of an array, or of a row source read from disk (``Rows``)."""
    return x.take(idx) if hasattr(x, "store") else x[idx]
