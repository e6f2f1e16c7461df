"""A tensor-parallel rank that dies takes the cloud node to not-ready within seconds, never a hang."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import torch

from cloud_backend.llama import LlamaForCausalLM, save_llama
from cloud_backend.server import build_app
from cloud_backend.tp_launch import launch
from cloud_backend.tp_lm import RankFailure
from switchyard import wire
from switchyard.lm import ModelConfig
from switchyard.node_server import NodeOptions
from tests.ports import serving

DETECT_WITHIN_S = 3.0


@pytest.fixture
async def node(demo_models: Any) -> AsyncIterator[str]:
    opts = NodeOptions(
        model_dir=demo_models.cloud, kind="cloud", node_id="cloud-tp", secret="s", max_running=4
    )
    app = build_app(opts, tp=2, tp_timeout_s=20, tp_cuda=False)
    async with serving(app) as port:
        yield f"127.0.0.1:{port}"


async def _ready(http: aiohttp.ClientSession, base: str) -> int:
    async with http.get(f"http://{base}/readyz") as resp:
        return resp.status


async def _next_event(ws: aiohttp.ClientWebSocketResponse) -> wire.Message:
    while True:
        msg = wire.decode((await ws.receive(timeout=10)).data)
        if not isinstance(msg, wire.Load):
            return msg


async def test_killed_rank_makes_the_node_not_ready_and_fails_the_stream(node: str) -> None:
    followers = [p for p in multiprocessing.active_children() if p.name == "switchyard-tp-rank1"]
    assert len(followers) == 1 and followers[0].pid is not None
    async with aiohttp.ClientSession() as http, http.ws_connect(f"ws://{node}/node") as ws:
        assert await _ready(http, node) == 200
        await ws.send_bytes(wire.encode(wire.Hello(wire.PROTOCOL_VERSION, "r", "s")))
        assert isinstance(await _next_event(ws), wire.Welcome)
        params = wire.SamplingParams(max_tokens=1500, ignore_eos=True)
        await ws.send_bytes(wire.encode(wire.Generate(1, (wire.ChatMessage("user", "Hello"),), params)))
        assert isinstance(await _next_event(ws), wire.Delta)  # streaming, with both ranks in every step

        os.kill(followers[0].pid, signal.SIGKILL)
        killed = time.monotonic()
        while await _ready(http, node) != 503:
            assert time.monotonic() - killed < DETECT_WITHIN_S, "still ready after a rank died"
            await asyncio.sleep(0.05)

        # The stream that was running ends with a typed error, not silence.
        while not isinstance(ev := await _next_event(ws), wire.Error | wire.Done):
            assert isinstance(ev, wire.Delta)
        assert isinstance(ev, wire.Error) and ev.sid == 1 and ev.code == "inference_error", ev
        assert "RankFailure" in ev.message
        assert time.monotonic() - killed < DETECT_WITHIN_S

        # New streams are refused at once, so routers send them elsewhere.
        await ws.send_bytes(wire.encode(wire.Generate(2, (wire.ChatMessage("user", "Hi"),), params)))
        refused = await _next_event(ws)
        assert isinstance(refused, wire.Error) and refused.sid == 2


def test_a_hung_rank_is_found_by_the_idle_ping(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = ModelConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=24,
        max_position_embeddings=32,
    )
    save_llama(LlamaForCausalLM(config), tmp_path)
    threads = torch.get_num_threads()
    lm = launch(tmp_path, 2, timeout_s=20, stall_s=1.0, cuda=False)
    try:
        lm.prefill([1, 2, 3])
        (follower,) = [p for p in multiprocessing.active_children() if p.name == "switchyard-tp-rank1"]
        assert follower.pid is not None
        os.kill(follower.pid, signal.SIGSTOP)  # alive but silent: only the ping can tell
        stopped = time.monotonic()
        while lm.healthy():
            assert time.monotonic() - stopped < 1.0 + 1.0 + DETECT_WITHIN_S, "a hung rank went unnoticed"
            time.sleep(0.05)
        assert lm.failure is not None and "stopped answering" in lm.failure
        with pytest.raises(RankFailure):
            lm.prefill([4])
    finally:
        lm.close()  # kills the stopped follower too
        torch.set_num_threads(threads)
