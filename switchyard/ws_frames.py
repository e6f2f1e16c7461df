"""Server-side WebSocket frames written several to one socket write.

A reply is a handful of frames (route, deltas, done) and several of them are ready in the same turn
of the event loop: the route with the first delta, the last delta with done, and the frames of other
streams on the same socket (a node serving a batch has a delta for every running stream after each
model step). aiohttp writes every frame with its own ``send`` system call; here the frames of one loop
turn are framed (RFC 6455: unmasked, FIN, text or binary; no extension is negotiated, since
compression is off) and handed to the transport in one write at the end of the turn.

Back-pressure: once the transport holds more than ``HIGH_WATER`` unsent bytes (a peer not reading),
frames go through aiohttp's own ``send_str``/``send_bytes``, which wait for the transport to drain.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

HIGH_WATER = 256 * 1024
_TEXT = 0x81  # FIN + opcode 1
_BINARY = 0x82  # FIN + opcode 2


def encode_frame(payload: bytes, *, binary: bool = False) -> bytes:
    """One unmasked, final frame; a text payload must be UTF-8 (as ``orjson.dumps`` writes)."""
    first = _BINARY if binary else _TEXT
    n = len(payload)
    if n < 126:
        return bytes((first, n)) + payload
    if n < 65536:
        return bytes((first, 126)) + n.to_bytes(2, "big") + payload
    return bytes((first, 127)) + n.to_bytes(8, "big") + payload


class FrameBatcher:
    """Frames for one ``WebSocketResponse``, flushed once per event-loop turn.

    ``binary``: every frame is a binary frame of the bytes given (the node protocol); otherwise a
    text frame of the string or UTF-8 bytes given (the chat API).
    """

    __slots__ = ("_binary", "_loop", "_parts", "_transport", "_ws")

    def __init__(
        self, ws: web.WebSocketResponse, transport: asyncio.Transport, *, binary: bool = False
    ) -> None:
        self._ws = ws
        self._transport = transport
        self._binary = binary
        self._parts: list[bytes] = []
        self._loop = asyncio.get_running_loop()

    async def send(self, data: str | bytes) -> None:
        """Queue one frame; raise ``ConnectionError`` when the socket is closed."""
        if self._ws.closed or self._transport.is_closing():
            raise ConnectionError("the socket is closed")
        payload = data.encode() if isinstance(data, str) else data
        if self._transport.get_write_buffer_size() > HIGH_WATER:
            self.flush()  # keep the order: what is queued goes first
            if self._binary:
                await self._ws.send_bytes(payload)
            else:
                await self._ws.send_str(payload.decode())
            return
        if not self._parts:
            self._loop.call_soon(self.flush)
        self._parts.append(encode_frame(payload, binary=self._binary))

    def flush(self) -> None:
        if not self._parts:
            return
        data = b"".join(self._parts)
        self._parts.clear()
        if not (self._ws.closed or self._transport.is_closing()):  # nothing may follow a close frame
            self._transport.write(data)
