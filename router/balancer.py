"""Choosing one node within a tier: a pure function of the candidates' live state.

Order of preference: a node that holds the conversation's KV prefix (or served its last turn),
unless it is saturated; otherwise the less loaded of two random healthy nodes (power of two
choices: near-best balance without every router replica herding onto the same "least loaded"
node). Nodes whose queue is at the limit, or whose circuit breaker is open, are not candidates,
so a tier whose nodes are all backed up yields ``None`` and the request spills to the fallback.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Candidate:
    node_id: str
    outstanding: int  # streams this router has open on the node
    active: int  # the node's own report (all routers)
    queued: int
    capacity: int
    holds_session: bool = False
    available: bool = True  # circuit breaker closed or half-open with no trial out

    @property
    def load(self) -> float:
        return (max(self.outstanding, self.active) + self.queued) / max(1, self.capacity)


def choose(
    candidates: Sequence[Candidate], *, preferred: str = "", queue_limit: int, rng: random.Random
) -> Candidate | None:
    usable = [c for c in candidates if c.available and c.queued < queue_limit]
    if not usable:
        return None
    for c in usable:
        if (c.holds_session or c.node_id == preferred) and c.load < 1.0:
            return c
    if len(usable) <= 2:
        return min(usable, key=lambda c: c.load)
    a, b = rng.sample(usable, 2)
    return a if a.load <= b.load else b
