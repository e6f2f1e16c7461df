"""One contract, run against every rate limiter implementation, on a clock the test drives."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
import redis.asyncio as redis_asyncio

from router.limits import Admitted, KeyLimits, Limited, RateLimiter
from router.limits.memory import MemoryRateLimiter
from router.limits.redis_store import RedisRateLimiter

# A wall-clock-sized start, so the Redis scripts' float arithmetic is exercised at real magnitudes.
T0 = 1_700_000_000.0
RATE = KeyLimits(requests_per_s=2, burst=5)
BUDGET = KeyLimits(requests_per_s=100, burst=100, tokens_per_minute=600)  # 10 tokens/s


def pooled_client(url: str, connections: int = 16) -> redis_asyncio.Redis:
    """A client that waits for a free connection instead of failing when all are busy."""
    pool = redis_asyncio.BlockingConnectionPool.from_url(url, max_connections=connections, timeout=5)
    return redis_asyncio.Redis(connection_pool=pool)


@dataclass
class Clock:
    now: float = T0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Subject:
    limiter: RateLimiter
    clock: Clock


@pytest.fixture(params=["memory", "redis"])
async def subject(request: pytest.FixtureRequest) -> AsyncIterator[Subject]:
    clock = Clock()
    if request.param == "memory":
        yield Subject(MemoryRateLimiter(clock=clock), clock)
        return
    client = pooled_client(request.getfixturevalue("redis_url"))
    yield Subject(RedisRateLimiter(client, prefix=f"test:{request.node.name}:", clock=clock), clock)
    await client.aclose()


async def admit_n(subject: Subject, key: str, limits: KeyLimits, n: int) -> list[Admitted | Limited]:
    return [await subject.limiter.admit(key, limits) for _ in range(n)]


async def test_burst_is_admitted_then_limited(subject: Subject) -> None:
    results = await admit_n(subject, "k", RATE, 6)
    assert results[:5] == [Admitted(4), Admitted(3), Admitted(2), Admitted(1), Admitted(0)]
    limited = results[5]
    assert isinstance(limited, Limited)
    assert limited.reason == "requests"
    assert limited.retry_after_s == pytest.approx(0.5, abs=1e-4)


async def test_waiting_retry_after_is_enough(subject: Subject) -> None:
    await admit_n(subject, "k", RATE, 5)
    limited = await subject.limiter.admit("k", RATE)
    assert isinstance(limited, Limited)
    subject.clock.advance(limited.retry_after_s)
    assert isinstance(await subject.limiter.admit("k", RATE), Admitted)
    assert isinstance(await subject.limiter.admit("k", RATE), Limited)


async def test_refused_requests_take_nothing(subject: Subject) -> None:
    await admit_n(subject, "k", RATE, 5)
    first = await subject.limiter.admit("k", RATE)
    for _ in range(10):
        again = await subject.limiter.admit("k", RATE)
        assert isinstance(first, Limited) and isinstance(again, Limited)
        assert again.retry_after_s == pytest.approx(first.retry_after_s, abs=1e-4)


async def test_bucket_refills_over_time(subject: Subject) -> None:
    await admit_n(subject, "k", RATE, 5)
    subject.clock.advance(1.0)  # two requests' worth at 2/s
    results = await admit_n(subject, "k", RATE, 3)
    assert [type(r) for r in results] == [Admitted, Admitted, Limited]
    subject.clock.advance(3600)  # refills up to the burst, not beyond
    results = await admit_n(subject, "k", RATE, 6)
    assert [type(r) for r in results] == [Admitted] * 5 + [Limited]


async def test_keys_are_isolated(subject: Subject) -> None:
    await admit_n(subject, "a", RATE, 5)
    assert isinstance(await subject.limiter.admit("a", RATE), Limited)
    assert await subject.limiter.admit("b", RATE) == Admitted(4)


async def test_token_budget_is_charged_and_enforced(subject: Subject) -> None:
    assert isinstance(await subject.limiter.admit("k", BUDGET), Admitted)
    await subject.limiter.charge("k", BUDGET, 650)  # 50 tokens into debt
    limited = await subject.limiter.admit("k", BUDGET)
    assert isinstance(limited, Limited)
    assert limited.reason == "tokens"
    assert limited.retry_after_s == pytest.approx(5.1, abs=1e-4)  # repay 50, then one token free
    subject.clock.advance(5.0)
    assert isinstance(await subject.limiter.admit("k", BUDGET), Limited)
    subject.clock.advance(0.1)
    assert isinstance(await subject.limiter.admit("k", BUDGET), Admitted)


async def test_budget_admits_while_any_token_is_left(subject: Subject) -> None:
    await subject.limiter.charge("k", BUDGET, 599)
    assert isinstance(await subject.limiter.admit("k", BUDGET), Admitted)
    await subject.limiter.charge("k", BUDGET, 1)
    assert isinstance(await subject.limiter.admit("k", BUDGET), Limited)


async def test_budget_refusal_takes_no_request_slot(subject: Subject) -> None:
    tight = KeyLimits(requests_per_s=1, burst=2, tokens_per_minute=60)
    await subject.limiter.charge("k", tight, 61)
    assert isinstance(await subject.limiter.admit("k", tight), Limited)
    subject.clock.advance(2.0)  # the debt is repaid; the request slots were never touched
    assert await subject.limiter.admit("k", tight) == Admitted(1)


async def test_charge_without_a_budget_changes_nothing(subject: Subject) -> None:
    await subject.limiter.charge("k", RATE, 1_000_000)
    await subject.limiter.charge("k", BUDGET, 0)
    assert await subject.limiter.admit("k", RATE) == Admitted(4)
    assert isinstance(await subject.limiter.admit("k", BUDGET), Admitted)


async def test_concurrent_admissions_respect_the_burst(subject: Subject) -> None:
    limits = KeyLimits(requests_per_s=0.01, burst=50)
    results = await asyncio.gather(*(subject.limiter.admit("k", limits) for _ in range(200)))
    assert sum(isinstance(r, Admitted) for r in results) == 50


async def test_redis_admission_is_atomic_across_connections(redis_url: str) -> None:
    """Two replicas (two clients, 16 connections each) race 200 requests at a burst of 50."""
    clock = Clock()
    clients = [pooled_client(redis_url) for _ in range(2)]
    limiters = [RedisRateLimiter(c, prefix="atomic-test:", clock=clock) for c in clients]
    limits = KeyLimits(requests_per_s=0.01, burst=50)
    results = await asyncio.gather(*(limiters[i % 2].admit("shared", limits) for i in range(200)))
    assert sum(isinstance(r, Admitted) for r in results) == 50
    assert all(r.reason == "requests" for r in results if isinstance(r, Limited))
    for c in clients:
        await c.aclose()


async def test_redis_state_expires_once_the_bucket_is_full(redis_url: str) -> None:
    client = redis_asyncio.from_url(redis_url)
    limiter = RedisRateLimiter(client, prefix="expiry-test:", clock=Clock())
    await limiter.admit("k", KeyLimits(requests_per_s=1, burst=10))
    await limiter.charge("k", BUDGET, 30)
    assert 0 < await client.pttl("expiry-test:{k}:req") <= 1001  # one request: full again in 1 s
    assert 0 < await client.pttl("expiry-test:{k}:tok") <= 3001  # 30 tokens at 10/s
    await client.aclose()


async def test_redis_scripts_reload_after_a_flush(redis_url: str) -> None:
    client = redis_asyncio.from_url(redis_url)
    limiter = RedisRateLimiter(client, prefix="flush-test:", clock=Clock())
    assert isinstance(await limiter.admit("k", RATE), Admitted)
    await client.script_flush()  # as after a Redis restart or failover: EVALSHA answers NOSCRIPT
    assert await limiter.admit("k", RATE) == Admitted(3)
    await limiter.charge("k", BUDGET, 1)
    await client.aclose()
