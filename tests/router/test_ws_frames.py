from __future__ import annotations

import asyncio

import aiohttp
import orjson
import pytest
from aiohttp import web

from router import ws_frames
from router.ws_frames import FrameBatcher
from tests.ports import free_port

TEXTS = ["a", "é" * 70, "x" * 200, "y" * 70_000, '{"type":"done"}']


async def _serve_and_read(texts: list[str | bytes]) -> list[str]:
    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(compress=False)
        await ws.prepare(request)
        assert request.transport is not None
        frames = FrameBatcher(ws, request.transport)
        for text in texts:  # all in one loop turn: one write
            await frames.send(text)
        await ws.receive()  # the client's close
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(f"http://127.0.0.1:{port}/ws") as ws:
            got = [await ws.receive_str(timeout=5) for _ in texts]
            await ws.close()
        return got
    finally:
        await runner.cleanup()


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


@pytest.mark.parametrize("n", [0, 125, 126, 65535, 65536])
def test_frame_header_lengths(n: int) -> None:
    frame = ws_frames.text_frame("z" * n)
    assert frame[0] == 0x81  # FIN, text, unmasked
    header = {True: 2, False: 4 if n < 65536 else 10}[n < 126]
    assert len(frame) == header + n
    assert frame[header:] == b"z" * n


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

    app = web.Application()
    app.router.add_get("/ws", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as http, http.ws_connect(f"http://127.0.0.1:{port}/ws") as ws:
            await ws.close()
        for _ in range(100):
            if refused:
                break
            await asyncio.sleep(0.01)
    finally:
        await runner.cleanup()
    assert len(refused) == 1
