"""The node protocol server: handshake refusals, multiplexed streams, cancel, bad frames."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from switchyard import wire
from switchyard.node_server import NodeOptions, build_node_app
from tests.ports import serving


@pytest.fixture
async def node_url(demo_models: Any) -> AsyncIterator[str]:
    from edge_runtime.onnx_lm import load

    model_dir: Path = demo_models.edge
    opts = NodeOptions(model_dir=model_dir, kind="edge", node_id="edge-t", secret="right", max_running=4)
    async with serving(build_node_app(load(model_dir), opts)) as port:
        yield f"ws://127.0.0.1:{port}/node"


async def _handshake(ws: aiohttp.ClientWebSocketResponse, hello: wire.Hello) -> wire.Message:
    await ws.send_bytes(wire.encode(hello))
    return wire.decode((await ws.receive(timeout=10)).data)


async def test_version_mismatch_is_refused_with_a_clear_error(node_url: str) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(node_url) as ws:
        reply = await _handshake(ws, wire.Hello(wire.PROTOCOL_VERSION + 1, "r", "right"))
        assert isinstance(reply, wire.Error) and reply.code == "version_mismatch"
        assert str(wire.PROTOCOL_VERSION) in reply.message
        assert (await ws.receive(timeout=10)).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)


async def test_wrong_secret_is_refused(node_url: str) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(node_url) as ws:
        reply = await _handshake(ws, wire.Hello(wire.PROTOCOL_VERSION, "r", "wrong"))
        assert isinstance(reply, wire.Error) and reply.code == "unauthorized"


async def test_streams_multiplex_and_cancel(node_url: str) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(node_url) as ws:
        welcome = await _handshake(ws, wire.Hello(wire.PROTOCOL_VERSION, "r", "right"))
        assert isinstance(welcome, wire.Welcome) and welcome.node_id == "edge-t" and welcome.kind == "edge"
        msgs = (wire.ChatMessage("user", "Hello"),)
        await ws.send_bytes(
            wire.encode(wire.Generate(1, msgs, wire.SamplingParams(max_tokens=5, ignore_eos=True)))
        )
        await ws.send_bytes(
            wire.encode(wire.Generate(2, msgs, wire.SamplingParams(max_tokens=500, ignore_eos=True)))
        )
        await ws.send_bytes(b"\xc1garbage")
        done: dict[int, wire.Done] = {}
        deltas: dict[int, int] = {1: 0, 2: 0}
        saw_load = saw_bad_frame = False
        cancelled = False
        while len(done) < 2:
            ev = wire.decode((await ws.receive(timeout=30)).data)
            if isinstance(ev, wire.Delta):
                deltas[ev.sid] += ev.tokens
                if ev.sid == 2 and deltas[2] >= 3 and not cancelled:
                    await ws.send_bytes(wire.encode(wire.Cancel(2)))
                    cancelled = True
            elif isinstance(ev, wire.Done):
                done[ev.sid] = ev
            elif isinstance(ev, wire.Load):
                saw_load = True
            elif isinstance(ev, wire.Error):
                assert ev.sid == -1 and ev.code == "bad_frame"
                saw_bad_frame = True
        assert done[1].finish_reason == "length" and done[1].completion_tokens == 5
        assert done[2].finish_reason == "cancelled"
        assert deltas[2] < 500
        assert saw_bad_frame
        for _ in range(20):
            if saw_load:
                break
            saw_load = isinstance(wire.decode((await ws.receive(timeout=5)).data), wire.Load)
        assert saw_load


async def test_same_seed_same_output_under_concurrency(node_url: str) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(node_url) as ws:
        await _handshake(ws, wire.Hello(wire.PROTOCOL_VERSION, "r", "right"))
        params = wire.SamplingParams(max_tokens=12, temperature=0.9, top_p=0.95, seed=42, ignore_eos=True)
        msgs = (wire.ChatMessage("user", "Tell me about rivers."),)
        for sid in (1, 2, 3):
            await ws.send_bytes(wire.encode(wire.Generate(sid, msgs, params)))
        texts: dict[int, str] = {1: "", 2: "", 3: ""}
        finished = 0
        while finished < 3:
            ev = wire.decode((await ws.receive(timeout=30)).data)
            if isinstance(ev, wire.Delta):
                texts[ev.sid] += ev.text
            elif isinstance(ev, wire.Done):
                finished += 1
        assert texts[1] == texts[2] == texts[3]
        await asyncio.sleep(0)
