"""Start a tensor-parallel group and return rank 0's ``TPLanguageModel``.

Under torchrun (RANK/WORLD_SIZE/MASTER_ADDR/MASTER_PORT in the environment) this process is rank 0 of
the group torchrun made, and the other ranks run ``switchyard cloud`` too, which sends them to
``cloud_backend.tp_worker``. Otherwise rank 0 spawns ``tp - 1`` follower processes on this machine,
meeting them on a free loopback port, and watches them: one that exits takes the backend down.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp

from cloud_backend.tp_comm import DEFAULT_TIMEOUT_S, Comm, Rendezvous
from cloud_backend.tp_lm import STALL_S, RankExit, TPLanguageModel
from cloud_backend.tp_model import load_shard
from cloud_backend.tp_worker import cpu_threads_per_rank, shard_dtype, spawned_main

log = logging.getLogger(__name__)


class LocalRanks:
    """The follower processes rank 0 spawned; ``dead()`` lists those that have exited."""

    def __init__(self, procs: list[Any]) -> None:
        self.procs = procs

    def dead(self) -> list[RankExit]:
        return [RankExit(rank, p.exitcode) for rank, p in enumerate(self.procs, start=1) if not p.is_alive()]

    def stop(self, grace_s: float = 5.0) -> None:
        for p in self.procs:
            p.join(timeout=grace_s)
            if p.is_alive():
                p.terminate()
                p.join(timeout=1.0)
            if p.is_alive():  # stopped or stuck in native code: SIGTERM waits, SIGKILL doesn't
                p.kill()
                p.join(timeout=1.0)

    @property
    def pids(self) -> list[int]:
        return [int(p.pid) for p in self.procs]


def launch(
    model_dir: Path,
    tp: int,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    stall_s: float = STALL_S,
    cuda: bool | None = None,
) -> TPLanguageModel:
    """Rank 0 of a ``tp``-rank group serving ``model_dir`` (torchrun's group when run under torchrun).

    ``cuda=False`` keeps a local group on the CPU (gloo, fp32) even where GPUs are present.
    """
    torchrun = Rendezvous.from_torchrun_env()
    local: LocalRanks | None = None
    if torchrun is not None:
        if torchrun.rank != 0:
            raise RuntimeError(f"rank {torchrun.rank} must follow rank 0, not serve (see tp_worker)")
        if tp not in (1, torchrun.world):
            raise ValueError(f"--tp {tp} differs from torchrun's WORLD_SIZE={torchrun.world}")
        rdv = torchrun
    else:
        if tp < 1:
            raise ValueError(f"--tp must be at least 1, got {tp}")
        gpus = torch.cuda.device_count() if cuda is not False and torch.cuda.is_available() else 0
        if gpus and tp > gpus:
            raise ValueError(f"--tp {tp} needs {tp} GPUs (one per rank), this machine has {gpus}")
        rdv = Rendezvous.loopback(tp, cuda=cuda)
        local = _spawn_followers(model_dir, rdv, timeout_s)
    log.info("tensor-parallel group of %d ranks meeting at %s", rdv.world, rdv.init_method)
    try:
        comm = Comm(rdv, timeout_s=timeout_s)
    except Exception:
        if local is not None:
            local.stop(grace_s=0.0)
        raise
    if local is not None and torch.device("cpu") == comm.device:
        torch.set_num_threads(cpu_threads_per_rank(rdv.world))
    model = load_shard(
        model_dir,
        0,
        rdv.world,
        comm.all_reduce,
        with_head=True,
        device=comm.device,
        dtype=shard_dtype(comm.device),
    )
    if local is None:
        return TPLanguageModel(comm, model, stall_s=stall_s)
    return TPLanguageModel(comm, model, dead_ranks=local.dead, stop_ranks=local.stop, stall_s=stall_s)


def _spawn_followers(model_dir: Path, rdv: Rendezvous, timeout_s: float) -> LocalRanks:
    ctx = mp.get_context("spawn")
    threads = cpu_threads_per_rank(rdv.world)
    level = logging.getLogger().getEffectiveLevel()
    procs = []
    for rank in range(1, rdv.world):
        p = ctx.Process(
            target=spawned_main,
            args=(model_dir, rdv.for_rank(rank), timeout_s, level, threads),
            name=f"switchyard-tp-rank{rank}",
            daemon=True,
        )
        p.start()
        procs.append(p)
    return LocalRanks(procs)
