"""The generic cell rate algorithm (GCRA): a token bucket kept as one number per key.

State is the *theoretical arrival time* (TAT): the moment the bucket would be full again if
nothing more arrived. A bucket of ``capacity`` cells refilling one cell per ``interval`` seconds
has ``(now - (tat - capacity * interval)) / interval`` cells available at ``now``. A TAT at or
before ``now`` is a full bucket, so state that has expired and state that never existed agree.

These functions are the reference semantics; ``redis_store.py`` carries the same arithmetic in
Lua, and the contract tests hold both to it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

# Slack for float rounding (wall-clock seconds near 1.7e9 carry ~0.2 us of it), so that waiting
# exactly ``retry_after_s`` is always enough.
EPSILON_S = 1e-6


@dataclass(frozen=True, slots=True)
class Step:
    allowed: bool
    tat: float  # the new state (unchanged when not allowed)
    wait_s: float  # when not allowed: how long until it would be
    remaining: int  # whole cells left after this step


def take(tat: float, now: float, interval: float, capacity: int, cost: int = 1) -> Step:
    """Take ``cost`` cells if they are all available now; else change nothing and say when."""
    base = max(tat, now)
    new_tat = base + cost * interval
    allow_at = new_tat - capacity * interval
    if allow_at > now + EPSILON_S:
        return Step(False, tat, allow_at - now, 0)
    return Step(True, new_tat, 0.0, _whole(now - allow_at, interval))


def check(tat: float, now: float, interval: float, capacity: int) -> Step:
    """Whether at least one cell is available, without taking it (a budget that may be in debt)."""
    step = take(tat, now, interval, capacity)
    return Step(step.allowed, tat, step.wait_s, step.remaining + 1 if step.allowed else 0)


def charge(tat: float, now: float, interval: float, cost: int) -> float:
    """Take ``cost`` cells unconditionally: the bucket may go into debt, which later checks repay."""
    return max(tat, now) + max(0, cost) * interval


def _whole(seconds: float, interval: float) -> int:
    return max(0, math.floor(seconds / interval + EPSILON_S))
