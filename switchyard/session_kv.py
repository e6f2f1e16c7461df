"""Keys and values kept after a conversation's turn, so its next turn recomputes only what is new.

One entry per session: the token ids whose keys and values the cache holds (the turn's prompt and
the reply generated after it) and the cache itself. The next turn's prompt normally starts with all
of them (the template renders the history the same way), so it reuses the longest shared prefix.
Entries are evicted least recently used first to stay within a byte budget. Not thread-safe: the
engine's worker thread owns it.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from dataclasses import dataclass

from switchyard.lm import KVCache


@dataclass(frozen=True, slots=True)
class SessionEntry:
    tokens: tuple[int, ...]
    cache: KVCache
    nbytes: int


@dataclass(frozen=True, slots=True)
class PrefixHit:
    """A stored cache and how many leading tokens of the new prompt it covers."""

    cache: KVCache
    length: int


class SessionKVStore:
    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self._entries: collections.OrderedDict[str, SessionEntry] = collections.OrderedDict()
        self._bytes = 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def session_ids(self) -> tuple[str, ...]:
        """Held sessions, most recently used first."""
        return tuple(reversed(self._entries))

    def put(self, session_id: str, tokens: Sequence[int], cache: KVCache, nbytes: int) -> None:
        """Keep ``cache`` (holding ``tokens``) for the session, replacing its previous entry."""
        self.drop(session_id)
        if nbytes > self.budget_bytes or not tokens:
            return
        self._entries[session_id] = SessionEntry(tuple(tokens), cache, nbytes)
        self._bytes += nbytes
        while self._bytes > self.budget_bytes:
            _, evicted = self._entries.popitem(last=False)
            self._bytes -= evicted.nbytes

    def drop(self, session_id: str) -> None:
        old = self._entries.pop(session_id, None)
        if old is not None:
            self._bytes -= old.nbytes

    def lookup(self, session_id: str, prompt: Sequence[int]) -> PrefixHit | None:
        """The session's cache and the length of its longest prefix shared with ``prompt``.

        At most ``len(prompt) - 1`` tokens are reused: the model must still run one prompt token to
        produce the logits of the first reply token.
        """
        entry = self._entries.get(session_id)
        if entry is None:
            return None
        self._entries.move_to_end(session_id)
        shared = common_prefix(entry.tokens, prompt, limit=len(prompt) - 1)
        return PrefixHit(entry.cache, shared) if shared > 0 else None


def common_prefix(a: Sequence[int], b: Sequence[int], *, limit: int | None = None) -> int:
    n = min(len(a), len(b)) if limit is None else min(len(a), len(b), limit)
    for i in range(n):
        if a[i] != b[i]:
            return i
    return max(n, 0)
