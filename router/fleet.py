"""The set of nodes the router can send to, their health, and the choice of a node in a tier."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterable

from router.balancer import Candidate, choose
from router.breaker import BreakerConfig, CircuitBreaker
from router.upstream.base import Upstream


class Fleet:
    def __init__(
        self,
        clients: Iterable[Upstream] = (),
        *,
        queue_limit: int = 16,
        breaker: BreakerConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._clients: dict[str, Upstream] = {c.id: c for c in clients}
        self._breakers: dict[str, CircuitBreaker] = {}
        self._breaker_config = breaker or BreakerConfig()
        self.queue_limit = queue_limit
        self._clock = clock
        self._rng = rng or random.Random()

    def all(self) -> list[Upstream]:
        return list(self._clients.values())

    def get(self, node_id: str) -> Upstream | None:
        return self._clients.get(node_id)

    def add(self, client: Upstream) -> None:
        self._clients[client.id] = client

    def remove(self, node_id: str) -> Upstream | None:
        self._breakers.pop(node_id, None)
        return self._clients.pop(node_id, None)

    def healthy(self, tier: str) -> list[Upstream]:
        """Connected nodes of ``tier`` that take new streams (not draining)."""
        return [c for c in self._clients.values() if c.kind == tier and c.connected and not c.load.draining]

    def any_healthy(self) -> bool:
        return any(c.connected for c in self._clients.values())

    def breaker(self, node_id: str) -> CircuitBreaker:
        b = self._breakers.get(node_id)
        if b is None:
            b = self._breakers[node_id] = CircuitBreaker(self._breaker_config)
        return b

    def ejected(self) -> list[str]:
        now = self._clock()
        return [nid for nid, b in self._breakers.items() if not b.available(now)]

    def record(self, node_id: str, *, failed: bool) -> None:
        self.breaker(node_id).record(failed, self._clock())

    def pick(
        self, tier: str, *, exclude: frozenset[str] = frozenset(), session_id: str = "", preferred: str = ""
    ) -> Upstream | None:
        """A node of ``tier`` for a new stream, or ``None`` when none is healthy and not backed up."""
        now = self._clock()
        candidates = [
            Candidate(
                node_id=c.id,
                outstanding=c.outstanding,
                active=c.load.active,
                queued=c.load.queued,
                capacity=c.load.capacity,
                holds_session=bool(session_id) and session_id in c.load.sessions,
                available=self.breaker(c.id).available(now),
            )
            for c in self.healthy(tier)
            if c.id not in exclude
        ]
        chosen = choose(candidates, preferred=preferred, queue_limit=self.queue_limit, rng=self._rng)
        if chosen is None:
            return None
        self.breaker(chosen.node_id).claim(now)
        return self._clients[chosen.node_id]

    def queue_depth(self, tier: str) -> int:
        nodes = self.healthy(tier)
        return min((c.load.queued for c in nodes), default=0)

    def context_window(self, tier: str) -> int:
        return max((c.context_window for c in self.healthy(tier)), default=0)
