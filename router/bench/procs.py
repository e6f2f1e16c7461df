"""Processes of ``switchyard bench router``: the fake upstreams and the router, each on its own CPUs.

The router runs as ``switchyard serve`` (the deployed entry point: uvloop, INFO logs to a file) in
its own process pinned to one CPU; the fake upstreams and the load generator share the other CPUs.
So the router's work never competes with the load it is measured under, and going direct measures
the same fake upstream and client on the same CPUs without the router.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import aiohttp
import yaml

READY_TIMEOUT_S = 30.0


@dataclass(frozen=True, slots=True)
class CpuLayout:
    """Which CPUs the router gets and which the fake upstreams and the load generator share."""

    router: tuple[int, ...]
    others: tuple[int, ...]
    pinned: bool

    def as_json(self) -> dict[str, Any]:
        return {
            "pinned": self.pinned,
            "router_cpus": list(self.router),
            "client_and_fakes_cpus": list(self.others),
        }


def cpu_layout(pin: bool) -> CpuLayout:
    cpus = tuple(sorted(os.sched_getaffinity(0))) if hasattr(os, "sched_getaffinity") else ()
    if not pin or len(cpus) < 2:
        return CpuLayout(router=cpus, others=cpus, pinned=False)
    return CpuLayout(router=cpus[-1:], others=cpus[:-1], pinned=True)


def pin(pid: int, cpus: tuple[int, ...]) -> None:
    if cpus and hasattr(os, "sched_setaffinity"):
        with contextlib.suppress(OSError):  # the process may have exited already
            os.sched_setaffinity(pid, cpus)


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time of a process (all its threads) so far; ``None`` where unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # Fields 14 and 15 of stat(5) (utime, stime), counted after the ")" that ends the command name.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Child:
    name: str
    proc: asyncio.subprocess.Process
    log_path: Path | None = None

    async def stop(self, grace_s: float = 10.0) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), grace_s)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()

    def log_tail(self, chars: int = 2000) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")[-chars:]


async def start_fakes(*, tokens: int, secret: str, cpus: tuple[int, ...]) -> tuple[Child, int]:
    """Start ``python -m router.bench.fakes``; return it and the port it listens on."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "router.bench.fakes",
        "--tokens",
        str(tokens),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "SWITCHYARD_CLUSTER_SECRET": secret},
    )
    pin(proc.pid, cpus)
    child = Child("fakes", proc)
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), READY_TIMEOUT_S)
        port = int(json.loads(line)["port"])
    except (TimeoutError, ValueError, KeyError) as exc:
        await child.stop()
        raise RuntimeError(f"the fake upstreams did not start: {exc}") from exc
    return child, port


def router_config(*, port: int, policy: Path, upstream: dict[str, Any]) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": port,
        "router_id": "bench-router",
        "policy": str(policy),
        "nodes": [upstream],
        # The fleet registry needs Redis; the bench runs with the in-memory stores.
        "discover_nodes": False,
    }


def native_upstream(port: int) -> dict[str, Any]:
    return {"id": "fake-native", "url": f"ws://127.0.0.1:{port}/node", "kind": "edge"}


def openai_upstream(port: int) -> dict[str, Any]:
    return {
        "id": "fake-openai",
        "url": f"http://127.0.0.1:{port}/v1",
        "kind": "edge",
        "protocol": "openai",
        "model": "fake-instant",
        "max_concurrency": 1024,
    }


async def start_router(
    config: dict[str, Any], workdir: Path, *, secret: str, cpus: tuple[int, ...], log_level: str
) -> Child:
    """Start ``switchyard serve`` on ``config`` and wait until /readyz says its upstream is up."""
    cfg_path = workdir / f"router-{config['port']}.yaml"
    cfg_path.write_text(yaml.safe_dump(config))
    log_path = workdir / f"router-{config['port']}.log"
    log_file: IO[bytes]
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "switchyard.cli",
            "--log-level",
            log_level,
            "serve",
            "--config",
            str(cfg_path),
            stdout=log_file,
            stderr=log_file,
            env={**os.environ, "SWITCHYARD_CLUSTER_SECRET": secret},
        )
    pin(proc.pid, cpus)
    child = Child("router", proc, log_path)
    url = f"http://127.0.0.1:{config['port']}/readyz"
    deadline = time.monotonic() + READY_TIMEOUT_S
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.returncode is not None:
                break
            with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                async with http.get(url, timeout=aiohttp.ClientTimeout(total=1.0)) as resp:
                    if resp.status == 200:
                        return child
            await asyncio.sleep(0.1)
    tail = child.log_tail()
    await child.stop()
    raise RuntimeError(f"the router did not become ready; its log ends with:\n{tail}")
