"""A node's standalone OpenAI-compatible endpoint: ``POST /v1/chat/completions``, ``GET /v1/models``.

Lets a node be used without a router, and lets the router's OpenAI upstream adapter be tested
against a real server. Sampling, streaming and errors are the same as over the node protocol.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from switchyard import openai_format as oai
from switchyard.engine import Event, Failed, Finished, QueueFull, TextChunk
from switchyard.node_server import STATE, NodeState

MAX_BODY_BYTES = 1024 * 1024
MAX_MESSAGE_CHARS = 256 * 1024


def add_routes(app: web.Application) -> None:
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", list_models)


async def list_models(request: web.Request) -> web.Response:
    ident = request.app[STATE].identity
    data = [{"id": ident.model, "object": "model", "created": int(time.time()), "owned_by": ident.node_id}]
    return web.json_response({"object": "list", "data": data})


def _error(status: int, message: str, code: str, param: str | None = None) -> web.Response:
    kind = "invalid_request_error" if status < 500 else "server_error"
    return web.json_response(
        {"error": {"message": message, "type": kind, "param": param, "code": code}}, status=status
    )


async def chat_completions(request: web.Request) -> web.StreamResponse:
    state: NodeState = request.app[STATE]
    if not state.ready or state.draining:
        return _error(503, "node is not taking requests", "not_ready")
    raw = await request.content.read(MAX_BODY_BYTES + 1)
    if len(raw) > MAX_BODY_BYTES:
        return _error(413, f"request body over {MAX_BODY_BYTES} bytes", "too_large")
    try:
        body: Any = json.loads(raw)
        parsed = oai.parse_request(body, max_chars=MAX_MESSAGE_CHARS)
    except ValueError as exc:
        param = exc.param if isinstance(exc, oai.OpenAIRequestError) else None
        return _error(400, str(exc), "invalid_request", param)
    completion_id = "chatcmpl-" + uuid.uuid4().hex
    created = int(time.time())
    model = state.identity.model
    events = state.engine.generate(parsed.messages, parsed.params)
    try:
        # A full queue shows at the first event: take it before any response is started.
        try:
            first = await anext(events)
        except QueueFull as exc:
            return _error(503, str(exc), "overloaded")
        if not parsed.stream:
            parts: list[str] = []
            async for ev in _chain(first, events):
                if isinstance(ev, TextChunk):
                    parts.append(ev.text)
                elif isinstance(ev, Finished):
                    usage = oai.usage(ev.prompt_tokens, ev.completion_tokens)
                    return web.json_response(
                        oai.completion_body(completion_id, created, model, "".join(parts), ev.reason, usage)
                    )
                elif isinstance(ev, Failed):
                    return _error(500, ev.message, ev.code)
            return _error(500, "generation ended without finishing", "internal_error")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        writer = oai.ChunkWriter(completion_id, created, model)
        await resp.write(writer.delta({"role": "assistant", "content": ""}))
        async for ev in _chain(first, events):
            if isinstance(ev, TextChunk):
                await resp.write(writer.text(ev.text))
            elif isinstance(ev, Finished):
                await resp.write(writer.delta({}, ev.reason))
                if parsed.include_usage:
                    await resp.write(writer.usage(oai.usage(ev.prompt_tokens, ev.completion_tokens)))
            elif isinstance(ev, Failed):
                await resp.write(oai.sse_error(ev.message, "server_error", ev.code))
                return resp
        await resp.write(oai.DONE_LINE)
        return resp
    finally:
        await events.aclose()  # type: ignore[attr-defined]


async def _chain(first: Event, rest: AsyncIterator[Event]) -> AsyncIterator[Event]:
    yield first
    async for ev in rest:
        yield ev
