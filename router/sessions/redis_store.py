"""Sessions in Redis, shared by every router replica.

Layout per session: ``{prefix}{id}:meta`` (a hash: tier, node, created) and ``{prefix}{id}:msgs``
(a list of msgpack-encoded messages). Appends are one MULTI/EXEC transaction of RPUSH, LTRIM,
HSET and EXPIRE, so concurrent replicas never overwrite each other's turns.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import msgpack

from router.sessions.base import MAX_STORED_MESSAGES, Session, new_session_id
from switchyard.wire import ROLES, ChatMessage


class RedisSessionStore:
    def __init__(self, client: Any, ttl_s: int, *, prefix: str = "sy:session:") -> None:
        self._r = client  # redis.asyncio.Redis
        self._ttl = int(ttl_s)
        self._prefix = prefix

    def _keys(self, session_id: str) -> tuple[str, str]:
        base = self._prefix + session_id
        return base + ":meta", base + ":msgs"

    async def create(self) -> str:
        sid = new_session_id()
        meta, _ = self._keys(sid)
        await self._r.hset(meta, mapping={"created": int(time.time()), "tier": "", "node": ""})
        await self._r.expire(meta, self._ttl)
        return sid

    async def get(self, session_id: str) -> Session | None:
        meta, msgs = self._keys(session_id)
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.hgetall(meta)
            pipe.lrange(msgs, 0, -1)
            pipe.expire(meta, self._ttl)
            pipe.expire(msgs, self._ttl)
            fields, raw_msgs, _, _ = await pipe.execute()
        if not fields:
            return None
        messages = tuple(m for m in (_decode_message(raw) for raw in raw_msgs) if m is not None)
        return Session(session_id, messages, _text(fields.get(b"tier")), _text(fields.get(b"node")))

    async def append(self, session_id: str, messages: Sequence[ChatMessage], *, tier: str, node: str) -> None:
        meta, msgs = self._keys(session_id)
        packed = [msgpack.packb({"role": m.role, "content": m.content}) for m in messages]
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.rpush(msgs, *packed)
            pipe.ltrim(msgs, -MAX_STORED_MESSAGES, -1)
            pipe.hset(meta, mapping={"tier": tier, "node": node})
            pipe.expire(meta, self._ttl)
            pipe.expire(msgs, self._ttl)
            await pipe.execute()

    async def close(self) -> None:
        return None  # the client belongs to the app, which closes it


def _text(raw: bytes | None) -> str:
    return raw.decode() if raw else ""


def _decode_message(raw: bytes) -> ChatMessage | None:
    try:
        obj = msgpack.unpackb(raw)
    except Exception:  # a corrupt entry must not make the whole session unreadable
        return None
    if isinstance(obj, dict) and obj.get("role") in ROLES and isinstance(obj.get("content"), str):
        return ChatMessage(obj["role"], obj["content"])
    return None
