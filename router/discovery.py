"""Fleet discovery: keeps the router's ``Fleet`` in step with the node registry in Redis.

Every ``POLL_S`` the watcher reads the registered node ids and their records. A new record adds a
node client (it connects in the background); a record that expired removes the client, once the
streams this router has open on it are finished, so a draining node is never cut off mid-reply.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from router.config import NodeEndpoint
from router.fleet import Fleet
from router.upstream.base import Upstream
from switchyard.registry import DEFAULT_PREFIX, NodeRecord, index_key, node_key

log = logging.getLogger(__name__)

POLL_S = 0.5


class RegistryWatcher:
    def __init__(
        self,
        client: Any,
        fleet: Fleet,
        make_client: Callable[[NodeEndpoint], Upstream],
        *,
        prefix: str = DEFAULT_PREFIX,
        static_ids: frozenset[str] = frozenset(),
    ) -> None:
        self._r = client  # redis.asyncio.Redis
        self._fleet = fleet
        self._make_client = make_client
        self._prefix = prefix
        self._static = static_ids  # nodes from the config file: never removed by discovery
        self._retiring: dict[str, Upstream] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="fleet-discovery")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for c in self._retiring.values():
            await c.close()

    async def _run(self) -> None:
        while True:
            try:
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis away: keep the fleet we have, keep trying
                log.warning("fleet discovery failed: %s", exc)
            await asyncio.sleep(POLL_S)

    async def poll(self) -> None:
        ids = sorted(m.decode() for m in await self._r.smembers(index_key(self._prefix)))
        raws = await self._r.mget([node_key(self._prefix, i) for i in ids]) if ids else []
        live: dict[str, NodeRecord] = {}
        gone: list[str] = []
        for node_id, raw in zip(ids, raws, strict=True):
            rec = NodeRecord.decode(raw) if raw is not None else None
            if rec is None:
                gone.append(node_id)
            else:
                live[node_id] = rec
        if gone:  # expired records: drop them from the index too
            await self._r.srem(index_key(self._prefix), *gone)
        for node_id, rec in live.items():
            current = self._fleet.get(node_id)
            if current is not None and current.endpoint.url == rec.url:
                continue
            if current is not None:  # same id, new address: a restarted node
                self._retire(node_id)
            if rec.kind not in ("edge", "cloud"):
                continue
            client = self._make_client(NodeEndpoint(id=node_id, url=rec.url, kind=rec.kind))
            client.start()
            self._fleet.add(client)
            log.info("discovered %s node %s at %s", rec.kind, node_id, rec.url)
        for c in self._fleet.all():
            if c.id not in live and c.id not in self._static:
                log.info("node %s left the registry", c.id)
                self._retire(c.id)
        for node_id, c in list(self._retiring.items()):
            if c.outstanding == 0:
                del self._retiring[node_id]
                await c.close()

    def _retire(self, node_id: str) -> None:
        client = self._fleet.remove(node_id)
        if client is not None:
            # A new client may take the same id; keep the old one until its streams end.
            self._retiring[f"{node_id}#{id(client)}"] = client
