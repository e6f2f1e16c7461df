"""Ranks 1..N-1 of a tensor-parallel group: load this rank's shard, then follow rank 0's commands.

A follower has no network face of its own. It leaves when rank 0 says stop, and also when rank 0 stops
talking for longer than the group's timeout (rank 0 pings an idle group every second), so a dead rank 0
never leaves followers holding GPUs.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

import torch

from cloud_backend.tp_comm import DEFAULT_TIMEOUT_S, Comm, Rendezvous
from cloud_backend.tp_model import load_shard
from cloud_backend.tp_step import Op, ShardExecutor

log = logging.getLogger(__name__)


def shard_dtype(device: torch.device) -> torch.dtype:
    """bf16 (else fp16) on CUDA, fp32 on CPU: the same choice as ``cloud_backend.torch_lm.load``."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def follow(comm: Comm, executor: ShardExecutor) -> int:
    """Run rank 0's commands until it says stop (0) or can't be heard (1)."""
    while True:
        try:
            cmd = comm.receive()
            if cmd.op == Op.STOP:
                return 0
            if cmd.op == Op.PING:
                comm.ping()
            else:
                executor.run(cmd)
        except Exception as exc:  # any failure leaves the group out of step: leave it
            log.error("tensor-parallel rank %d leaves: lost rank 0 or the group (%s)", comm.rank, exc)
            return 1


def run_follower(model_dir: Path, rdv: Rendezvous, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> int:
    # Ctrl-C and torchrun's SIGTERM reach every rank at once; a follower leaves when rank 0, having
    # drained its streams, says stop (or when rank 0 goes silent), not in the middle of a step.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    comm = Comm(rdv, timeout_s=timeout_s)
    try:
        model = load_shard(
            model_dir,
            comm.rank,
            comm.world,
            comm.all_reduce,
            with_head=False,
            device=comm.device,
            dtype=shard_dtype(comm.device),
        )
        log.info("tensor-parallel rank %d/%d ready on %s", comm.rank, comm.world, comm.device)
        return follow(comm, ShardExecutor(model, comm.device))
    finally:
        comm.close()


def spawned_main(model_dir: Path, rdv: Rendezvous, timeout_s: float, log_level: int, threads: int) -> None:
    """Entry point of a follower process that rank 0 spawned on this machine."""
    logging.basicConfig(
        level=log_level, format=f"%(asctime)s %(levelname)s rank{rdv.rank} %(name)s %(message)s"
    )
    torch.set_num_threads(threads)
    sys.exit(run_follower(model_dir, rdv, timeout_s=timeout_s))


def follower_rendezvous() -> Rendezvous | None:
    """Under torchrun, the rendezvous of a rank other than 0 (which should follow, not serve)."""
    rdv = Rendezvous.from_torchrun_env()
    return rdv if rdv is not None and rdv.rank != 0 and rdv.world > 1 else None


def cpu_threads_per_rank(world: int) -> int:
    return max(1, (os.cpu_count() or 1) // world)
