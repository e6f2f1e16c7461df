"""Send what one event-loop turn writes to a node's socket as one TCP segment (Linux ``TCP_CORK``).

When several chats start in the same turn of the router's loop (a burst of requests, or the next
wave after a batch of replies ends), each ``Generate`` frame is its own ``send``. Sent one by one
they reach the node spread over a millisecond or more on a busy host, and the node's engine, which
starts on the first at once, prefills and decodes the rest in dribs: a prefill of one, a decode step
of one, then a prefill of the others. Corked, the turn's frames go out together when the turn ends,
the node reads them in one go and its engine takes them as one batch. A lone request is delayed by
nothing but the rest of the turn it was written in.

Where ``TCP_CORK`` does not exist (not Linux) or the socket refuses it (not TCP), this does nothing.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any

_TCP_CORK: int | None = getattr(socket, "TCP_CORK", None)


class TurnCork:
    """Corks ``sock`` on the first write of a loop turn and uncorks it when the turn ends."""

    __slots__ = ("_held", "_loop", "_sock")

    def __init__(self, sock: Any) -> None:
        # ``sock``: a socket or asyncio's TransportSocket (what ``get_extra_info("socket")`` gives).
        self._sock = sock if _TCP_CORK is not None else None
        self._loop = asyncio.get_running_loop()
        self._held = False

    @property
    def active(self) -> bool:
        return self._sock is not None

    def hold(self) -> None:
        """Call before writing: what this turn writes leaves together once the turn is over."""
        if self._held or self._sock is None:
            return
        try:
            self._sock.setsockopt(socket.IPPROTO_TCP, _TCP_CORK, 1)
        except OSError:
            self._sock = None  # not a TCP socket, or already closed: write as it comes
            return
        self._held = True
        self._loop.call_soon(self._release)

    def _release(self) -> None:
        self._held = False
        if self._sock is None:
            return
        try:
            self._sock.setsockopt(socket.IPPROTO_TCP, _TCP_CORK, 0)  # sends what was held
        except OSError:
            self._sock = None
