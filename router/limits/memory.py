"""Rate limits in this process's memory: for one router replica, or tests.

No method awaits between reading and writing a key's state, so the tasks of one event loop
cannot interleave inside a check-and-update: each step is atomic without a lock.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from router.limits import gcra
from router.limits.base import Admission, Admitted, Limited
from router.limits.config import KeyLimits

# Past this many tracked keys, a put sweeps out the state of keys whose buckets are full again.
SWEEP_ABOVE = 4096


class MemoryRateLimiter:
    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._requests: dict[str, float] = {}  # key -> request TAT
        self._tokens: dict[str, float] = {}  # key -> token-budget TAT

    async def admit(self, key: str, limits: KeyLimits) -> Admission:
        now = self._clock()
        token_interval = limits.token_interval_s
        if token_interval is not None and limits.tokens_per_minute is not None:
            budget = gcra.check(self._tokens.get(key, now), now, token_interval, limits.tokens_per_minute)
            if not budget.allowed:
                return Limited(budget.wait_s, "tokens")
        step = gcra.take(self._requests.get(key, now), now, limits.request_interval_s, limits.burst)
        if not step.allowed:
            return Limited(step.wait_s, "requests")
        self._set(self._requests, key, step.tat, now)
        return Admitted(step.remaining)

    async def charge(self, key: str, limits: KeyLimits, tokens: int) -> None:
        token_interval = limits.token_interval_s
        if token_interval is None or tokens <= 0:
            return
        now = self._clock()
        tat = gcra.charge(self._tokens.get(key, now), now, token_interval, tokens)
        self._set(self._tokens, key, tat, now)

    async def close(self) -> None:
        self._requests.clear()
        self._tokens.clear()

    def _set(self, table: dict[str, float], key: str, tat: float, now: float) -> None:
        if len(table) > SWEEP_ABOVE and key not in table:
            for stale in [k for k, t in table.items() if t <= now]:
                del table[stale]
        table[key] = tat
