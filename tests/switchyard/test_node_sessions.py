"""Session reuse seen through the node protocol: Done.cached_tokens and the sessions in Load."""

from __future__ import annotations

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
    opts = NodeOptions(model_dir=model_dir, kind="edge", node_id="edge-s", secret="k")
    async with serving(build_node_app(load(model_dir, threads=1), opts)) as port:
        yield f"ws://127.0.0.1:{port}/node"


async def _turn(
    ws: aiohttp.ClientWebSocketResponse, sid: int, messages: tuple[wire.ChatMessage, ...], session: str
) -> tuple[str, wire.Done, list[wire.Load]]:
    params = wire.SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
    await ws.send_bytes(wire.encode(wire.Generate(sid, messages, params, session_id=session)))
    text = ""
    loads: list[wire.Load] = []
    while True:
        ev = wire.decode((await ws.receive(timeout=30)).data)
        if isinstance(ev, wire.Delta) and ev.sid == sid:
            text += ev.text
        elif isinstance(ev, wire.Done) and ev.sid == sid:
            return text, ev, loads
        elif isinstance(ev, wire.Load):
            loads.append(ev)
        elif isinstance(ev, wire.Error):
            raise AssertionError(f"{ev.code}: {ev.message}")


async def test_follow_up_reports_cached_tokens_and_the_node_lists_the_session(node_url: str) -> None:
    async with aiohttp.ClientSession() as http, http.ws_connect(node_url) as ws:
        await ws.send_bytes(wire.encode(wire.Hello(wire.PROTOCOL_VERSION, "r", "k")))
        assert isinstance(wire.decode((await ws.receive(timeout=10)).data), wire.Welcome)
        first = (wire.ChatMessage("user", "Tell me about rivers."),)
        reply, done, _ = await _turn(ws, 1, first, "conv-7")
        assert done.cached_tokens == 0
        follow = (*first, wire.ChatMessage("assistant", reply), wire.ChatMessage("user", "And lakes?"))
        cold_text, cold, _ = await _turn(ws, 2, follow, "")
        warm_text, warm, _ = await _turn(ws, 3, follow, "conv-7")
        assert warm_text == cold_text and cold.cached_tokens == 0
        assert done.prompt_tokens <= warm.cached_tokens < warm.prompt_tokens
        for _ in range(20):  # the next periodic report lists the session
            ev = wire.decode((await ws.receive(timeout=5)).data)
            if isinstance(ev, wire.Load) and "conv-7" in ev.sessions:
                break
        else:
            raise AssertionError("no load report listed the session")
