"""``torchrun ... -m dfkd_edge convert``: synthesis and distillation on torch.distributed.

One process per rank, started by torchrun (single or multi node, its usual rendezvous flags);
this module reads the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE)
and joins the process group: NCCL when the ranks compute on GPUs, gloo on CPUs.

Rank 0 is the *leader*: it runs ``convert`` exactly as a single process does and is the only rank
that writes into ``--out`` (every artifact, the manifest, the report). The other ranks are
*followers*: they load the same teacher(s) and wait for the leader's commands, which come only for
the two stages that scale out:

* ``synthesize`` — the transfer set's batches are dealt round-robin (batch i to rank i mod N); each
  rank draws its batches from its own random stream (rank 0 keeps the single-process seed, rank r
  a seed derived from (seed, r)) and checkpoints them under ``--out/.partial/.../rank-r`` (a
  follower on another node keeps them on its own disk; they are working files, removed when the
  set is written); the leader gathers the batches in order over point-to-point messages, labels
  them with the teacher and streams the set to its file;
* ``distill`` (and the plain-KD baseline) — DistributedDataParallel: every rank draws the same
  epoch permutation, takes every N-th sample of each global batch (so the optimisation sees the
  single-process batch size and step count), and gradients are averaged. The leader sends the
  training rows to followers once, in chunks; they keep them in a private temporary file.

Stages that do not scale out (inspect's file, export, calibration, TensorRT artifacts, latency,
report) run on the leader alone; followers idle, so latency is measured on a quiet machine. When
the leader stops on an error outside a collective it tells the followers, which stop with the same
kind of error; torchrun reports any failed rank with its own exit code (1).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as tdist

from dfkd_edge.errors import PipelineError, UserError
from dfkd_edge.transfer_store import TransferSetFile, take, write_transfer_set

log = logging.getLogger(__name__)

#: rows per message when the leader sends the transfer set to followers
CHUNK_ROWS = 1024
#: how long a rank waits for the others in one collective before torch.distributed gives up
WAIT_MINUTES = 180


def rank_seed(seed: int, rank: int) -> int:
    """The random stream of a rank: rank 0 keeps ``seed`` (a single process is rank 0 of 1)."""
    return seed if rank == 0 else (seed * 1_000_003 + rank * 7_919) % (2**63 - 1)


@dataclass
class Dist:
    """This process's place in the job; ``Dist()`` is a single process (every call a no-op)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1
    backend: str | None = None
    #: digests of transfer sets the followers already hold (leader side)
    shared: set = field(default_factory=set)
    #: the followers wait for commands (after agree(None), until "done")
    ready: bool = False
    #: inside a collective stage: a failure here cannot be announced (torchrun stops the ranks)
    busy: bool = False
    #: the group for this module's own messages, all CPU tensors: the default group under gloo, a gloo
    #: group beside NCCL's (NCCL carries GPU tensors only; DDP uses the default group)
    group: object = None

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_leader(self) -> bool:
        return self.rank == 0

    def to_dict(self) -> dict:
        return {"world_size": self.world, "backend": self.backend, "nodes": max(1, self.world // max(1, self.local_world))}

    # ------------------------------------------------------------------ commands (leader -> followers)
    def agree(self, error: BaseException | None) -> None:
        """Every rank, once, after loading what it needs: if any rank failed, every rank raises (the
        failing one its own error, the others a UserError/PipelineError naming it). Then the followers
        wait for commands."""
        if not self.enabled:
            return
        mine = None if error is None else _told(error)
        everyone = [None] * self.world
        tdist.all_gather_object(everyone, mine, group=self.group)
        failed = [(r, e) for r, e in enumerate(everyone) if e is not None]
        if error is not None:
            return  # the caller re-raises its own
        if failed:
            r, (kind, msg) = failed[0]
            raise _stopped(r, kind, msg)
        self.ready = True

    @contextlib.contextmanager
    def collective(self):
        self.busy = True
        try:
            yield
        finally:
            self.busy = False

    def command(self, name: str, **payload) -> None:
        """Leader: tell every follower what to do next (a no-op in a single process or once "done")."""
        if self.enabled and self.ready:
            tdist.broadcast_object_list([(name, payload)], src=0, group=self.group)
            if name in ("done", "abort"):
                self.ready = False

    def next_command(self) -> tuple[str, dict]:
        box = [None]
        tdist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def from_leader(self, compute):
        """``compute()`` on the leader alone, its value on every rank (the followers wait for it); a failure there
        is raised on every rank (theirs a UserError or PipelineError naming it)."""
        if not self.enabled:
            return compute()
        box = [None]
        if self.is_leader:
            try:
                box = [("ok", compute())]
            except Exception as e:
                tdist.broadcast_object_list([("error", _told(e))], src=0, group=self.group)
                raise
        tdist.broadcast_object_list(box, src=0, group=self.group)
        if box[0][0] == "error":
            raise _stopped(0, *box[0][1])
        return box[0][1]

    def all_sum(self, values: list[float]) -> list[float]:
        if not self.enabled:
            return values
        t = torch.tensor(values, dtype=torch.float64)
        tdist.all_reduce(t, group=self.group)
        return t.tolist()

    # ------------------------------------------------------------------ synthesis: batches to the leader
    def gather_batches(self, sizes: list[int], shape: tuple[int, ...], load):
        """Yield every batch in order on the leader; on a follower, send its own batches and yield nothing.

        ``load(i)`` returns this rank's batch i (from memory or its checkpoint)."""
        for i, n in enumerate(sizes):
            owner = i % self.world
            if self.is_leader:
                if owner == 0:
                    yield load(i)
                else:
                    buf = torch.empty((n, *shape), dtype=torch.float32)
                    tdist.recv(buf, src=owner, group=self.group)
                    yield buf.numpy()
            elif owner == self.rank:
                tdist.send(_f32(load(i)), dst=0, group=self.group)

    # ------------------------------------------------------------------ distillation: the training rows
    def share_rows(self, x, logits: np.ndarray, digest: str, workdir: Path | None):
        """Leader: send (x, logits) to followers unless they already hold ``digest``. Follower: receive
        them into a private file under ``workdir`` (kept for the same digest); returns (rows, logits)."""
        if not self.enabled:
            return x, logits
        box = [(digest, len(logits), logits.shape[1], tuple(x.shape[1:]), digest in self.shared)
               if self.is_leader else None]
        tdist.broadcast_object_list(box, src=0, group=self.group)
        digest, n, classes, shape, held = box[0]
        if self.is_leader:
            if not held:
                for i in range(0, n, CHUNK_ROWS):
                    rows = take(x, np.arange(i, min(n, i + CHUNK_ROWS)))
                    tdist.broadcast(_f32(rows), src=0, group=self.group)
                tdist.broadcast(_f32(logits), src=0, group=self.group)
                self.shared.add(digest)
            return x, logits

        path = workdir / f"rows-{digest[:16]}.npz"
        if not held:
            def chunks():
                for i in range(0, n, CHUNK_ROWS):
                    buf = torch.empty((min(n, i + CHUNK_ROWS) - i, *shape), dtype=torch.float32)
                    tdist.broadcast(buf, src=0, group=self.group)
                    yield buf.numpy()

            def received_logits():
                buf = torch.empty((n, classes), dtype=torch.float32)
                tdist.broadcast(buf, src=0, group=self.group)
                return buf.numpy()

            write_transfer_set(path, chunks(), n, shape, received_logits, np.zeros(n, bool), "received")
        ts = TransferSetFile(path)
        return ts.subset(np.arange(n)), ts.logits


def _told(error: BaseException) -> tuple[str, str]:
    """What a failing rank tells the others: its error's kind and first line."""
    return type(error).__name__, str(error).splitlines()[0] if str(error) else ""


def _stopped(rank: int, kind: str, msg: str) -> Exception:
    """The error another rank raises for ``rank``'s failure (``_told``)."""
    return (UserError if kind == "UserError" else PipelineError)(f"rank {rank} stopped: {msg}")


def _f32(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))


def from_env() -> Dist:
    """The job torchrun describes in the environment (a single process when it describes none)."""
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", str(world)))
    except ValueError as e:
        raise UserError(f"torchrun's environment is malformed ({e})") from None
    return Dist(rank=rank, world=world, local_rank=local_rank, local_world=local_world)


def init(d: Dist, cuda: bool) -> Dist:
    """Join the process group torchrun set up: NCCL for GPUs, gloo for CPUs."""
    if not d.enabled or tdist.is_initialized():
        if d.enabled:
            d.backend = tdist.get_backend()
        return d
    if "MASTER_ADDR" not in os.environ:
        raise UserError("WORLD_SIZE > 1 but no MASTER_ADDR: start the ranks with torchrun "
                        "(torchrun --nproc-per-node N -m dfkd_edge convert ...)")
    d.backend = "nccl" if cuda else "gloo"
    if cuda:
        torch.cuda.set_device(d.local_rank)
    # followers wait while the leader alone labels and writes the transfer set or fits the virtual
    # generator: at scale that can outlast the default 30 minutes
    timeout = timedelta(minutes=WAIT_MINUTES)
    tdist.init_process_group(d.backend, timeout=timeout)
    if cuda:  # this module's messages are CPU tensors and objects: they go over gloo
        d.group = tdist.new_group(backend="gloo", timeout=timeout)
    return d


def shutdown(d: Dist) -> None:
    if d.enabled and tdist.is_initialized():
        tdist.destroy_process_group()


class Workdir:
    """A follower's private temporary directory (the rows it receives), removed at the end."""

    def __init__(self) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="dfkd-rank-"))

    def close(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


__all__ = ["Dist", "Workdir", "from_env", "init", "shutdown", "rank_seed"]
