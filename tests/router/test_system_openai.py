"""The unchanged ``openai`` package against the router: streaming, non-streaming, errors."""

from __future__ import annotations

import aiohttp
import openai
import pytest

from tests.router.conftest import NodeProc, StartRouter
from tests.router.wsclient import LONG_PROMPT


@pytest.fixture
async def client(start_router: StartRouter, fleet_nodes: dict[str, NodeProc]) -> openai.AsyncOpenAI:
    router = await start_router([fleet_nodes["edge"], fleet_nodes["cloud"]])
    return openai.AsyncOpenAI(base_url=router.http + "/v1", api_key="sk-test", max_retries=0, timeout=60)


async def test_non_streaming_short_prompt_goes_to_edge(client: openai.AsyncOpenAI) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        model="switchyard", messages=[{"role": "user", "content": "Hello!"}], max_tokens=10
    )
    assert raw.headers["x-switchyard-route"] == "edge; node=edge-1"
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.role == "assistant"
    assert completion.choices[0].message.content
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert completion.usage is not None and completion.usage.completion_tokens >= 1


async def test_streaming_long_prompt_goes_to_cloud(client: openai.AsyncOpenAI) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        model="switchyard",
        messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": LONG_PROMPT}],
        max_tokens=64,
        extra_body={"ignore_eos": True},
        stream=True,
        stream_options={"include_usage": True},
    )
    assert raw.headers["x-switchyard-route"] == "cloud; node=cloud-1"
    stream = raw.parse()
    pieces: list[str] = []
    finish = None
    usage = None
    chunks = [chunk async for chunk in stream]
    assert chunks[0].choices[0].delta.role == "assistant"  # the role chunk comes first
    assert chunks[-1].usage is not None and not chunks[-1].choices  # the usage chunk comes last
    for chunk in chunks:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            finish = choice.finish_reason or finish
    assert len(pieces) >= 2
    assert finish in ("stop", "length")
    assert usage is not None and usage.completion_tokens >= 1


async def test_model_name_selects_the_tier(client: openai.AsyncOpenAI) -> None:
    raw = await client.chat.completions.with_raw_response.create(
        model="switchyard-cloud", messages=[{"role": "user", "content": "Hi"}], max_tokens=4
    )
    assert raw.headers["x-switchyard-route"].startswith("cloud;")


async def test_models_list(client: openai.AsyncOpenAI) -> None:
    models = [m.id async for m in client.models.list()]
    assert "switchyard" in models


async def test_invalid_requests_get_openai_style_errors(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        await client.chat.completions.create(model="switchyard", messages=[], max_tokens=4)
    assert info.value.code == "invalid_params"
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(
            model="switchyard", messages=[{"role": "user", "content": "hi"}], temperature=99
        )
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(
            model="switchyard",
            messages=[{"role": "robot", "content": "hi"}],  # type: ignore[list-item]
        )
    base = str(client.base_url).rstrip("/")
    async with aiohttp.ClientSession() as http:
        async with http.post(base + "/chat/completions", data=b"{oops") as resp:
            assert resp.status == 400
            body = await resp.json()
            assert body["error"]["code"] == "malformed_json"
    # The router still serves after all that.
    ok = await client.chat.completions.create(
        model="switchyard", messages=[{"role": "user", "content": "Hi"}], max_tokens=3
    )
    assert ok.choices[0].message.content is not None
