"""``switchyard.lm.LanguageModel`` on a tensor-parallel group, driven from rank 0.

The generic engine calls ``prefill``/``decode`` on rank 0 as usual. Each call becomes one ``Command``
broadcast to the other ranks, then runs on rank 0's own shard; the collectives inside the model keep
the ranks in step. Each rank keeps its part of every KV cache under the id rank 0 gave it; the
``TPKVCache`` the engine holds is only that id, and when the engine lets go of one, its id rides along
with the next command so every rank frees its part.

A watchdog thread watches the group: a local follower process that exits, or a ping or step that fails
or outlasts the group's timeout, marks the backend failed. From then ``healthy()`` is False (the node
server turns that into not-ready), in-flight and later calls raise ``RankFailure``, and the surviving
local ranks are stopped.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from cloud_backend.tp_comm import Comm
from cloud_backend.tp_model import ShardedLlama
from cloud_backend.tp_step import NO_CACHE, Command, Op, SeqWork, ShardExecutor
from switchyard.lm import KVCache, Logits, ModelConfig

log = logging.getLogger(__name__)

PING_INTERVAL_S = 1.0
WATCH_INTERVAL_S = 0.1
BLAME_WAIT_S = 0.5
# A step with no collective completing for this long, or a ping unanswered, means a rank hangs.
STALL_S = 5.0
RANK_STOP_GRACE_S = 5.0


class RankFailure(RuntimeError):
    """A tensor-parallel rank died or stopped answering; this backend can't serve until restarted."""


class TPKVCache:
    """A handle on one sequence's cache, whose parts live on every rank under ``cache_id``."""

    __slots__ = ("__weakref__", "cache_id", "length")

    def __init__(self, cache_id: int, length: int) -> None:
        self.cache_id = cache_id
        self.length = length


@dataclass(frozen=True, slots=True)
class RankExit:
    rank: int
    exit_code: int | None


# Reports followers that have exited; empty when all live (or when they can't be seen, as under torchrun).
DeadRanks = Callable[[], list[RankExit]]


def _none_dead() -> list[RankExit]:
    return []


