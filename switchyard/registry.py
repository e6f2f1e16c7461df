"""The fleet registry in Redis: how nodes announce themselves and how routers find them.

Each node keeps ``{prefix}node:{id}`` (a msgpack ``NodeRecord``) alive with a heartbeat every
``HEARTBEAT_S`` and a TTL of ``RECORD_TTL_S``, and lists its id in the set ``{prefix}nodes``. A node
that stops heartbeating vanishes when its record expires; routers poll every second, so they see a
new node within about a second and drop a silent one within ``RECORD_TTL_S`` plus a poll.

This module only defines the layout and records; the node side (``NodeAnnouncer``) and the router
side (``router.discovery``) hold the Redis clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import msgpack

log = logging.getLogger(__name__)

HEARTBEAT_S = 1.0
RECORD_TTL_S = 6
DEFAULT_PREFIX = "sy:fleet:"


@dataclass(frozen=True, slots=True)
class NodeRecord:
    node_id: str
    kind: str
    url: str  # the node protocol endpoint, ws://host:port/node
    model: str
    context_window: int
    capacity: int
    active: int = 0
    queued: int = 0
    draining: bool = False
    sessions: tuple[str, ...] = ()
    heartbeat_at: float = 0.0

    def encode(self) -> bytes:
        packed: bytes = msgpack.packb(asdict(self))
        return packed

    @classmethod
    def decode(cls, raw: bytes) -> NodeRecord | None:
        try:
            obj = msgpack.unpackb(raw)
            obj["sessions"] = tuple(obj.get("sessions", ()))
            return cls(**obj)
        except Exception:  # a record from a newer or broken node must not stop discovery
            return None


def node_key(prefix: str, node_id: str) -> str:
    return f"{prefix}node:{node_id}"


def index_key(prefix: str) -> str:
    return f"{prefix}nodes"


class NodeAnnouncer:
    """Heartbeats this node's record into Redis until stopped, then removes it."""

    def __init__(
        self, client: Any, record: Callable[[], NodeRecord], *, prefix: str = DEFAULT_PREFIX
    ) -> None:
        self._r = client  # redis.asyncio.Redis
        self._record = record
        self._prefix = prefix
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="fleet-announcer")

    async def beat(self) -> None:
        rec = self._record()
        rec = NodeRecord(**{**asdict(rec), "heartbeat_at": time.time()})
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.set(node_key(self._prefix, rec.node_id), rec.encode(), ex=RECORD_TTL_S)
            pipe.sadd(index_key(self._prefix), rec.node_id)
            await pipe.execute()

    async def _run(self) -> None:
        while True:
            try:
                await self.beat()
            except Exception as exc:  # Redis away: keep serving, keep trying
                log.warning("fleet heartbeat failed: %s", exc)
            await asyncio.sleep(HEARTBEAT_S)

    async def stop(self, node_id: str) -> None:
        """Stop heartbeating and deregister."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(Exception):
            async with self._r.pipeline(transaction=True) as pipe:
                pipe.delete(node_key(self._prefix, node_id))
                pipe.srem(index_key(self._prefix), node_id)
                await pipe.execute()
