"""The OpenAI-compatible HTTP API: ``POST /v1/chat/completions`` and ``GET /v1/models``."""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from aiohttp import web

from router.chat import ChatRequest, Completed, Route, RouteChosen, TextOut
from router.errors import InvalidParams, MalformedJSON, SwitchyardError
from router.state import CHAT, CONFIG, METRICS
from switchyard.wire import ChatMessage, SamplingParams

log = logging.getLogger(__name__)

ROUTER_MODELS = ("switchyard", "switchyard-edge", "switchyard-cloud")
_ROLE_ALIASES = {"developer": "system"}
# Fields of OpenAI's request that are accepted and have no effect here.
_IGNORED = frozenset(
    {
        "user",
        "frequency_penalty",
        "presence_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "metadata",
        "store",
        "parallel_tool_calls",
        "service_tier",
        "response_format",
        "stream_options",
        "n",
    }
)
_KNOWN = (
    frozenset(
        {
            "model",
            "messages",
            "stream",
            "max_tokens",
            "max_completion_tokens",
            "temperature",
            "top_p",
            "top_k",
            "seed",
            "stop",
        }
    )
    | _IGNORED
)


def error_response(exc: SwitchyardError) -> web.Response:
    body = {"error": {"message": exc.message, "type": exc.openai_type, "param": exc.param, "code": exc.code}}
    return web.json_response(body, status=exc.http_status)


async def list_models(request: web.Request) -> web.Response:
    now = int(time.time())
    data = [{"id": m, "object": "model", "created": now, "owned_by": "switchyard"} for m in ROUTER_MODELS]
    return web.json_response({"object": "list", "data": data})


