"""Sessions in this process's memory: the embedded default when no Redis is configured."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from router.sessions.base import MAX_STORED_MESSAGES, Session, new_session_id
from switchyard.wire import ChatMessage

_SWEEP_EVERY = 1024


@dataclass
class _Entry:
    messages: list[ChatMessage] = field(default_factory=list)
    tier: str = ""
    node: str = ""
    expires: float = 0.0


class MemorySessionStore:
    def __init__(self, ttl_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl_s
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._creates = 0

    async def create(self) -> str:
        self._sweep()
        sid = new_session_id()
        self._entries[sid] = _Entry(expires=self._clock() + self._ttl)
        return sid

    async def get(self, session_id: str) -> Session | None:
        entry = self._live(session_id)
        if entry is None:
            return None
        entry.expires = self._clock() + self._ttl
        return Session(session_id, tuple(entry.messages), entry.tier, entry.node)

    async def append(self, session_id: str, messages: Sequence[ChatMessage], *, tier: str, node: str) -> None:
        entry = self._live(session_id)
        if entry is None:  # expired mid-request: start it again rather than lose the turn
            entry = self._entries[session_id] = _Entry()
        entry.messages.extend(messages)
        del entry.messages[:-MAX_STORED_MESSAGES]
        entry.tier, entry.node = tier, node
        entry.expires = self._clock() + self._ttl

    async def close(self) -> None:
        self._entries.clear()

    def _live(self, session_id: str) -> _Entry | None:
        entry = self._entries.get(session_id)
        if entry is not None and entry.expires <= self._clock():
            del self._entries[session_id]
            return None
        return entry

    def _sweep(self) -> None:
        """Drop expired sessions, at most every ``_SWEEP_EVERY`` creates: amortised O(1) per create."""
        self._creates += 1
        if self._creates % _SWEEP_EVERY:
            return
        now = self._clock()
        for sid in [s for s, e in self._entries.items() if e.expires <= now]:
            del self._entries[sid]
