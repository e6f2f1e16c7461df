"""End to end over real sockets: WebSocket client -> router -> edge/cloud node processes -> back."""

from __future__ import annotations

import asyncio
import json
import logging

import aiohttp
import pytest

from router.state import CHAT, FLEET
from switchyard.logfmt import JsonFormatter
from switchyard.paths import POLICIES_DIR
from tests.router.conftest import NodeProc, StartRouter, start_node, stop_node
from tests.router.wsclient import LONG_PROMPT, chat, collect


async def test_short_prompt_streams_from_edge_long_from_cloud(
    start_router: StartRouter, fleet_nodes: dict[str, NodeProc]
) -> None:
    router = await start_router([fleet_nodes["edge"], fleet_nodes["cloud"]])
    async with aiohttp.ClientSession() as http, http.ws_connect(router.ws) as ws:
        short = await chat(ws, "Hello there!", chat_id="s", params={"max_tokens": 64, "ignore_eos": True})
        long = await chat(ws, LONG_PROMPT, chat_id="l", params={"max_tokens": 64, "ignore_eos": True})
    for result, target, node in ((short, "edge", "edge-1"), (long, "cloud", "cloud-1")):
        assert result.error is None, result.error
        assert result.done is not None
        assert result.done["route"]["target"] == target
        assert result.done["route"]["node"] == node
        assert result.done["route"]["reason"]
        assert len(result.deltas) >= 2, "the reply must arrive as a stream of deltas"
        assert result.done["usage"]["completion_tokens"] >= 1
        assert result.done["timings"]["ttft_ms"] <= result.done["timings"]["total_ms"]
        assert result.done["session_id"]
    assert short.done and "short-prompt" in short.done["route"]["reason"]


async def test_concurrent_chats_on_one_socket(
    start_router: StartRouter, fleet_nodes: dict[str, NodeProc]
) -> None:
    router = await start_router([fleet_nodes["edge"], fleet_nodes["cloud"]])
    async with aiohttp.ClientSession() as http, http.ws_connect(router.ws) as ws:
        for i in range(4):
            await ws.send_str(
                json.dumps(
                    {"type": "chat", "id": f"c{i}", "message": f"Hi number {i}", "params": {"max_tokens": 8}}
                )
            )
        done: dict[str, dict[str, object]] = {}
        while len(done) < 4:
            frame = await ws.receive_json(timeout=60)
            assert frame["type"] in ("delta", "route", "done"), frame
            if frame["type"] == "done":
                done[frame["id"]] = frame
    assert sorted(done) == ["c0", "c1", "c2", "c3"]
    assert len({d["session_id"] for d in done.values()}) == 4  # each new chat opens its own session


async def test_multi_turn_session_keeps_history(
    start_router: StartRouter, fleet_nodes: dict[str, NodeProc]
) -> None:
    router = await start_router([fleet_nodes["edge"], fleet_nodes["cloud"]])
    async with aiohttp.ClientSession() as http, http.ws_connect(router.ws) as ws:
        first = await chat(ws, "My name is Ada.", chat_id="t1", params={"max_tokens": 6})
        assert first.done is not None
        sid = first.done["session_id"]
        second = await chat(ws, "What is my name?", chat_id="t2", session_id=sid, params={"max_tokens": 6})
        assert second.done is not None and second.done["session_id"] == sid
        # The second turn's prompt includes the first turn, so it is longer than the first's.
        assert second.done["usage"]["prompt_tokens"] > first.done["usage"]["prompt_tokens"]
    session = await router.app[CHAT].sessions.get(sid)
    assert session is not None
    assert [m.role for m in session.messages] == ["user", "assistant"] * 2
    assert session.messages[0].content == "My name is Ada."
    assert session.messages[1].content == first.text


