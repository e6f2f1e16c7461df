"""The session store contract shared by the in-memory and Redis implementations."""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from switchyard.wire import ChatMessage

# Ids are opaque to clients; this bounds what we accept back from them.
SESSION_ID_RE = re.compile(r"^[A-Za-z0-9_-]{8,64}$")
MAX_STORED_MESSAGES = 400


def new_session_id() -> str:
    return "s_" + secrets.token_urlsafe(16)


def valid_session_id(session_id: str) -> bool:
    return bool(SESSION_ID_RE.match(session_id))


@dataclass(frozen=True, slots=True)
class Session:
    session_id: str
    messages: tuple[ChatMessage, ...]
    tier: str = ""  # the tier that answered the last turn ("edge" | "cloud"), for stickiness
    node: str = ""  # the node that answered the last turn, for KV-prefix affinity


class SessionStore(Protocol):
    """Sessions expire ``ttl_s`` after their last use (a sliding TTL)."""

    async def create(self) -> str:
        """Create an empty session and return its id."""
        ...

    async def get(self, session_id: str) -> Session | None:
        """The session, or ``None`` if it does not exist (or expired). Refreshes the TTL."""
        ...

    async def append(self, session_id: str, messages: Sequence[ChatMessage], *, tier: str, node: str) -> None:
        """Atomically append completed turns and record who answered them."""
        ...

    async def close(self) -> None: ...
