"""The prompt cache in Redis, shared by every router replica.

One key per entry (see ``cache_key``), its value one msgpack map; a put is one ``SET ... PX`` and a
get one ``GET``: a single round trip each, with Redis expiring entries itself. Eviction under
memory pressure is Redis's ``maxmemory-policy`` (``allkeys-lru`` or ``volatile-lru`` suit it).
"""

from __future__ import annotations

import math
from typing import Any

import msgpack

from router.cache.base import CachedReply

_STR_FIELDS = ("text", "finish_reason", "tier", "node")
_INT_FIELDS = ("prompt_tokens", "completion_tokens")


class RedisPromptCache:
    def __init__(self, client: Any) -> None:
        self._r = client  # redis.asyncio.Redis; it belongs to the app, which closes it

    async def get(self, key: str) -> CachedReply | None:
        raw = await self._r.get(key)
        return None if raw is None else decode_reply(raw)

    async def put(self, key: str, reply: CachedReply, ttl_s: float) -> None:
        if ttl_s <= 0:
            return
        await self._r.set(key, encode_reply(reply), px=max(1, math.ceil(ttl_s * 1000)))

    async def close(self) -> None:
        return None


def encode_reply(reply: CachedReply) -> bytes:
    packed: bytes = msgpack.packb(
        {
            "text": reply.text,
            "finish_reason": reply.finish_reason,
            "prompt_tokens": reply.prompt_tokens,
            "completion_tokens": reply.completion_tokens,
            "tier": reply.tier,
            "node": reply.node,
            "created": reply.created,
        }
    )
    return packed


def decode_reply(raw: bytes) -> CachedReply | None:
    """The reply, or ``None`` for a value this version cannot read (served as a miss)."""
    try:
        obj = msgpack.unpackb(raw)
    except (ValueError, msgpack.UnpackException):
        return None
    if not isinstance(obj, dict):
        return None
    if not all(isinstance(obj.get(f), str) for f in _STR_FIELDS):
        return None
    if not all(type(obj.get(f)) is int for f in _INT_FIELDS):
        return None
    created = obj.get("created")
    if not isinstance(created, int | float) or isinstance(created, bool):
        return None
    return CachedReply(
        text=obj["text"],
        finish_reason=obj["finish_reason"],
        prompt_tokens=obj["prompt_tokens"],
        completion_tokens=obj["completion_tokens"],
        tier=obj["tier"],
        node=obj["node"],
        created=float(created),
    )
