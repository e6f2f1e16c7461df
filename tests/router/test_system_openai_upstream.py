"""OpenAI-compatible servers as upstreams: a node's own endpoint, reached through the adapter."""

from __future__ import annotations

import aiohttp
import openai

from router.config import NodeEndpoint
from tests.router.conftest import NodeProc, StartRouter
from tests.router.wsclient import LONG_PROMPT, chat


def _openai_endpoint(node: NodeProc, node_id: str) -> NodeEndpoint:
    return NodeEndpoint(
        id=node_id,
        url=f"http://127.0.0.1:{node.port}/v1",
        kind=node.kind,  # type: ignore[arg-type]
        protocol="openai",
        model="whatever-the-server-serves",
        context_window=2048,
    )


async def test_node_serves_the_openai_api_standalone(fleet_nodes: dict[str, NodeProc]) -> None:
    client = openai.AsyncOpenAI(base_url=f"http://127.0.0.1:{fleet_nodes['cloud'].port}/v1", api_key="x")
    models = [m.id async for m in client.models.list()]
    assert models == ["switchyard-cloud-demo"]
    stream = await client.chat.completions.create(
        model=models[0], messages=[{"role": "user", "content": "Hi"}], max_tokens=8, stream=True
    )
    pieces = [c.choices[0].delta.content async for c in stream if c.choices and c.choices[0].delta.content]
    assert pieces
    whole = await client.chat.completions.create(
        model=models[0], messages=[{"role": "user", "content": "Hi"}], max_tokens=8
    )
    assert whole.usage is not None and whole.usage.completion_tokens >= 1


async def test_router_streams_from_an_openai_compatible_cloud(
    start_router: StartRouter, fleet_nodes: dict[str, NodeProc]
) -> None:
    router = await start_router([fleet_nodes["edge"]], wait_for=1)
    # Replace nothing: add the cloud through the OpenAI adapter next to the native edge node.
    from router.state import FLEET
    from router.upstream.openai_client import OpenAIUpstream

    fleet = router.app[FLEET]
    async with aiohttp.ClientSession() as http:
        upstream = OpenAIUpstream(_openai_endpoint(fleet_nodes["cloud"], "cloud-oai"), http)
        upstream.start()
        assert await upstream.wait_connected(within_s=10)
        fleet.add(upstream)
        try:
            async with http.ws_connect(router.ws) as ws:
                result = await chat(ws, LONG_PROMPT, params={"max_tokens": 64, "ignore_eos": True})
            assert result.error is None, result.error
            assert result.done is not None
            route = result.done["route"]
            assert (route["target"], route["node"]) == ("cloud", "cloud-oai")
            assert route["reason"].startswith("long-prompt")
            assert len(result.deltas) >= 2
            assert result.done["usage"]["completion_tokens"] >= 2
        finally:
            await upstream.close()


async def test_router_config_with_openai_upstream(
    start_router: StartRouter, fleet_nodes: dict[str, NodeProc]
) -> None:
    """The production shape: the upstream comes from the router's config file."""
    ep = _openai_endpoint(fleet_nodes["cloud"], "cloud-cfg")
    router = await start_router([], nodes=(ep,), wait_for=0)
    from router.state import FLEET

    assert await router.app[FLEET].all()[0].wait_connected(within_s=10)
    client = openai.AsyncOpenAI(base_url=router.http + "/v1", api_key="x", max_retries=0)
    raw = await client.chat.completions.with_raw_response.create(
        model="switchyard", messages=[{"role": "user", "content": "Hi"}], max_tokens=6, stream=True
    )
    assert raw.headers["x-switchyard-route"] == "cloud; node=cloud-cfg"  # the edge is absent: fallback
    pieces = [
        c.choices[0].delta.content async for c in raw.parse() if c.choices and c.choices[0].delta.content
    ]
    assert pieces
