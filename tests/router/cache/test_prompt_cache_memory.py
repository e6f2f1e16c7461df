"""The in-memory prompt cache's own bounds: entry count, bytes, LRU order."""

from __future__ import annotations

import pytest

from router.cache import CachedReply
from router.cache.memory import ENTRY_OVERHEAD_BYTES, MemoryPromptCache


def reply(text: str) -> CachedReply:
    return CachedReply(text, "stop", 1, 1, "edge", "e1", 0.0)


async def test_evicts_least_recently_used_by_count() -> None:
    cache = MemoryPromptCache(max_entries=2)
    await cache.put("a", reply("A"), 60)
    await cache.put("b", reply("B"), 60)
    assert await cache.get("a") is not None  # "b" is now the least recently used
    await cache.put("c", reply("C"), 60)
    assert len(cache) == 2
    assert await cache.get("b") is None
    assert await cache.get("a") is not None
    assert await cache.get("c") is not None


async def test_evicts_by_total_bytes() -> None:
    entry = 1 + 1000 + ENTRY_OVERHEAD_BYTES
    cache = MemoryPromptCache(max_bytes=2 * entry + 10)
    for k in "abc":
        await cache.put(k, reply(k * 1000), 60)
    assert len(cache) == 2
    assert cache.total_bytes == 2 * entry
    assert await cache.get("a") is None


async def test_counts_utf8_bytes_and_skips_oversized_entries() -> None:
    cache = MemoryPromptCache(max_bytes=ENTRY_OVERHEAD_BYTES + 100)
    await cache.put("small", reply("x"), 60)
    await cache.put("big", reply("☃" * 50), 60)  # 150 bytes of UTF-8: larger than the whole budget
    assert await cache.get("big") is None
    assert await cache.get("small") is not None


async def test_replacing_an_entry_keeps_the_byte_count() -> None:
    cache = MemoryPromptCache()
    await cache.put("a", reply("x" * 100), 60)
    await cache.put("a", reply("y"), 60)
    assert cache.total_bytes == 1 + 1 + ENTRY_OVERHEAD_BYTES


async def test_expired_entries_are_evicted_before_live_ones() -> None:
    now = [0.0]
    cache = MemoryPromptCache(max_entries=2, clock=lambda: now[0])
    await cache.put("short", reply("s"), 1)
    await cache.put("long", reply("l"), 100)
    await cache.get("short")  # most recently used, but about to expire
    now[0] = 5.0
    await cache.put("new", reply("n"), 100)
    assert await cache.get("long") is not None
    assert await cache.get("new") is not None


def test_rejects_empty_bounds() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        MemoryPromptCache(max_entries=0)


async def test_a_full_cache_stays_bounded_under_churn() -> None:
    # Every put into a full cache evicts; replaced and evicted entries must not pile up anywhere.
    now = [0.0]
    cache = MemoryPromptCache(max_entries=50, clock=lambda: now[0])
    for i in range(5_000):
        now[0] = i * 0.01
        await cache.put(f"k{i % 300}", reply(str(i)), 1.0 if i % 2 else 1000.0)
    assert len(cache) == 50
    assert cache.expiry_backlog <= 2 * len(cache) + 64
    last = await cache.get("k199")  # the last put
    assert last is not None and last.text == "4999"
