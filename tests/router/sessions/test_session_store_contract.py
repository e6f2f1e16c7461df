"""One contract, run against every session store implementation."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as redis_asyncio

from router.sessions import SessionStore
from router.sessions.base import MAX_STORED_MESSAGES, valid_session_id
from router.sessions.memory import MemorySessionStore
from router.sessions.redis_store import RedisSessionStore
from switchyard.wire import ChatMessage


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[SessionStore]:
    if request.param == "memory":
        yield MemorySessionStore(ttl_s=60)
        return
    client = redis_asyncio.from_url(request.getfixturevalue("redis_url"))
    prefix = f"test:{request.node.name}:"
    yield RedisSessionStore(client, ttl_s=60, prefix=prefix)
    await client.aclose()


async def test_created_session_is_empty_and_valid(store: SessionStore) -> None:
    sid = await store.create()
    assert valid_session_id(sid)
    session = await store.get(sid)
    assert session is not None
    assert session.messages == ()
    assert session.tier == ""


async def test_unknown_session_is_none(store: SessionStore) -> None:
    assert await store.get("s_doesnotexist000") is None


async def test_append_keeps_order_and_records_tier(store: SessionStore) -> None:
    sid = await store.create()
    await store.append(
        sid, [ChatMessage("user", "hi"), ChatMessage("assistant", "hello")], tier="edge", node="e1"
    )
    await store.append(
        sid, [ChatMessage("user", "más ☃"), ChatMessage("assistant", "ok")], tier="cloud", node="c1"
    )
    session = await store.get(sid)
    assert session is not None
    assert [m.content for m in session.messages] == ["hi", "hello", "más ☃", "ok"]
    assert [m.role for m in session.messages] == ["user", "assistant", "user", "assistant"]
    assert (session.tier, session.node) == ("cloud", "c1")


async def test_sessions_are_isolated(store: SessionStore) -> None:
    a, b = await store.create(), await store.create()
    assert a != b
    await store.append(a, [ChatMessage("user", "only a")], tier="edge", node="e1")
    sb = await store.get(b)
    assert sb is not None and sb.messages == ()


async def test_history_is_capped(store: SessionStore) -> None:
    sid = await store.create()
    msgs = [ChatMessage("user", str(i)) for i in range(MAX_STORED_MESSAGES + 10)]
    await store.append(sid, msgs, tier="edge", node="e1")
    session = await store.get(sid)
    assert session is not None
    assert len(session.messages) == MAX_STORED_MESSAGES
    assert session.messages[-1].content == str(MAX_STORED_MESSAGES + 9)


async def test_memory_store_ttl_slides() -> None:
    now = [0.0]
    store = MemorySessionStore(ttl_s=10, clock=lambda: now[0])
    sid = await store.create()
    now[0] = 8.0
    assert await store.get(sid) is not None  # refreshes the TTL to t=18
    now[0] = 16.0
    assert await store.get(sid) is not None
    now[0] = 30.0
    assert await store.get(sid) is None


async def test_redis_store_sets_sliding_ttl(redis_url: str) -> None:
    client = redis_asyncio.from_url(redis_url)
    store = RedisSessionStore(client, ttl_s=100, prefix="ttl-test:")
    sid = await store.create()
    await store.append(sid, [ChatMessage("user", "x")], tier="edge", node="e1")
    await client.expire(f"ttl-test:{sid}:meta", 5)
    await store.get(sid)
    assert await client.ttl(f"ttl-test:{sid}:meta") > 50
    assert await client.ttl(f"ttl-test:{sid}:msgs") > 50
    await client.aclose()
