"""Server-to-client text frames of the chat WebSocket, written several to one socket write.

A reply is a handful of frames (route, deltas, done) and several of them are ready in the same turn
of the event loop: the route with the first delta, the last delta with done, and the frames of other
chats on the same socket. aiohttp writes every frame with its own ``send`` system call; here the
frames of one loop turn are framed (RFC 6455: unmasked, FIN, opcode text; no extension is
negotiated, since compression is off) and handed to the transport in one write at the end of the turn.

Back-pressure: once the transport holds more than ``HIGH_WATER`` unsent bytes (a client not reading),
frames go through aiohttp's own ``send_str``, which waits for the transport to drain.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

HIGH_WATER = 256 * 1024


def text_frame(text: str | bytes) -> bytes:
    """One text frame; ``bytes`` must already be UTF-8 (as ``orjson.dumps`` writes)."""
    data = text.encode() if isinstance(text, str) else text
    n = len(data)
    if n < 126:
        return bytes((0x81, n)) + data
    if n < 65536:
        return b"\x81\x7e" + n.to_bytes(2, "big") + data
    return b"\x81\x7f" + n.to_bytes(8, "big") + data


class FrameBatcher:
    """Text frames for one ``WebSocketResponse``, flushed once per event-loop turn."""

    __slots__ = ("_loop", "_parts", "_transport", "_ws")

    def __init__(self, ws: web.WebSocketResponse, transport: asyncio.Transport) -> None:
        self._ws = ws
        self._transport = transport
        self._parts: list[bytes] = []
        self._loop = asyncio.get_running_loop()

    async def send(self, text: str | bytes) -> None:
        """Queue one text frame; raise ``ConnectionError`` when the socket is closed."""
        if self._ws.closed or self._transport.is_closing():
            raise ConnectionError("the socket is closed")
        if self._transport.get_write_buffer_size() > HIGH_WATER:
            self.flush()  # keep the order: what is queued goes first
            await self._ws.send_str(text if isinstance(text, str) else text.decode())
            return
        if not self._parts:
            self._loop.call_soon(self.flush)
        self._parts.append(text_frame(text))

    def flush(self) -> None:
        if not self._parts:
            return
        data = b"".join(self._parts)
        self._parts.clear()
        if not (self._ws.closed or self._transport.is_closing()):  # nothing may follow a close frame
            self._transport.write(data)
