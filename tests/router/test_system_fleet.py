"""Fleet registration through Redis, and draining a node under load."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp

from router.state import FLEET
from tests.router.conftest import NodeProc, StartRouter, start_node, stop_node
from tests.router.wsclient import ChatResult, collect


async def _wait(predicate: object, within_s: float) -> float:
    started = time.monotonic()
    while time.monotonic() - started < within_s:
        if predicate():  # type: ignore[operator]
            return time.monotonic() - started
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition not met within {within_s}s")


async def test_nodes_are_discovered_dropped_and_rediscovered(
    start_router: StartRouter, demo_models: object, redis_url: str
) -> None:
    prefix_args = ("--redis-url", redis_url)
    router = await start_router([], redis_url=redis_url)
    fleet = router.app[FLEET]
    edge = start_node("edge", demo_models.edge, "edge-reg", extra=prefix_args)  # type: ignore[attr-defined]
    try:
        # Discovered within 2 s of being ready (the heartbeat is already in Redis by then).
        await _wait(lambda: bool(fleet.healthy("edge")), within_s=2.0)
        edge.kill()
        # Dropped from the fleet within 10 s of going silent.
        await _wait(lambda: fleet.get("edge-reg") is None, within_s=10.0)
        edge = start_node("edge", demo_models.edge, "edge-reg", extra=prefix_args)  # type: ignore[attr-defined]
        await _wait(lambda: bool(fleet.healthy("edge")), within_s=2.0)
        async with aiohttp.ClientSession() as http, http.ws_connect(router.ws) as ws:
            await ws.send_str(
                json.dumps({"type": "chat", "id": "a", "message": "Hi", "params": {"max_tokens": 4}})
            )
            result = await collect(ws, "a")
        assert result.done is not None and result.done["route"]["node"] == "edge-reg"
    finally:
        stop_node(edge)


async def test_drain_finishes_running_streams_and_sends_new_ones_elsewhere(
    start_router: StartRouter, demo_models: object, fleet_nodes: dict[str, NodeProc]
) -> None:
    edge = start_node("edge", demo_models.edge, "edge-drain")  # type: ignore[attr-defined]
    try:
        router = await start_router([edge, fleet_nodes["cloud"]])
        ids = [f"d{i}" for i in range(4)]
        results: dict[str, ChatResult] = {chat_id: ChatResult() for chat_id in [*ids, "new"]}
        async with aiohttp.ClientSession() as http, http.ws_connect(router.ws) as ws:
            for chat_id in ids:
                await ws.send_str(
                    json.dumps(
                        {
                            "type": "chat",
                            "id": chat_id,
                            "message": "Hi",
                            "params": {"max_tokens": 900, "ignore_eos": True},
                        }
                    )
                )
            terminated = False
            while any(r.done is None and r.error is None for r in results.values()):
                frame = await ws.receive_json(timeout=30)
                r = results[frame["id"]]
                if frame["type"] == "delta":
                    r.deltas.append(frame["text"])
                elif frame["type"] == "done":
                    r.done = frame
                elif frame["type"] == "error":
                    r.error = frame
                if not terminated and all(results[i].deltas for i in ids):
                    # Every stream has started on the edge node: SIGTERM it (drain), then ask again.
                    assert all(results[i].done is None for i in ids), "streams too short to test a drain"
                    edge.proc.terminate()
                    terminated = True
                    await asyncio.sleep(0.3)
                    await ws.send_str(
                        json.dumps(
                            {"type": "chat", "id": "new", "message": "Hi", "params": {"max_tokens": 4}}
                        )
                    )
        for chat_id in ids:
            done = results[chat_id].done
            assert done is not None, results[chat_id].error
            assert done["route"]["node"] == "edge-drain"
            assert "failover" not in done["route"]
            assert done["usage"]["completion_tokens"] == 900
        new = results["new"].done
        assert new is not None and new["route"]["node"] == "cloud-1"
        assert edge.proc.wait(timeout=30) == 0
    finally:
        stop_node(edge)
