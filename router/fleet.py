"""The set of nodes the router can send to, and the choice of one node within a tier."""

from __future__ import annotations

from collections.abc import Iterable

from router.upstream.node_client import NodeClient


class Fleet:
    def __init__(self, clients: Iterable[NodeClient] = ()) -> None:
        self._clients: dict[str, NodeClient] = {c.id: c for c in clients}

    def all(self) -> list[NodeClient]:
        return list(self._clients.values())

    def get(self, node_id: str) -> NodeClient | None:
        return self._clients.get(node_id)

    def add(self, client: NodeClient) -> None:
        self._clients[client.id] = client

    def remove(self, node_id: str) -> NodeClient | None:
        return self._clients.pop(node_id, None)

    def healthy(self, tier: str) -> list[NodeClient]:
        """Connected nodes of ``tier`` that take new streams (not draining)."""
        return [c for c in self._clients.values() if c.kind == tier and c.connected and not c.load.draining]

    def any_healthy(self) -> bool:
        return any(c.connected for c in self._clients.values())

    def pick(self, tier: str, *, exclude: frozenset[str] = frozenset()) -> NodeClient | None:
        """The healthy node of ``tier`` with the least outstanding work relative to its capacity."""
        best: NodeClient | None = None
        best_score = float("inf")
        for c in self.healthy(tier):
            if c.id in exclude:
                continue
            # The router's own open streams are current; the node's report adds other routers' work.
            work = max(c.outstanding, c.load.active) + c.load.queued
            score = work / max(1, c.load.capacity)
            if score < best_score:
                best, best_score = c, score
        return best

    def queue_depth(self, tier: str) -> int:
        nodes = self.healthy(tier)
        return min((c.load.queued for c in nodes), default=0)

    def context_window(self, tier: str) -> int:
        return max((c.context_window for c in self.healthy(tier)), default=0)
