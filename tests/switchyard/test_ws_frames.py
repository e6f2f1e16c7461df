from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import orjson
import pytest
from aiohttp import web

from switchyard import ws_frames
from switchyard.ws_frames import FrameBatcher
from tests.ports import serving

Handler = Callable[[web.Request], Awaitable[web.WebSocketResponse]]
TEXTS = ["a", "é" * 70, "x" * 200, "y" * 70_000, '{"type":"done"}']


async def _serve_and_read(texts: list[str | bytes], *, binary: bool = False) -> list[str | bytes]:
    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        assert request.transport is not None
        frames = FrameBatcher(ws, request.transport, binary=binary)
        for text in texts:  # all in one loop turn: one write
            await frames.send(text)
        await ws.receive()  # the client's close
        return ws

    async with _served(handler) as url, aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
        got: list[str | bytes] = []
        for _ in texts:
            got.append(await (ws.receive_bytes if binary else ws.receive_str)(timeout=5))
        await ws.close()
    return got


@contextlib.asynccontextmanager
async def _served(handler: Handler) -> AsyncIterator[str]:
    """``handler`` on a loopback port; yields its WebSocket URL."""
    app = web.Application()
    app.router.add_get("/ws", handler)
    async with serving(app) as port:
        yield f"http://127.0.0.1:{port}/ws"


async def test_batched_frames_arrive_whole_and_in_order() -> None:
    assert await _serve_and_read(list(TEXTS)) == TEXTS


async def test_utf8_bytes_go_out_as_text_frames() -> None:
    encoded = orjson.dumps({"type": "route", "reason": "caf\u00e9"})
    assert await _serve_and_read([encoded, "after"]) == [encoded.decode(), "after"]


async def test_past_the_high_water_mark_frames_go_through_aiohttp_in_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ws_frames, "HIGH_WATER", -1)  # as if the client had stopped reading
    assert await _serve_and_read(list(TEXTS)) == TEXTS


async def test_binary_frames_arrive_whole_and_in_order() -> None:
    payloads: list[str | bytes] = [b"", b"\x00\xff" * 40, bytes(range(256)) * 300, b"\x93\x01"]
    assert await _serve_and_read(payloads, binary=True) == payloads


async def test_binary_frames_past_the_high_water_mark_go_through_aiohttp(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ws_frames, "HIGH_WATER", -1)
    payloads: list[str | bytes] = [b"first", bytes(range(256)) * 300, b"last"]
    assert await _serve_and_read(payloads, binary=True) == payloads


@pytest.mark.parametrize("n", [0, 125, 126, 65535, 65536])
def test_frame_header_lengths(n: int) -> None:
    frame = ws_frames.encode_frame(b"z" * n)
    assert frame[0] == 0x81  # FIN, text, unmasked
    header = {True: 2, False: 4 if n < 65536 else 10}[n < 126]
    assert len(frame) == header + n
    assert frame[header:] == b"z" * n
    binary = ws_frames.encode_frame(b"z" * n, binary=True)
    assert binary[0] == 0x82 and binary[1:] == frame[1:]  # FIN, binary; the same length encoding


async def test_a_closed_socket_refuses_frames() -> None:
    refused: list[BaseException] = []

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        assert request.transport is not None
        frames = FrameBatcher(ws, request.transport)
        await ws.receive()  # the client's close: aiohttp answers it and marks the socket closed
        try:
            await frames.send("too late")
        except ConnectionError as exc:
            refused.append(exc)
        return ws

    async with _served(handler) as url:
        async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
            await ws.close()
        for _ in range(100):
            if refused:
                break
            await asyncio.sleep(0.01)
    assert len(refused) == 1