class TPLanguageModel:
    """Rank 0's side of the group; synchronous and not thread-safe, as the contract says."""

    def __init__(
        self,
        comm: Comm,
        model: ShardedLlama,
        *,
        dead_ranks: DeadRanks = _none_dead,
        stop_ranks: Callable[[float], None] = lambda grace_s: None,
        ping_interval_s: float = PING_INTERVAL_S,
        stall_s: float = STALL_S,
    ) -> None:
        self._comm = comm
        self._model = model
        self._executor = ShardExecutor(model, comm.device)
        self._dead_ranks = dead_ranks
        self._stop_ranks = stop_ranks
        self._ping_interval_s = ping_interval_s
        self._stall_s = stall_s
        self._busy_since: float | None = None
        self._lock = threading.Lock()  # one command on the wire at a time (engine step or ping)
        self._freed: collections.deque[int] = collections.deque()
        self._next_id = 0
        self._failure: str | None = None
        self._listeners: list[Callable[[str], None]] = []
        self._closed = threading.Event()
        if comm.world > 1:
            # Wait (up to the group's timeout) for every rank to have loaded its shard, so that load
            # skew between ranks never looks like a hung step.
            comm.send(Command(Op.PING))
            comm.ping()
        self._last_command = time.monotonic()
        self._watchdog = threading.Thread(target=self._watch, name="switchyard-tp-watchdog", daemon=True)
        self._watchdog.start()

    # --- LanguageModel -------------------------------------------------------------------

    @property
    def config(self) -> ModelConfig:
        return self._model.config

    @property
    def context_window(self) -> int:
        return self._model.config.max_position_embeddings

    @property
    def world(self) -> int:
        return self._comm.world

    @property
    def cached_sequences(self) -> int:
        """Caches rank 0 holds a part of (every rank holds the same ids)."""
        return self._executor.cached_sequences

    def prefill(self, token_ids: list[int], cache: KVCache | None = None) -> tuple[Logits, KVCache]:
        if not token_ids:
            raise ValueError("prefill needs at least one token")
        base = _as_tp_cache(cache)
        logits, handles = self._step([(token_ids, base)])
        return logits[0], handles[0]

    def decode(self, token_ids: list[int], caches: list[KVCache]) -> tuple[Logits, list[KVCache]]:
        if len(token_ids) != len(caches):
            raise ValueError(f"{len(token_ids)} tokens for {len(caches)} caches")
        if not token_ids:
            return np.zeros((0, self.config.vocab_size), dtype=np.float32), []
        bases = [_as_tp_cache(c) for c in caches]
        logits, handles = self._step([([t], b) for t, b in zip(token_ids, bases, strict=True)])
        return logits, list(handles)

    # --- health and lifecycle ------------------------------------------------------------

    def healthy(self) -> bool:
        return self._failure is None and not self._closed.is_set()

    @property
    def failure(self) -> str | None:
        return self._failure

    def on_failure(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(reason)`` (on a background thread) when the group fails; at once if it has."""
        self._listeners.append(callback)
        if self._failure is not None:
            callback(self._failure)

    def close(self) -> None:
        """Tell the followers to stop and leave the group."""
        if self._closed.is_set():
            return
        self._closed.set()
        with self._lock:
            if self._failure is None:
                try:
                    self._comm.send(Command(Op.STOP))
                except Exception as exc:
                    log.warning("could not tell tensor-parallel followers to stop: %s", exc)
        self._watchdog.join(timeout=5)
        # Followers leave on STOP; after a failure they get no grace (they'd only wait for a dead group).
        self._stop_ranks(RANK_STOP_GRACE_S if self._failure is None else 0.0)
        self._comm.close()

    # --- internals -----------------------------------------------------------------------

    def _step(self, seqs: Sequence[tuple[list[int], TPKVCache | None]]) -> tuple[Logits, list[TPKVCache]]:
        for tokens, base in seqs:
            length = (0 if base is None else base.length) + len(tokens)
            if length > self.context_window:
                raise ValueError(
                    f"{length - len(tokens)} cached + {len(tokens)} new tokens exceed the context window "
                    f"of {self.context_window}"
                )
        with self._lock:
            self._raise_if_failed()
            work: list[SeqWork] = []
            handles: list[TPKVCache] = []
            for tokens, base in seqs:
                self._next_id += 1
                work.append(
                    SeqWork(self._next_id, NO_CACHE if base is None else base.cache_id, tuple(tokens))
                )
                handle = TPKVCache(self._next_id, (0 if base is None else base.length) + len(tokens))
                weakref.finalize(handle, self._freed.append, self._next_id)
                handles.append(handle)
            frees = tuple(self._drain_freed())
            cmd = Command(Op.STEP, tuple(work), frees)
            self._busy_since = time.monotonic()
            try:
                if self.world > 1:
                    self._comm.send(cmd)
                hidden = self._executor.run(cmd)
                assert hidden is not None
                with torch.inference_mode():
                    logits: Logits = self._model.logits(hidden).float().cpu().numpy()
            except Exception as exc:
                self._fail(self._blame(f"a tensor-parallel step failed: {type(exc).__name__}: {exc}"))
                raise RankFailure(self._failure) from exc
            finally:
                self._busy_since = None
                self._last_command = time.monotonic()
        return logits, handles

    def _drain_freed(self) -> list[int]:
        out: list[int] = []
        while self._freed:
            out.append(self._freed.popleft())
        return out

    def _raise_if_failed(self) -> None:
        if self._closed.is_set():
            raise RankFailure("the tensor-parallel backend is closed")
        if self._failure is not None:
            raise RankFailure(self._failure)

    def _fail(self, reason: str) -> None:
        if self._failure is not None:
            return
        self._failure = reason
        log.error("%s; the cloud backend is not ready until restarted", reason)
        for callback in list(self._listeners):
            callback(reason)
        # The group can't recover from a lost rank: stop the local survivors rather than leave them waiting.
        threading.Thread(target=self._stop_ranks, args=(0.0,), name="switchyard-tp-stop", daemon=True).start()

    def _blame(self, error: str) -> str:
        """Name the rank that died when a collective failed because of it (its exit lands a moment later)."""
        deadline = time.monotonic() + BLAME_WAIT_S
        while not (dead := self._dead_ranks()) and time.monotonic() < deadline:
            time.sleep(0.02)
        if not dead:
            return error
        for d in dead:
            log.error("tensor-parallel rank %d died (exit code %s)", d.rank, d.exit_code)
        return f"rank {dead[0].rank} died (exit code {dead[0].exit_code}); {error}"

    def _watch(self) -> None:
        while not self._closed.wait(WATCH_INTERVAL_S) and self._failure is None:
            dead = self._dead_ranks()
            if dead:
                for d in dead:
                    log.error("tensor-parallel rank %d died (exit code %s)", d.rank, d.exit_code)
                first = dead[0]
                self._fail(f"rank {first.rank} died (exit code {first.exit_code})")
                return
            busy_since = self._busy_since
            now = time.monotonic()
            if busy_since is not None and now - max(busy_since, self._comm.last_progress) > self._stall_s:
                # The engine thread is still waiting in a collective (until the group's timeout); the
                # node goes not-ready now.
                stalled = f"a tensor-parallel step made no progress for {self._stall_s:.0f}s"
                self._fail(f"{stalled}: a rank stopped answering")
                return
            if self.world > 1 and now - self._last_command >= self._ping_interval_s:
                self._ping()

    def _ping(self) -> None:
        # A busy engine proves the group is alive with every step; only an idle group needs a ping.
        if not self._lock.acquire(blocking=False):
            return
        try:
            if self._failure is None and not self._closed.is_set():
                cmd = Command(Op.PING, frees=tuple(self._drain_freed()))
                self._comm.send(cmd, timeout_s=self._stall_s)
                self._executor.run(cmd)
                self._comm.ping(timeout_s=self._stall_s)
        except Exception as exc:
            self._fail(self._blame(f"a tensor-parallel rank stopped answering: {type(exc).__name__}: {exc}"))
        finally:
            self._last_command = time.monotonic()
            self._lock.release()


def _as_tp_cache(cache: KVCache | None) -> TPKVCache | None:
    if cache is None or isinstance(cache, TPKVCache):
        return cache
    raise TypeError(f"expected a TPKVCache, got {type(cache).__name__}")
