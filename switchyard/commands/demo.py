"""``switchyard demo``: the whole system on one machine.

Builds the demo models if missing, starts one edge node and the cloud backend as child processes,
runs the router in this process (Redis when ``--redis-url`` is given, in-memory otherwise), and
shuts everything down on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from router.config import NodeEndpoint, RouterConfig
from switchyard.commands.nodes import _install_uvloop
from switchyard.commands.serve import run_router
from switchyard.paths import POLICIES_DIR, default_data_dir

log = logging.getLogger(__name__)

NODE_START_TIMEOUT_S = 180.0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("demo", help="run router + edge node + cloud backend on this machine")
    p.add_argument("--host", default="127.0.0.1", help="router address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="router port (default 8080)")
    p.add_argument("--redis-url", default=None, help="keep sessions in this Redis (default: in memory)")
    p.add_argument("--data-dir", type=Path, default=None, help="where built models are cached")
    p.add_argument("--policy", type=Path, default=POLICIES_DIR / "default.yaml")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from switchyard.modelbuild.build import ensure_models

    data_dir = args.data_dir or default_data_dir()
    models = ensure_models(data_dir)
    secret = secrets.token_urlsafe(24)
    env = {**os.environ, "SWITCHYARD_CLUSTER_SECRET": secret, "PYTHONUNBUFFERED": "1"}
    nodes = [("edge", "edge-1", models.edge, _free_port()), ("cloud", "cloud-1", models.cloud, _free_port())]
    children: list[subprocess.Popen[bytes]] = []
    try:
        for kind, node_id, model_dir, port in nodes:
            cmd = [
                sys.executable,
                "-m",
                "switchyard.cli",
                "--log-level",
                args.log_level,
                "--log-format",
                args.log_format,
                kind,
                "--model",
                str(model_dir),
                "--port",
                str(port),
                "--node-id",
                node_id,
            ]
            children.append(subprocess.Popen(cmd, env=env))
        for (kind, node_id, _, port), child in zip(nodes, children, strict=True):
            if not _wait_ready(port, child):
                log.error("%s node %s did not become ready", kind, node_id)
                return 1
        cfg = RouterConfig(
            host=args.host,
            port=args.port,
            redis_url=args.redis_url,
            policy=args.policy,
            tokenizer=models.edge / "tokenizer.json",
            nodes=tuple(
                NodeEndpoint(id=node_id, url=f"ws://127.0.0.1:{port}/node", kind=kind)
                for kind, node_id, _, port in nodes
            ),
        )
        os.environ["SWITCHYARD_CLUSTER_SECRET"] = secret
        _install_uvloop()
        asyncio.run(_serve(cfg))
        return 0
    finally:
        _stop_children(children)


async def _serve(cfg: RouterConfig) -> None:
    started = asyncio.Event()
    task = asyncio.create_task(run_router(cfg, started))
    await started.wait()
    base = f"http://{cfg.host}:{cfg.port}"
    print(
        f"\nSwitchyard is up.\n"
        f"  chat page:        {base}/\n"
        f"  WebSocket chat:   ws://{cfg.host}:{cfg.port}/v1/chat/ws\n"
        f"  OpenAI API:       {base}/v1  (chat/completions, models)\n"
        f"  health, metrics:  {base}/readyz  {base}/metrics\n"
        f"  sessions:         {'Redis at ' + cfg.redis_url if cfg.redis_url else 'in memory'}\n"
        f"Press Ctrl-C to stop.\n",
        flush=True,
    )
    await task


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(port: int, child: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + NODE_START_TIMEOUT_S
    while time.monotonic() < deadline:
        if child.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
                if resp.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.2)
    return False


def _stop_children(children: list[subprocess.Popen[bytes]]) -> None:
    for child in children:
        if child.poll() is None:
            child.send_signal(signal.SIGTERM)
    for child in children:
        try:
            child.wait(timeout=15)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
