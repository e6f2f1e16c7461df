"""``switchyard serve --config FILE``: the router alone, in front of nodes started separately."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from pathlib import Path

from aiohttp import web

from router.config import ConfigError, RouterConfig, load_config
from router.policy import PolicyError
from switchyard.commands.nodes import _install_uvloop

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run the router against nodes listed in a config file")
    p.add_argument("--config", type=Path, required=True, help="router config (YAML); see deploy/router.yaml")
    p.add_argument("--host", default=None, help="override the config's host")
    p.add_argument("--port", type=int, default=None, help="override the config's port")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.config)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    cfg = cfg.model_copy(update=overrides)
    _install_uvloop()
    try:
        asyncio.run(run_router(cfg))
    except PolicyError as exc:
        log.error("%s", exc)
        return 2
    return 0


async def run_router(cfg: RouterConfig, started: asyncio.Event | None = None) -> None:
    """Serve the router until SIGINT/SIGTERM (or until the task is cancelled)."""
    from router.app import create_app

    runner = web.AppRunner(create_app(cfg), handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, cfg.host, cfg.port).start()
    log.info("router listening on http://%s:%d", cfg.host, cfg.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if started is not None:
        started.set()
    try:
        await stop.wait()
    finally:
        await runner.cleanup()
