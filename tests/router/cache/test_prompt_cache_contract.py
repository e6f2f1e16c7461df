"""One contract, run against every prompt cache implementation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
import redis.asyncio as redis_asyncio

from router.cache import CachedReply, PromptCache, cache_key
from router.cache.memory import MemoryPromptCache
from router.cache.redis_store import RedisPromptCache
from switchyard.wire import ChatMessage, SamplingParams

REPLY = CachedReply(
    "Paris. ☃", "stop", prompt_tokens=12, completion_tokens=3, tier="edge", node="e1", created=1.5
)
GREEDY = SamplingParams(max_tokens=64, temperature=0.0)


@dataclass
class Subject:
    cache: PromptCache
    prefix: str
    advance: Callable[[float], Awaitable[None]]  # let this much time pass for the cache

    def key(self, tenant: str, text: str, params: SamplingParams = GREEDY) -> str:
        return cache_key(tenant, "edge", "m", [ChatMessage("user", text)], params, prefix=self.prefix)


@pytest.fixture(params=["memory", "redis"])
async def subject(request: pytest.FixtureRequest) -> AsyncIterator[Subject]:
    prefix = f"test:{request.node.name}:"
    if request.param == "memory":
        now = [0.0]

        async def advance_clock(seconds: float) -> None:
            now[0] += seconds

        yield Subject(MemoryPromptCache(clock=lambda: now[0]), prefix, advance_clock)
        return

    async def sleep(seconds: float) -> None:
        await asyncio.sleep(seconds)

    client = redis_asyncio.from_url(request.getfixturevalue("redis_url"))
    yield Subject(RedisPromptCache(client), prefix, sleep)
    await client.aclose()


async def test_miss_then_hit(subject: Subject) -> None:
    key = subject.key("t1", "What is the capital of France?")
    assert await subject.cache.get(key) is None
    await subject.cache.put(key, REPLY, ttl_s=60)
    assert await subject.cache.get(key) == REPLY


async def test_put_replaces(subject: Subject) -> None:
    key = subject.key("t1", "q")
    await subject.cache.put(key, REPLY, ttl_s=60)
    newer = CachedReply("other", "length", 1, 2, "cloud", "c1", 2.0)
    await subject.cache.put(key, newer, ttl_s=60)
    assert await subject.cache.get(key) == newer


async def test_entry_expires_after_ttl(subject: Subject) -> None:
    key = subject.key("t1", "q")
    await subject.cache.put(key, REPLY, ttl_s=0.2)
    assert await subject.cache.get(key) == REPLY
    await subject.advance(0.35)
    assert await subject.cache.get(key) is None


async def test_non_positive_ttl_stores_nothing(subject: Subject) -> None:
    key = subject.key("t1", "q")
    await subject.cache.put(key, REPLY, ttl_s=0)
    assert await subject.cache.get(key) is None


async def test_tenants_are_isolated(subject: Subject) -> None:
    a, b = subject.key("tenant-a", "same prompt"), subject.key("tenant-b", "same prompt")
    assert a != b
    await subject.cache.put(a, REPLY, ttl_s=60)
    assert await subject.cache.get(b) is None


async def test_whitespace_variants_hit_and_changes_miss(subject: Subject) -> None:
    await subject.cache.put(subject.key("t1", "What is  the capital\nof France?"), REPLY, ttl_s=60)
    assert await subject.cache.get(subject.key("t1", "  What is the capital of\t France? \n")) == REPLY
    assert await subject.cache.get(subject.key("t1", "what is the capital of france?")) is None
    hotter = SamplingParams(max_tokens=64, temperature=0.7, seed=1)
    assert await subject.cache.get(subject.key("t1", "What is the capital of France?", hotter)) is None


async def test_redis_entry_has_a_ttl(redis_url: str) -> None:
    client = redis_asyncio.from_url(redis_url)
    key = cache_key("t1", "edge", "m", [ChatMessage("user", "q")], GREEDY, prefix="ttl-test:")
    await RedisPromptCache(client).put(key, REPLY, ttl_s=30)
    assert 29_000 < await client.pttl(key) <= 30_000
    await client.aclose()


async def test_redis_unreadable_value_is_a_miss(redis_url: str) -> None:
    client = redis_asyncio.from_url(redis_url)
    await client.set("garbage-test:k1", b"\xc1not msgpack")
    await client.set("garbage-test:k2", b"\x93\x01\x02\x03")  # msgpack, but not a reply
    cache = RedisPromptCache(client)
    assert await cache.get("garbage-test:k1") is None
    assert await cache.get("garbage-test:k2") is None
    await client.aclose()
