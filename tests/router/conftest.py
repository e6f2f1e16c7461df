"""Fixtures for router tests: real node processes and an in-process router on loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from router.app import create_app
from router.config import NodeEndpoint, RouterConfig
from switchyard.paths import POLICIES_DIR
from tests.ports import free_port

SECRET = "test-cluster-secret"


@dataclass
class NodeProc:
    kind: str
    node_id: str
    port: int
    proc: subprocess.Popen[bytes]

    @property
    def endpoint(self) -> NodeEndpoint:
        return NodeEndpoint(id=self.node_id, url=f"ws://127.0.0.1:{self.port}/node", kind=self.kind)  # type: ignore[arg-type]

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)


def start_node(
    kind: str,
    model_dir: Path,
    node_id: str,
    *,
    secret: str = SECRET,
    extra: tuple[str, ...] = (),
    port: int = 0,
) -> NodeProc:
    port = port or free_port()
    env = {**os.environ, "SWITCHYARD_CLUSTER_SECRET": secret}
    cmd = [
        sys.executable,
        "-m",
        "switchyard.cli",
        "--log-level",
        "WARNING",
        kind,
        "--model",
        str(model_dir),
        "--port",
        str(port),
        "--node-id",
        node_id,
        *extra,
    ]
    proc = subprocess.Popen(cmd, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{kind} node exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as resp:
                if resp.status == 200:
                    return NodeProc(kind, node_id, port, proc)
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"{kind} node did not become ready")


def stop_node(node: NodeProc) -> None:
    if node.proc.poll() is None:
        node.proc.terminate()
        try:
            node.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            node.proc.kill()


@pytest.fixture(scope="session")
def fleet_nodes(demo_models: Any) -> Iterator[dict[str, NodeProc]]:
    """One edge node and one cloud backend, shared by the tests that do not kill them."""
    edge = start_node("edge", demo_models.edge, "edge-1")
    cloud = start_node("cloud", demo_models.cloud, "cloud-1")
    yield {"edge": edge, "cloud": cloud}
    stop_node(edge)
    stop_node(cloud)


@dataclass
class RouterHandle:
    app: web.Application
    runner: web.AppRunner
    port: int

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/chat/ws"

    async def stop(self) -> None:
        await self.runner.cleanup()


StartRouter = Callable[..., Awaitable[RouterHandle]]


@pytest.fixture
async def start_router(monkeypatch: pytest.MonkeyPatch, demo_models: Any) -> AsyncIterator[StartRouter]:
    monkeypatch.setenv("SWITCHYARD_CLUSTER_SECRET", SECRET)
    handles: list[RouterHandle] = []

    async def start(procs: list[NodeProc], *, wait_for: int | None = None, **overrides: Any) -> RouterHandle:
        fields: dict[str, Any] = {
            "port": free_port(),
            "policy": POLICIES_DIR / "default.yaml",
            "tokenizer": demo_models.edge / "tokenizer.json",
            "nodes": tuple(n.endpoint for n in procs),
            **overrides,
        }
        cfg = RouterConfig(**fields)
        runner = web.AppRunner(create_app(cfg))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", cfg.port).start()
        handle = RouterHandle(runner.app, runner, cfg.port)
        handles.append(handle)
        from router.state import FLEET

        want = len(procs) if wait_for is None else wait_for
        for c in runner.app[FLEET].all()[:want]:
            await c.wait_connected(within_s=20)
        return handle

    yield start
    for h in handles:
        await h.stop()
