"""A node's own OpenAI endpoint: a full queue is a clean 503, streamed or not."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from switchyard.node_server import NodeOptions, build_node_app
from tests.ports import serving


@pytest.fixture
async def full_node(demo_models: Any) -> AsyncIterator[str]:
    from edge_runtime.onnx_lm import load

    # max_queued=0: every request finds the queue full.
    opts = NodeOptions(model_dir=demo_models.edge, kind="edge", node_id="edge-full", max_queued=0)
    async with serving(build_node_app(load(demo_models.edge), opts)) as port:
        yield f"http://127.0.0.1:{port}/v1/chat/completions"


@pytest.mark.parametrize("stream", [False, True])
async def test_full_queue_is_a_503_before_any_stream_starts(full_node: str, stream: bool) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "stream": stream}
    async with aiohttp.ClientSession() as http, http.post(full_node, json=body) as resp:
        assert resp.status == 503
        assert (await resp.json())["error"]["code"] == "overloaded"
