"""The router's shared state, in Redis when configured and in process memory otherwise.

Sessions, the prompt cache and the rate limiter each have both implementations behind one
interface; this module picks them from the config and owns the Redis client they share.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from router.cache import PromptCache
from router.cache.memory import MemoryPromptCache
from router.config import RouterConfig
from router.limits import RateLimiter
from router.limits.memory import MemoryRateLimiter
from router.sessions import SessionStore
from router.sessions.memory import MemorySessionStore

log = logging.getLogger(__name__)

REDIS_POOL_SIZE = 256


@dataclass
class Stores:
    sessions: SessionStore
    cache: PromptCache | None
    limiter: RateLimiter
    redis: Any = None  # redis.asyncio.Redis, shared by all of the above when set

    async def close(self) -> None:
        await self.sessions.close()
        if self.cache is not None:
            await self.cache.close()
        await self.limiter.close()
        if self.redis is not None:
            await self.redis.aclose()


async def open_stores(cfg: RouterConfig) -> Stores:
    if not cfg.redis_url:
        log.info("sessions, cache and rate limits in process memory (no redis_url configured)")
        return Stores(
            sessions=MemorySessionStore(cfg.session_ttl_s),
            cache=MemoryPromptCache(max_entries=cfg.cache.max_entries) if cfg.cache.enabled else None,
            limiter=MemoryRateLimiter(),
        )
    import redis.asyncio as redis_asyncio  # only when configured

    from router.cache.redis_store import RedisPromptCache
    from router.limits.redis_store import RedisRateLimiter
    from router.sessions.redis_store import RedisSessionStore

    # A blocking pool waits for a free connection under bursts instead of failing the request.
    pool = redis_asyncio.BlockingConnectionPool.from_url(
        cfg.redis_url,
        max_connections=REDIS_POOL_SIZE,
        timeout=5.0,
        socket_timeout=5.0,
        socket_connect_timeout=5.0,
    )
    client = redis_asyncio.Redis(connection_pool=pool)
    await client.ping()
    log.info("sessions, cache and rate limits in Redis at %s", _redact(cfg.redis_url))
    return Stores(
        sessions=RedisSessionStore(client, cfg.session_ttl_s),
        cache=RedisPromptCache(client) if cfg.cache.enabled else None,
        limiter=RedisRateLimiter(client),
        redis=client,
    )


def _redact(url: str) -> str:
    return url.split("@", 1)[-1] if "@" in url else url
