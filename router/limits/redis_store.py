"""Rate limits in Redis, shared by every router replica.

Each check-and-update is one Lua script, run atomically by Redis (EVALSHA through redis-py's
``register_script``, which loads the script again after a NOSCRIPT), so replicas never race on a
read-modify-write. The arithmetic is ``gcra.py``'s, state one TAT per key and limit:
``{prefix}{<key>}:req`` and ``{prefix}{<key>}:tok`` (the braces keep a key's two entries in one
Redis Cluster slot), each expiring once its bucket would be full again.

The time is the caller's: ``now`` is passed into the scripts from this replica's ``clock`` (wall
clock by default) rather than read from Redis ``TIME``, so tests can drive time. Replicas must
keep their clocks in sync (NTP); a replica that runs ahead by ``d`` seconds sees buckets ``d``
seconds fuller.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from router.limits.base import Admission, Admitted, Limited
from router.limits.config import KeyLimits
from router.limits.gcra import EPSILON_S

# %.17g round-trips a double exactly; Lua's tostring keeps only 14 digits.
_ADMIT = """
-- KEYS[1]: request TAT, KEYS[2]: token-budget TAT.
-- ARGV: now, request interval, burst, token interval (0: no budget), token capacity, epsilon.
local now = tonumber(ARGV[1])
local eps = tonumber(ARGV[6])
local token_interval = tonumber(ARGV[4])
if token_interval > 0 then
  local ttat = math.max(tonumber(redis.call('GET', KEYS[2]) or ARGV[1]), now)
  local allow_at = ttat + token_interval - tonumber(ARGV[5]) * token_interval
  if allow_at > now + eps then
    return {0, string.format('%.17g', allow_at - now), 'tokens'}
  end
end
local interval = tonumber(ARGV[2])
local new_tat = math.max(tonumber(redis.call('GET', KEYS[1]) or ARGV[1]), now) + interval
local allow_at = new_tat - tonumber(ARGV[3]) * interval
if allow_at > now + eps then
  return {0, string.format('%.17g', allow_at - now), 'requests'}
end
redis.call('SET', KEYS[1], string.format('%.17g', new_tat), 'PX', math.ceil((new_tat - now) * 1000) + 1)
return {1, tostring(math.max(0, math.floor((now - allow_at) / interval + eps))), 'ok'}
"""

_CHARGE = """
-- KEYS[1]: token-budget TAT. ARGV: now, token interval, tokens. The budget may go into debt.
local now = tonumber(ARGV[1])
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or ARGV[1]), now)
tat = tat + tonumber(ARGV[3]) * tonumber(ARGV[2])
redis.call('SET', KEYS[1], string.format('%.17g', tat), 'PX', math.ceil((tat - now) * 1000) + 1)
return 1
"""


class RedisRateLimiter:
    def __init__(
        self, client: Any, *, prefix: str = "sy:limit:", clock: Callable[[], float] = time.time
    ) -> None:
        self._r = client  # redis.asyncio.Redis; it belongs to the app, which closes it
        self._prefix = prefix
        self._clock = clock
        self._admit = client.register_script(_ADMIT)
        self._charge = client.register_script(_CHARGE)

    def _keys(self, key: str) -> tuple[str, str]:
        base = f"{self._prefix}{{{key}}}"
        return base + ":req", base + ":tok"

    async def admit(self, key: str, limits: KeyLimits) -> Admission:
        token_interval = limits.token_interval_s or 0.0
        allowed, value, reason = await self._admit(
            keys=self._keys(key),
            args=[
                repr(self._clock()),
                repr(limits.request_interval_s),
                limits.burst,
                repr(token_interval),
                limits.tokens_per_minute or 0,
                repr(EPSILON_S),
            ],
        )
        if allowed:
            return Admitted(int(value))
        return Limited(float(value), "tokens" if _text(reason) == "tokens" else "requests")

    async def charge(self, key: str, limits: KeyLimits, tokens: int) -> None:
        token_interval = limits.token_interval_s
        if token_interval is None or tokens <= 0:
            return
        await self._charge(keys=self._keys(key)[1:], args=[repr(self._clock()), repr(token_interval), tokens])

    async def close(self) -> None:
        return None


def _text(raw: bytes | str) -> str:
    return raw.decode() if isinstance(raw, bytes) else raw
