"""The tensor-parallel process group: gloo on CPU, NCCL on GPUs (one per rank), with deadlines.

Activations are summed on the compute group (NCCL or gloo). Commands from rank 0 travel on a gloo
group on the CPU, so a rank waiting for work never holds a GPU stream. Every collective has the
group's timeout: a rank that stops answering turns into an error, never a hang.
"""

from __future__ import annotations

import datetime
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from cloud_backend import tp_step
from cloud_backend.tp_step import Command

DEFAULT_TIMEOUT_S = 60.0


@dataclass(frozen=True, slots=True)
class Rendezvous:
    """Where the ranks of one group meet: ``env://`` under torchrun, else a loopback TCP address."""

    rank: int
    world: int
    init_method: str
    local_rank: int
    cuda: bool | None = None  # None: CUDA (NCCL) when available, else CPU (gloo)

    @classmethod
    def from_torchrun_env(cls) -> Rendezvous | None:
        """torchrun's rendezvous (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT) if this is one of its ranks."""
        env = os.environ
        if "RANK" not in env or "WORLD_SIZE" not in env:
            return None
        rank, world = int(env["RANK"]), int(env["WORLD_SIZE"])
        return cls(rank, world, "env://", int(env.get("LOCAL_RANK", rank)))

    @classmethod
    def loopback(cls, world: int, *, cuda: bool | None = None) -> Rendezvous:
        """Rank 0's rendezvous for ``world`` ranks on this machine, on a free loopback port."""
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        return cls(0, world, f"tcp://127.0.0.1:{port}", 0, cuda)

    def for_rank(self, rank: int) -> Rendezvous:
        return Rendezvous(rank, self.world, self.init_method, rank, self.cuda)


def device_for(local_rank: int, cuda: bool | None = None) -> torch.device:
    if cuda is None:
        cuda = torch.cuda.is_available()
    if cuda:
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")


class Comm:
    """This rank's membership of the group; ``close`` leaves it."""

    def __init__(self, rdv: Rendezvous, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.rank = rdv.rank
        self.world = rdv.world
        self.device = device_for(rdv.local_rank, rdv.cuda)
        timeout = datetime.timedelta(seconds=timeout_s)
        backend = "nccl" if self.device.type == "cuda" else "gloo"
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        dist.init_process_group(
            backend, init_method=rdv.init_method, rank=rdv.rank, world_size=rdv.world, timeout=timeout
        )
        self._control = dist.new_group(backend="gloo", timeout=timeout) if backend == "nccl" else None
        # When a collective last completed: a step that stops making progress means a rank stopped.
        self.last_progress = time.monotonic()

    def all_reduce(self, x: Tensor) -> Tensor:
        dist.all_reduce(x)
        self.last_progress = time.monotonic()
        return x

    def send(self, cmd: Command, timeout_s: float | None = None) -> None:
        """Rank 0: broadcast ``cmd`` to every other rank; raises after ``timeout_s`` (else the group's)."""
        header, payload = tp_step.encode(cmd)
        self._broadcast(header, timeout_s)
        if payload.numel():
            self._broadcast(payload, timeout_s)

    def _broadcast(self, x: Tensor, timeout_s: float | None) -> None:
        work = dist.broadcast(x, src=0, group=self._control, async_op=True)
        assert work is not None
        _wait(work, timeout_s)

    def receive(self) -> Command:
        """Other ranks: wait for rank 0's next command (at most the group's timeout)."""
        header = torch.zeros(tp_step.HEADER_SIZE, dtype=torch.int64)
        dist.broadcast(header, src=0, group=self._control)
        payload = torch.zeros(tp_step.payload_size(header), dtype=torch.int64)
        if payload.numel():
            dist.broadcast(payload, src=0, group=self._control)
        return tp_step.decode(header, payload)

    def ping(self, timeout_s: float | None = None) -> None:
        """All ranks: sum one number; returns when every rank took part, raises after ``timeout_s``."""
        token = torch.ones(1, dtype=torch.int64)
        work = dist.all_reduce(token, group=self._control, async_op=True)
        assert work is not None
        _wait(work, timeout_s)
        if int(token.item()) != self.world:
            raise RuntimeError(f"ping summed to {int(token.item())}, expected {self.world}")

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


def _wait(work: Any, timeout_s: float | None) -> None:
    if timeout_s is None:
        work.wait()
    else:
        work.wait(timeout=datetime.timedelta(seconds=timeout_s))