async def test_classifier_runs_only_where_the_policy_can_read_its_score(
    start_router: StartRouter, fleet_nodes: dict[str, NodeProc]
) -> None:
    # cost-saver reads the score in a rule that cannot move a sticky conversation, so the follow-up
    # turns of a conversation held on its tier are routed without the classifier.
    router = await start_router(
        [fleet_nodes["edge"], fleet_nodes["cloud"]], policy=POLICIES_DIR / "cost-saver.yaml"
    )
    service = router.app[CHAT]
    assert service.scorer is not None
    scored: list[str] = []
    real = service.scorer

    def counting(prompt: str) -> float:
        scored.append(prompt)
        return real(prompt)

    service.scorer = counting
    async with aiohttp.ClientSession() as http, http.ws_connect(router.ws) as ws:
        first = await chat(ws, "Name a colour.", chat_id="a", params={"max_tokens": 4})
        assert first.done is not None and first.done["route"]["reason"] == "everything-else"
        sid = first.done["session_id"]
        for i, text in enumerate(("And another?", "One more?")):
            turn = await chat(ws, text, chat_id=f"b{i}", session_id=sid, params={"max_tokens": 4})
            assert turn.done is not None and turn.done["route"]["reason"].startswith("sticky")
        fresh = await chat(ws, "Name a fruit.", chat_id="c", params={"max_tokens": 4})
        assert fresh.done is not None
    assert scored == ["Name a colour.", "Name a fruit."]


async def test_session_survives_router_restart_with_redis(
    start_router: StartRouter, fleet_nodes: dict[str, NodeProc], redis_url: str
) -> None:
    nodes = [fleet_nodes["edge"], fleet_nodes["cloud"]]
    first_router = await start_router(nodes, redis_url=redis_url)
    async with aiohttp.ClientSession() as http, http.ws_connect(first_router.ws) as ws:
        first = await chat(ws, "Remember the word heron.", chat_id="a", params={"max_tokens": 6})
    assert first.done is not None
    sid = first.done["session_id"]
    await first_router.stop()

    second_router = await start_router(nodes, redis_url=redis_url)
    async with aiohttp.ClientSession() as http, http.ws_connect(second_router.ws) as ws:
        second = await chat(ws, "Which word?", chat_id="b", session_id=sid, params={"max_tokens": 6})
    assert second.error is None, second.error
    assert second.done is not None and second.done["session_id"] == sid
    session = await second_router.app[CHAT].sessions.get(sid)
    assert session is not None
    assert [m.content for m in session.messages][::2] == ["Remember the word heron.", "Which word?"]


async def test_killed_node_falls_back_to_the_other_tier(
    start_router: StartRouter, demo_models: object
) -> None:
    edge = start_node("edge", demo_models.edge, "edge-doomed")  # type: ignore[attr-defined]
    cloud = start_node("cloud", demo_models.cloud, "cloud-2")  # type: ignore[attr-defined]
    try:
        router = await start_router([edge, cloud])
        edge.kill()
        async with aiohttp.ClientSession() as http, http.ws_connect(router.ws) as ws:
            result = await chat(ws, "Hi!", params={"max_tokens": 6})
        assert result.error is None, result.error
        assert result.done is not None
        assert result.done["route"]["target"] == "cloud"
        assert result.done["route"]["node"] == "cloud-2"
        assert "fell back" in result.done["route"]["reason"] or result.done["route"].get("fallback_from")
    finally:
        stop_node(edge)
        stop_node(cloud)


async def test_no_backend_gives_typed_error(start_router: StartRouter, demo_models: object) -> None:
    edge = start_node("edge", demo_models.edge, "edge-lonely")  # type: ignore[attr-defined]
    router = await start_router([edge])
    edge.kill()
    # Wait until the router has seen the connection drop, so this is the "nothing reachable" case.
    for _ in range(100):
        if not router.app[FLEET].any_healthy():
            break
        await asyncio.sleep(0.05)
    async with aiohttp.ClientSession() as http:
        async with http.get(router.http + "/readyz") as resp:
            assert resp.status == 503
        async with http.ws_connect(router.ws) as ws:
            result = await chat(ws, "Hi!")
    assert result.error is not None
    assert result.error["code"] == "no_backend"
    stop_node(edge)


