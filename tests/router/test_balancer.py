"""Node choice within a tier, as tables of cases."""

from __future__ import annotations

import random

from router.balancer import Candidate, choose

RNG = random.Random(0)


def c(node_id: str, out: int = 0, queued: int = 0, cap: int = 4, **kw: bool) -> Candidate:
    return Candidate(node_id, out, out, queued, cap, **kw)


def test_least_loaded_of_two() -> None:
    assert choose([c("a", out=3), c("b", out=1)], queue_limit=8, rng=RNG).node_id == "b"  # type: ignore[union-attr]


def test_session_affinity_wins_unless_saturated() -> None:
    nodes = [c("a", out=0), c("b", out=2, holds_session=True)]
    assert choose(nodes, queue_limit=8, rng=RNG).node_id == "b"  # type: ignore[union-attr]
    nodes = [c("a", out=0), c("b", out=4, holds_session=True)]
    assert choose(nodes, queue_limit=8, rng=RNG).node_id == "a"  # type: ignore[union-attr]
    nodes = [c("a", out=0), c("b", out=1)]
    assert choose(nodes, preferred="b", queue_limit=8, rng=RNG).node_id == "b"  # type: ignore[union-attr]


def test_backed_up_and_ejected_nodes_are_skipped() -> None:
    nodes = [c("a", queued=8), c("b", available=False)]
    assert choose(nodes, queue_limit=8, rng=RNG) is None
    nodes = [c("a", queued=8), c("b", out=3)]
    assert choose(nodes, queue_limit=8, rng=RNG).node_id == "b"  # type: ignore[union-attr]


def test_power_of_two_spreads_load() -> None:
    rng = random.Random(1)
    nodes = [c(str(i), out=i % 2) for i in range(8)]
    picks = [choose(nodes, queue_limit=8, rng=rng).node_id for _ in range(400)]  # type: ignore[union-attr]
    assert len(set(picks)) == 8  # every node gets traffic
    busy = sum(1 for p in picks if int(p) % 2 == 1)
    assert busy < 200  # but the idle half gets most of it