async def chat_completions(request: web.Request) -> web.StreamResponse:
    chat = request.app[CHAT]
    metrics = request.app[METRICS]
    try:
        body = await _read_json(request, request.app[CONFIG].max_frame_bytes)
        req, stream, include_usage = _parse(body, request.app[CONFIG].max_message_chars)
    except SwitchyardError as exc:
        metrics.errors.labels(exc.code).inc()
        metrics.requests.labels("openai", exc.code).inc()
        return error_response(exc)
    completion_id = "chatcmpl-" + req.request_id
    created = int(time.time())
    events = chat.run(req)
    try:
        first = await anext(events)
    except SwitchyardError as exc:
        metrics.errors.labels(exc.code).inc()
        metrics.requests.labels("openai", exc.code).inc()
        return error_response(exc)
    assert isinstance(first, RouteChosen)
    headers = {"x-switchyard-route": _route_header(first.route), "x-request-id": req.request_id}
    if not stream:
        resp_whole = await _whole(events, req, completion_id, created, headers)
        outcome = "ok" if resp_whole.status == 200 else "upstream_error"
        metrics.requests.labels("openai", outcome).inc()
        return resp_whole
    resp = web.StreamResponse(
        headers={**headers, "Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await resp.prepare(request)

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        obj = {
            "id": completion_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": req.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"

    try:
        await resp.write(chunk({"role": "assistant", "content": ""}))
        async for ev in events:
            if isinstance(ev, TextOut):
                await resp.write(chunk({"content": ev.text}))
            elif isinstance(ev, Completed):
                await resp.write(chunk({}, ev.finish_reason))
                if include_usage:
                    usage = {
                        "id": completion_id,
                        "object": "chat.completion.chunk",
                        "created": created,
                        "model": req.model,
                        "choices": [],
                        "usage": _usage(ev),
                    }
                    await resp.write(b"data: " + json.dumps(usage).encode() + b"\n\n")
        await resp.write(b"data: [DONE]\n\n")
        metrics.requests.labels("openai", "ok").inc()
    except SwitchyardError as exc:
        metrics.errors.labels(exc.code).inc()
        metrics.requests.labels("openai", exc.code).inc()
        err = {"error": {"message": exc.message, "type": exc.openai_type, "param": None, "code": exc.code}}
        await resp.write(b"data: " + json.dumps(err).encode() + b"\n\n")
    except ConnectionError:
        # The client went away: closing the event stream cancels the upstream generation.
        metrics.requests.labels("openai", "client_gone").inc()
    finally:
        await events.aclose()  # type: ignore[attr-defined]
    return resp


async def _whole(
    events: Any, req: ChatRequest, completion_id: str, created: int, headers: dict[str, str]
) -> web.Response:
    try:
        async for ev in events:
            if isinstance(ev, Completed):
                body = {
                    "id": completion_id,
                    "object": "chat.completion",
                    "created": created,
                    "model": req.model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": ev.text},
                            "finish_reason": ev.finish_reason,
                        }
                    ],
                    "usage": _usage(ev),
                    "switchyard": {
                        "route": ev.route.as_dict(),
                        "timings": {"ttft_ms": round(ev.ttft_ms, 2), "total_ms": round(ev.total_ms, 2)},
                    },
                }
                return web.json_response(body, headers=headers)
    except SwitchyardError as exc:
        return error_response(exc)
    finally:
        await events.aclose()
    return error_response(SwitchyardError("the reply ended without completing"))


def _usage(ev: Completed) -> dict[str, int]:
    return {
        "prompt_tokens": ev.prompt_tokens,
        "completion_tokens": ev.completion_tokens,
        "total_tokens": ev.prompt_tokens + ev.completion_tokens,
    }


def _route_header(route: Route) -> str:
    return f"{route.target}; node={route.node}"


async def _read_json(request: web.Request, limit: int) -> dict[str, Any]:
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


def _parse(body: dict[str, Any], max_chars: int) -> tuple[ChatRequest, bool, bool]:
    unknown = set(body) - _KNOWN
    if unknown:
        raise InvalidParams(
            f"unsupported parameter(s): {', '.join(sorted(unknown))}", param=sorted(unknown)[0]
        )
    model = body.get("model", "switchyard")
    if not isinstance(model, str) or not model:
        raise InvalidParams("model must be a non-empty string", param="model")
    if body.get("n", 1) != 1:
        raise InvalidParams("only n=1 is supported", param="n")
    raw_msgs = body.get("messages")
    if not isinstance(raw_msgs, list) or not raw_msgs:
        raise InvalidParams("messages must be a non-empty array", param="messages")
    messages = tuple(_message(m, i, max_chars) for i, m in enumerate(raw_msgs))
    if messages[-1].role != "user":
        raise InvalidParams("the last message must come from the user", param="messages")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidParams("stream must be a boolean", param="stream")
    opts = body.get("stream_options") or {}
    include_usage = bool(isinstance(opts, dict) and opts.get("include_usage"))
    raw_params = {
        k: body[k]
        for k in ("temperature", "top_p", "top_k", "seed", "stop", "ignore_eos")
        if body.get(k) is not None
    }
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        raw_params["max_tokens"] = max_tokens
    try:
        params = SamplingParams.from_dict(raw_params)
    except ValueError as exc:
        raise InvalidParams(str(exc)) from exc
    req = ChatRequest(
        request_id=uuid.uuid4().hex, messages=messages, params=params, api="openai", model=model
    )
    return req, stream, include_usage


def _message(raw: Any, index: int, max_chars: int) -> ChatMessage:
    where = f"messages[{index}]"
    if not isinstance(raw, dict):
        raise InvalidParams(f"{where} must be an object", param=where)
    role = raw.get("role")
    role = _ROLE_ALIASES.get(role, role) if isinstance(role, str) else role
    if role not in ("system", "user", "assistant"):
        raise InvalidParams(
            f"{where}.role must be system, developer, user or assistant", param=f"{where}.role"
        )
    content = raw.get("content")
    if isinstance(content, list):  # content parts: only text is supported
        texts = []
        for part in content:
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise InvalidParams(
                    f"{where}.content: only text parts are supported", param=f"{where}.content"
                )
            texts.append(part["text"])
        content = "".join(texts)
    if not isinstance(content, str):
        raise InvalidParams(f"{where}.content must be a string", param=f"{where}.content")
    if len(content) > max_chars:
        raise InvalidParams(
            f"{where}.content is longer than {max_chars} characters", param=f"{where}.content"
        )
    return ChatMessage(role, content)