async def test_health_ready_and_metrics(start_router: StartRouter, fleet_nodes: dict[str, NodeProc]) -> None:
    router = await start_router([fleet_nodes["edge"], fleet_nodes["cloud"]])
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(router.ws) as ws:
            await chat(ws, "Hello!", params={"max_tokens": 4})
        async with http.get(router.http + "/healthz") as resp:
            assert resp.status == 200
        async with http.get(router.http + "/readyz") as resp:
            body = await resp.json()
            assert resp.status == 200 and body["ready"] is True
            assert body["nodes"]["edge-1"]["connected"] is True
            assert body["nodes"]["edge-1"]["ejected"] is False
        async with http.get(router.http + "/metrics") as resp:
            text = await resp.text()
        async with http.get(router.http + "/") as resp:
            page = await resp.text()
    assert 'switchyard_routed_total{target="edge"} 1.0' in text
    assert "switchyard_ttft_seconds_bucket" in text
    assert 'switchyard_nodes_connected{target="cloud"} 1.0' in text
    assert "/v1/chat/ws" in page


async def test_cancel_stops_generation_upstream(
    start_router: StartRouter, fleet_nodes: dict[str, NodeProc]
) -> None:
    router = await start_router([fleet_nodes["edge"], fleet_nodes["cloud"]])
    async with aiohttp.ClientSession() as http, http.ws_connect(router.ws) as ws:
        await ws.send_str(
            json.dumps(
                {
                    "type": "chat",
                    "id": "x",
                    "message": "Tell me a story.",
                    "params": {"max_tokens": 400, "ignore_eos": True},
                }
            )
        )
        frame = await ws.receive_json(timeout=30)
        while frame["type"] != "delta":
            frame = await ws.receive_json(timeout=30)
        await ws.send_str(json.dumps({"type": "cancel", "id": "x"}))
        frames = [await ws.receive_json(timeout=30)]
        while frames[-1]["type"] == "delta":
            frames.append(await ws.receive_json(timeout=30))
        assert frames[-1] == {"type": "cancelled", "id": "x"}
        await _assert_node_idle(router, "edge-1")
        # The socket still works after a cancel.
        again = await chat(ws, "Hello again", chat_id="y", params={"max_tokens": 4})
        assert again.done is not None


async def test_client_disconnect_cancels_upstream(
    start_router: StartRouter, fleet_nodes: dict[str, NodeProc]
) -> None:
    router = await start_router([fleet_nodes["edge"], fleet_nodes["cloud"]])
    async with aiohttp.ClientSession() as http:
        ws = await http.ws_connect(router.ws)
        await ws.send_str(
            json.dumps(
                {
                    "type": "chat",
                    "id": "gone",
                    "message": "Tell me a story.",
                    "params": {"max_tokens": 400, "ignore_eos": True},
                }
            )
        )
        await collect_first_delta(ws)
        await ws.close()
    await _assert_node_idle(router, "edge-1")


async def collect_first_delta(ws: aiohttp.ClientWebSocketResponse) -> None:
    while (await ws.receive_json(timeout=30))["type"] != "delta":
        pass


async def _assert_node_idle(router: object, node_id: str) -> None:
    """The node itself reports no running stream (its load report), within a few seconds."""
    client = next(c for c in router.app[FLEET].all() if c.id == node_id)  # type: ignore[attr-defined]
    for _ in range(100):
        await asyncio.sleep(0.1)
        if client.outstanding == 0 and client.load.active == 0:
            return
    raise AssertionError(f"node still busy: outstanding={client.outstanding} load={client.load}")


