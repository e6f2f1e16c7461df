"""The prompt cache in this process's memory: an LRU bounded by entry count and total bytes."""

from __future__ import annotations

import heapq
import itertools
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from router.cache.base import CachedReply

# Rough per-entry bookkeeping (key, record, dict slot) added to the text's size.
ENTRY_OVERHEAD_BYTES = 256


@dataclass(frozen=True, slots=True)
class _Entry:
    reply: CachedReply
    size: int
    expires: float


class MemoryPromptCache:
    """Sizes are estimates (UTF-8 text plus a fixed overhead); an entry larger than the whole
    budget is not stored. There are no awaits inside a method, so one event loop's tasks cannot
    interleave within a get or put.
    """

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        max_bytes: int = 64 * 1024 * 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError(f"max_entries and max_bytes must be positive, got {max_entries}, {max_bytes}")
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._bytes = 0
        # Expiry times in a heap, so eviction finds the expired entries without scanning them all.
        # Entries replaced or removed since leave stale items, skipped when popped and compacted away.
        self._expiry: list[tuple[float, int, str]] = []
        self._order = itertools.count()

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def total_bytes(self) -> int:
        return self._bytes

    async def get(self, key: str) -> CachedReply | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires <= self._clock():
            self._remove(key)
            return None
        self._entries.move_to_end(key)
        return entry.reply

    async def put(self, key: str, reply: CachedReply, ttl_s: float) -> None:
        if ttl_s <= 0:
            return
        size = len(key) + len(reply.text.encode()) + ENTRY_OVERHEAD_BYTES
        if key in self._entries:
            self._remove(key)
        if size > self._max_bytes:
            return
        expires = self._clock() + ttl_s
        self._entries[key] = _Entry(reply, size, expires)
        self._bytes += size
        heapq.heappush(self._expiry, (expires, next(self._order), key))
        self._evict()

    async def close(self) -> None:
        self._entries.clear()
        self._expiry.clear()
        self._bytes = 0

    def _remove(self, key: str) -> None:
        self._bytes -= self._entries.pop(key).size

    def _evict(self) -> None:
        if len(self._entries) > self._max_entries or self._bytes > self._max_bytes:
            # Expired entries go first, whatever their recency; then the least recently used.
            now = self._clock()
            while self._expiry and self._expiry[0][0] <= now:
                expires, _, key = heapq.heappop(self._expiry)
                entry = self._entries.get(key)
                if entry is not None and entry.expires == expires:
                    self._remove(key)
        while len(self._entries) > self._max_entries or self._bytes > self._max_bytes:
            self._bytes -= self._entries.popitem(last=False)[1].size
        if len(self._expiry) > 2 * len(self._entries) + 64:
            self._expiry = [(e.expires, next(self._order), k) for k, e in self._entries.items()]
            heapq.heapify(self._expiry)

    @property
    def expiry_backlog(self) -> int:
        """Items in the expiry heap (live entries plus stale ones not compacted yet)."""
        return len(self._expiry)
