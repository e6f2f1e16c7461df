"""The prompt cache in this process's memory: an LRU bounded by entry count and total bytes."""

from __future__ import annotations

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
        self._entries[key] = _Entry(reply, size, self._clock() + ttl_s)
        self._bytes += size
        self._evict()

    async def close(self) -> None:
        self._entries.clear()
        self._bytes = 0

    def _remove(self, key: str) -> None:
        self._bytes -= self._entries.pop(key).size

    def _evict(self) -> None:
        now = self._clock()
        if len(self._entries) > self._max_entries or self._bytes > self._max_bytes:
            # Expired entries go first, whatever their recency; then the least recently used.
            for key in [k for k, e in self._entries.items() if e.expires <= now]:
                self._remove(key)
        while len(self._entries) > self._max_entries or self._bytes > self._max_bytes:
            self._bytes -= self._entries.popitem(last=False)[1].size
