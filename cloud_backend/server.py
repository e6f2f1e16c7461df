"""The cloud backend: a torch model folder served over the node protocol, on one device or several.

With ``tp > 1`` (or under torchrun) the model is a ``TPLanguageModel`` whose health the node follows:
when a rank dies the node turns not-ready and refuses new streams, so routers send them elsewhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Protocol

from aiohttp import web

from switchyard.node_server import STATE, NodeOptions, build_node_app

log = logging.getLogger(__name__)

DEFAULT_TP_TIMEOUT_S = 60.0


class _Group(Protocol):
    def on_failure(self, callback: Callable[[str], None]) -> None: ...

    def close(self) -> None: ...


def build_app(
    opts: NodeOptions,
    *,
    warm_up: bool = True,
    tp: int = 1,
    tp_timeout_s: float = DEFAULT_TP_TIMEOUT_S,
    tp_cuda: bool | None = None,
) -> web.Application:
    """The node app; ``tp`` ranks of tensor parallelism (torchrun's WORLD_SIZE when run under it).

    ``tp_cuda=False`` keeps the ranks on the CPU where GPUs are present (default: GPUs when present).
    """
    # torch is heavy: only the backend imports it, and only here.
    from cloud_backend.tp_comm import Rendezvous

    torchrun = Rendezvous.from_torchrun_env()
    if tp == 1 and (torchrun is None or torchrun.world == 1):
        from cloud_backend.torch_lm import load

        return build_node_app(load(opts.model_dir), opts, warm_up=warm_up)
    from cloud_backend.tp_launch import launch

    lm = launch(opts.model_dir, tp, timeout_s=tp_timeout_s, cuda=tp_cuda)
    app = build_node_app(lm, opts, warm_up=warm_up)
    follow_health(app, lm)
    return app


def follow_health(app: web.Application, group: _Group) -> None:
    """Make the node not-ready when ``group`` fails, and close the group after the engine stops."""

    async def close_group(app: web.Application) -> AsyncIterator[None]:
        yield
        await asyncio.to_thread(group.close)

    async def watch(app: web.Application) -> AsyncIterator[None]:
        loop = asyncio.get_running_loop()
        failed: asyncio.Future[str] = loop.create_future()

        def on_failure(reason: str) -> None:  # called on the group's thread
            with contextlib.suppress(RuntimeError):  # the loop may be closed by then
                loop.call_soon_threadsafe(_settle, failed, reason)

        group.on_failure(on_failure)
        task = asyncio.create_task(_mark_not_ready(app, failed))
        yield
        task.cancel()

    # First in, last out: the group outlives the engine that drives it.
    app.cleanup_ctx.insert(0, close_group)
    app.cleanup_ctx.append(watch)


def _settle(future: asyncio.Future[str], reason: str) -> None:
    if not future.done():
        future.set_result(reason)


async def _mark_not_ready(app: web.Application, failed: asyncio.Future[str]) -> None:
    reason = await failed
    state = app[STATE]
    # Refuse new streams and tell routers (load reports carry the flag) to send them elsewhere.
    state.ready = False
    state.draining = True
    log.error("node %s is not ready: %s", state.identity.node_id, reason)


def follow_if_torchrun_rank(model_dir: Path, *, timeout_s: float = DEFAULT_TP_TIMEOUT_S) -> int | None:
    """Under torchrun, ranks other than 0 follow rank 0 here (returning an exit code); else ``None``."""
    from cloud_backend.tp_worker import follower_rendezvous, run_follower

    rdv = follower_rendezvous()
    if rdv is None:
        return None
    return run_follower(model_dir, rdv, timeout_s=timeout_s)
