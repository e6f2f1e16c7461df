"""Through a running router: prompt cache hits, API keys, rate limits (429) and overload (503)."""

from __future__ import annotations

import asyncio

import aiohttp
import openai
import pytest

from router.admission import AuthConfig, key_digest
from router.limits import KeyLimits, LimitsConfig
from tests.router.conftest import NodeProc, StartRouter
from tests.router.wsclient import chat

ASK = {"model": "switchyard", "messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 6}


@pytest.mark.parametrize("use_redis", [False, True])
async def test_repeat_is_served_from_the_cache(
    start_router: StartRouter,
    fleet_nodes: dict[str, NodeProc],
    use_redis: bool,
    request: pytest.FixtureRequest,
) -> None:
    redis_url = request.getfixturevalue("redis_url") if use_redis else None
    router = await start_router([fleet_nodes["edge"], fleet_nodes["cloud"]], redis_url=redis_url)
    client = openai.AsyncOpenAI(base_url=router.http + "/v1", api_key="k1", max_retries=0)
    first = await client.chat.completions.with_raw_response.create(**ASK)  # type: ignore[call-overload]
    # Same conversation up to whitespace: a hit, served without a node.
    again = await client.chat.completions.with_raw_response.create(  # type: ignore[call-overload]
        **{**ASK, "messages": [{"role": "user", "content": "  Name a   colour. "}]}
    )
    assert first.headers["x-switchyard-route"] == "edge; node=edge-1"
    assert again.headers["x-switchyard-route"] == "edge; node=cache"
    assert again.parse().choices[0].message.content == first.parse().choices[0].message.content
    # Another tenant never sees it; sampled requests are not cached.
    other = openai.AsyncOpenAI(base_url=router.http + "/v1", api_key="k2", max_retries=0)
    raw = await other.chat.completions.with_raw_response.create(**ASK)  # type: ignore[call-overload]
    assert raw.headers["x-switchyard-route"] == "edge; node=edge-1"
    for _ in range(2):
        raw = await client.chat.completions.with_raw_response.create(  # type: ignore[call-overload]
            **{**ASK, "temperature": 0.8}
        )
        assert raw.headers["x-switchyard-route"] == "edge; node=edge-1"
    async with aiohttp.ClientSession() as http, http.get(router.http + "/metrics") as resp:
        text = await resp.text()
    assert 'switchyard_cache_total{result="hit"} 1.0' in text


async def test_streamed_hit_and_websocket_hit(
    start_router: StartRouter, fleet_nodes: dict[str, NodeProc]
) -> None:
    router = await start_router([fleet_nodes["edge"], fleet_nodes["cloud"]])
    client = openai.AsyncOpenAI(base_url=router.http + "/v1", api_key="k", max_retries=0)
    stream = await client.chat.completions.create(**ASK, stream=True)  # type: ignore[call-overload]
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    raw = await client.chat.completions.with_raw_response.create(**ASK, stream=True)  # type: ignore[call-overload]
    assert raw.headers["x-switchyard-route"].endswith("node=cache")
    assert "".join([c.choices[0].delta.content or "" async for c in raw.parse() if c.choices]) == text


async def test_api_keys_are_checked(start_router: StartRouter, fleet_nodes: dict[str, NodeProc]) -> None:
    auth = AuthConfig(require_api_key=True, keys={key_digest("sk-good"): {"tenant": "acme"}})  # type: ignore[dict-item]
    router = await start_router([fleet_nodes["edge"], fleet_nodes["cloud"]], auth=auth)
    good = openai.AsyncOpenAI(base_url=router.http + "/v1", api_key="sk-good", max_retries=0)
    assert (await good.chat.completions.create(**ASK)).choices  # type: ignore[call-overload]
    bad = openai.AsyncOpenAI(base_url=router.http + "/v1", api_key="sk-bad", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        await bad.chat.completions.create(**ASK)  # type: ignore[call-overload]
    async with aiohttp.ClientSession() as http:
        async with http.get(router.ws) as resp:  # no key on the WebSocket upgrade
            assert resp.status == 401
        async with http.ws_connect(router.ws + "?api_key=sk-good") as ws:
            result = await chat(ws, "Hi", params={"max_tokens": 3})
            assert result.done is not None


async def test_rate_limit_answers_429_with_retry_after(
    start_router: StartRouter, fleet_nodes: dict[str, NodeProc], redis_url: str
) -> None:
    limits = LimitsConfig(default=KeyLimits(requests_per_s=0.5, burst=2))
    router = await start_router(
        [fleet_nodes["edge"], fleet_nodes["cloud"]], limits=limits, redis_url=redis_url
    )
    async with aiohttp.ClientSession() as http:
        statuses = []
        for i in range(3):
            body = {**ASK, "messages": [{"role": "user", "content": f"Number {i}"}]}
            async with http.post(
                router.http + "/v1/chat/completions", json=body, headers={"Authorization": "Bearer rl-key"}
            ) as resp:
                statuses.append(resp.status)
                if resp.status == 429:
                    retry_after = int(resp.headers["Retry-After"])
                    assert (await resp.json())["error"]["code"] == "rate_limited"
        assert statuses == [200, 200, 429]
        assert 1 <= retry_after <= 2
        # Another key has its own bucket.
        async with http.post(
            router.http + "/v1/chat/completions", json=ASK, headers={"Authorization": "Bearer other-key"}
        ) as resp:
            assert resp.status == 200
        # WebSocket chats are limited too, with a typed error frame.
        async with http.ws_connect(router.ws + "?api_key=rl-key") as ws:
            result = await chat(ws, "Hi", params={"max_tokens": 3})
        assert result.error is not None and result.error["code"] == "rate_limited"
        assert result.error["retry_after_s"] > 0


async def test_overload_answers_503_early(
    start_router: StartRouter, fleet_nodes: dict[str, NodeProc]
) -> None:
    router = await start_router([fleet_nodes["edge"], fleet_nodes["cloud"]], max_inflight=2)
    async with aiohttp.ClientSession() as http:
        slow = {**ASK, "max_tokens": 900, "ignore_eos": True, "stream": True}

        async def one(i: int) -> int:
            body = {**slow, "messages": [{"role": "user", "content": f"Story {i}"}]}
            async with http.post(router.http + "/v1/chat/completions", json=body) as resp:
                await resp.read()
                return resp.status

        statuses = await asyncio.gather(*(one(i) for i in range(6)))
    assert statuses.count(200) >= 2
    assert statuses.count(503) >= 1
    assert set(statuses) <= {200, 503}
