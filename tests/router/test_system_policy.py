"""Policies in a running router: hot reload under traffic, the classifier's score, stickiness."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import aiohttp

from tests.router.conftest import NodeProc, StartRouter
from tests.router.wsclient import chat

ALL_TO = "version: 1\nname: all-{route}\nsticky: false\nrules:\n  - name: all-{route}\n    route: {route}\n"


def _rewrite(path: Path, text: str) -> None:
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


async def _route_of(ws: aiohttp.ClientWebSocketResponse, chat_id: str) -> str:
    result = await chat(ws, "Hello!", chat_id=chat_id, params={"max_tokens": 3})
    assert result.done is not None, result.error
    return str(result.done["route"]["target"])


async def test_policy_edit_takes_effect_while_serving(
    start_router: StartRouter, fleet_nodes: dict[str, NodeProc], tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(ALL_TO.format(route="edge"))
    router = await start_router([fleet_nodes["edge"], fleet_nodes["cloud"]], policy=policy)
    async with aiohttp.ClientSession() as http, http.ws_connect(router.ws) as ws:
        assert await _route_of(ws, "a") == "edge"
        _rewrite(policy, ALL_TO.format(route="cloud"))
        for i in range(40):  # the watcher polls every second
            await asyncio.sleep(0.1)
            if await _route_of(ws, f"b{i}") == "cloud":
                break
        else:
            raise AssertionError("the edited policy was not picked up")
        _rewrite(policy, "version: 1\nname: broken\nrules: [{name: x, route: moon}]\n")
        await asyncio.sleep(1.5)
        assert await _route_of(ws, "c") == "cloud"  # the old, valid policy stays
        async with http.get(router.http + "/metrics") as resp:
            text = await resp.text()
    assert 'switchyard_policy_reloads_total{outcome="ok"} 1.0' in text
    assert 'switchyard_policy_reloads_total{outcome="invalid"} 1.0' in text


async def test_classifier_score_drives_a_policy(
    start_router: StartRouter, fleet_nodes: dict[str, NodeProc], tmp_path: Path
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: 1\nname: by-score\nsticky: false\nrules:\n"
        "  - name: hard\n    when: {score: {gte: 0.0}}\n    route: cloud\n"
        "  - name: rest\n    route: edge\n"
    )
    router = await start_router([fleet_nodes["edge"], fleet_nodes["cloud"]], policy=policy)
    async with aiohttp.ClientSession() as http, http.ws_connect(router.ws) as ws:
        result = await chat(ws, "Solve for x: 3x + 7 = 22.", params={"max_tokens": 3})
    assert result.done is not None
    assert result.done["route"]["target"] == "cloud"
    assert "score=0." in result.done["route"]["reason"]


async def test_conversation_sticks_to_its_tier(
    start_router: StartRouter, fleet_nodes: dict[str, NodeProc]
) -> None:
    router = await start_router([fleet_nodes["edge"], fleet_nodes["cloud"]])
    long = "Tell me everything about " + "rivers and mountains and " * 12
    async with aiohttp.ClientSession() as http, http.ws_connect(router.ws) as ws:
        first = await chat(ws, long, chat_id="1", params={"max_tokens": 3})
        assert first.done is not None and first.done["route"]["target"] == "cloud"
        sid = first.done["session_id"]
        second = await chat(ws, "Thanks!", chat_id="2", session_id=sid, params={"max_tokens": 3})
        assert second.done is not None
        assert second.done["route"]["target"] == "cloud"  # a short follow-up, but the chat stays put
        assert second.done["route"]["reason"].startswith("sticky")
        # A new conversation with the same short prompt goes to the edge.
        third = await chat(ws, "Thanks!", chat_id="3", params={"max_tokens": 3})
        assert third.done is not None and third.done["route"]["target"] == "edge"
