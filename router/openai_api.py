"""The OpenAI-compatible HTTP API: ``POST /v1/chat/completions`` and ``GET /v1/models``."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from router.admission import bearer, identify
from router.chat_types import ChatEvent, ChatRequest, Completed, Route, RouteChosen, TextOut
from router.errors import InvalidParams, MalformedJSON, RetryLater, SwitchyardError
from router.metrics import RouterMetrics
from router.request_ids import new_request_id
from router.state import CHAT, CONFIG, METRICS
from switchyard import openai_format as oai

log = logging.getLogger(__name__)

ROUTER_MODELS = ("switchyard", "switchyard-edge", "switchyard-cloud")


def error_response(exc: SwitchyardError) -> web.Response:
    body = {"error": {"message": exc.message, "type": exc.openai_type, "param": exc.param, "code": exc.code}}
    headers = {}
    if isinstance(exc, RetryLater):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after_s)))
    return web.json_response(body, status=exc.http_status, headers=headers)


async def list_models(request: web.Request) -> web.Response:
    now = int(time.time())
    data = [{"id": m, "object": "model", "created": now, "owned_by": "switchyard"} for m in ROUTER_MODELS]
    return web.json_response({"object": "list", "data": data})


async def chat_completions(request: web.Request) -> web.StreamResponse:
    chat = request.app[CHAT]
    metrics = request.app[METRICS]
    cfg = request.app[CONFIG]
    try:
        tenant = identify(cfg.auth, bearer(request.headers.get("Authorization")))
        body = await _read_json(request, cfg.max_frame_bytes)
        try:
            parsed = oai.parse_request(body, max_chars=cfg.max_message_chars)
        except oai.OpenAIRequestError as exc:
            raise InvalidParams(exc.message, param=exc.param) from exc
    except SwitchyardError as exc:
        return _failed(metrics, exc)
    req = ChatRequest(
        request_id=new_request_id(),
        messages=parsed.messages,
        params=parsed.params,
        api="openai",
        model=parsed.model,
        tenant=tenant,
    )
    events = chat.run(req)
    try:
        first = await anext(events)
    except SwitchyardError as exc:
        return _failed(metrics, exc)
    assert isinstance(first, RouteChosen)
    headers = {"x-switchyard-route": _route_header(first.route), "x-request-id": req.request_id}
    completion_id = "chatcmpl-" + req.request_id
    created = int(time.time())
    if not parsed.stream:
        return await _whole(events, metrics, completion_id, created, parsed.model, headers)
    resp = web.StreamResponse(
        headers={**headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await resp.prepare(request)
    writer = oai.ChunkWriter(completion_id, created, parsed.model)
    # Chunks that are ready together go out in one write (one system call): the role chunk with the
    # first text, and the finish chunk with the usage chunk and [DONE].
    pending = writer.delta({"role": "assistant", "content": ""})
    try:
        async for ev in events:
            if isinstance(ev, TextOut):
                await resp.write(pending + writer.text(ev.text))
                pending = b""
            elif isinstance(ev, Completed):
                pending += writer.delta({}, ev.finish_reason)
                if parsed.include_usage:
                    pending += writer.usage(oai.usage(ev.prompt_tokens, ev.completion_tokens))
        await resp.write(pending + oai.DONE_LINE)
        metrics.requests_by("openai", "ok").inc()
    except SwitchyardError as exc:
        metrics.errors.labels(exc.code).inc()
        metrics.requests_by("openai", exc.code).inc()
        await resp.write(pending + oai.sse_error(exc.message, exc.openai_type, exc.code))
    except ConnectionError:
        # The client went away: closing the event stream cancels the upstream generation.
        metrics.requests_by("openai", "client_gone").inc()
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    return resp


def _failed(metrics: RouterMetrics, exc: SwitchyardError) -> web.Response:
    metrics.errors.labels(exc.code).inc()
    metrics.requests_by("openai", exc.code).inc()
    return error_response(exc)


async def _whole(
    events: AsyncIterator[ChatEvent],
    metrics: RouterMetrics,
    completion_id: str,
    created: int,
    model: str,
    headers: dict[str, str],
) -> web.Response:
    try:
        async for ev in events:
            if isinstance(ev, Completed):
                body = oai.completion_body(
                    completion_id,
                    created,
                    model,
                    ev.text,
                    ev.finish_reason,
                    oai.usage(ev.prompt_tokens, ev.completion_tokens),
                )
                body["switchyard"] = {
                    "route": ev.route.as_dict(),
                    "timings": {"ttft_ms": round(ev.ttft_ms, 2), "total_ms": round(ev.total_ms, 2)},
                }
                metrics.requests_by("openai", "ok").inc()
                return web.json_response(body, headers=headers)
    except SwitchyardError as exc:
        return _failed(metrics, exc)
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    return _failed(metrics, SwitchyardError("the reply ended without completing"))


def _route_header(route: Route) -> str:
    return f"{route.target}; node={route.node}"


async def _read_json(request: web.Request, limit: int) -> Any:
    if request.content_length is not None and request.content_length > limit:
        raise InvalidParams(f"request body over {limit} bytes")
    raw = await request.content.read(limit + 1)
    if len(raw) > limit:
        raise InvalidParams(f"request body over {limit} bytes")
    try:
        body = json.loads(raw)
    except ValueError as exc:
        raise MalformedJSON(f"request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise MalformedJSON("request body must be a JSON object")
    return body