async def test_bad_inputs_get_typed_errors_and_the_socket_survives(
    start_router: StartRouter, fleet_nodes: dict[str, NodeProc]
) -> None:
    router = await start_router([fleet_nodes["edge"], fleet_nodes["cloud"]], max_frame_bytes=2048)
    cases: list[tuple[str | bytes, str]] = [
        ("{not json", "malformed_json"),
        ("[1, 2]", "malformed_json"),
        (json.dumps({"type": "shout", "id": "a"}), "unknown_type"),
        (json.dumps({"id": "a"}), "unknown_type"),
        (json.dumps({"type": "chat", "id": "a", "message": "x" * 4000}), "frame_too_large"),
        (json.dumps({"type": "chat", "id": "a", "message": ""}), "invalid_params"),
        (json.dumps({"type": "chat", "message": "hi"}), "invalid_params"),
        (
            json.dumps({"type": "chat", "id": "a", "message": "hi", "params": {"temperature": -2}}),
            "invalid_params",
        ),
        (
            json.dumps({"type": "chat", "id": "a", "message": "hi", "params": {"max_tokens": 0}}),
            "invalid_params",
        ),
        (json.dumps({"type": "chat", "id": "a", "message": "hi", "params": {"top_p": 7}}), "invalid_params"),
        (json.dumps({"type": "chat", "id": "a", "message": "hi", "params": {"wat": 1}}), "invalid_params"),
        (
            json.dumps({"type": "chat", "id": "a", "message": "hi", "session_id": "s_unknownsession0"}),
            "unknown_session",
        ),
        (
            json.dumps({"type": "chat", "id": "a", "message": "hi", "session_id": "../../etc"}),
            "invalid_params",
        ),
        (b"\x00\x01binary", "malformed_json"),
    ]
    async with aiohttp.ClientSession() as http, http.ws_connect(router.ws) as ws:
        for frame, code in cases:
            if isinstance(frame, bytes):
                await ws.send_bytes(frame)
            else:
                await ws.send_str(frame)
            reply = await ws.receive_json(timeout=10)
            assert reply["type"] == "error", (frame, reply)
            assert reply["code"] == code, (frame, reply)
            assert reply["message"]
        ok = await chat(ws, "Still there?", chat_id="ok", params={"max_tokens": 4})
        assert ok.done is not None


async def test_node_killed_mid_stream_reply_continues_elsewhere(
    start_router: StartRouter, demo_models: object
) -> None:
    edge = start_node("edge", demo_models.edge, "edge-dies")  # type: ignore[attr-defined]
    cloud = start_node("cloud", demo_models.cloud, "cloud-3")  # type: ignore[attr-defined]
    try:
        router = await start_router([edge, cloud])
        async with aiohttp.ClientSession() as http, http.ws_connect(router.ws) as ws:
            await ws.send_str(
                json.dumps(
                    {
                        "type": "chat",
                        "id": "m",
                        "message": "Hi!",
                        "params": {"max_tokens": 800, "ignore_eos": True},
                    }
                )
            )
            deltas: list[str] = []
            frame = await ws.receive_json(timeout=30)
            while frame["type"] != "delta":
                frame = await ws.receive_json(timeout=30)
            deltas.append(frame["text"])
            edge.kill()
            result = await collect(ws, "m")
        assert result.error is None, result.error
        assert result.done is not None
        deltas += result.deltas
        route = result.done["route"]
        assert route["node"] == "cloud-3"
        assert route["failover"] and route["failover"][0].startswith("edge-dies -> cloud-3")
        # Exactly the requested length: nothing lost, nothing generated twice.
        assert result.done["usage"]["completion_tokens"] == 800
        session = await router.app[CHAT].sessions.get(result.done["session_id"])
        assert session is not None
        assert session.messages[-1].content == "".join(deltas)
    finally:
        stop_node(edge)
        stop_node(cloud)


async def test_logs_carry_request_ids_but_never_prompt_text(
    start_router: StartRouter, fleet_nodes: dict[str, NodeProc], caplog: pytest.LogCaptureFixture
) -> None:
    secret_prompt = "my password is hunter2-zebra"
    router = await start_router([fleet_nodes["edge"], fleet_nodes["cloud"]])
    with caplog.at_level(logging.DEBUG):
        async with aiohttp.ClientSession() as http, http.ws_connect(router.ws) as ws:
            result = await chat(ws, secret_prompt, params={"max_tokens": 4})
    assert result.done is not None
    done = [r for r in caplog.records if r.getMessage() == "chat completed"]
    assert done and getattr(done[0], "request_id", "")
    assert getattr(done[0], "target", "") == result.done["route"]["target"]
    for record in caplog.records:
        text = JsonFormatter().format(record)
        assert "hunter2" not in text and "hunter2" not in record.getMessage()
