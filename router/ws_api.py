"""The WebSocket chat API at ``/v1/chat/ws`` (JSON text frames; see docs/protocol.md).

Each socket may run several chats at once, each in its own task keyed by the client's ``id``.
A ``cancel`` frame or the socket closing cancels the chat's task, which closes its upstream stream
and so cancels generation on the node.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from json.encoder import encode_basestring_ascii
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from router.admission import bearer, identify
from router.chat import ChatService
from router.chat_types import ChatRequest, Completed, RouteChosen, TextOut
from router.errors import (
    DuplicateRequestId,
    FrameTooLarge,
    InvalidParams,
    MalformedJSON,
    RetryLater,
    SwitchyardError,
    Unauthorized,
    UnknownMessageType,
)
from router.request_ids import new_request_id
from router.sessions.base import valid_session_id
from router.state import CHAT, CONFIG, METRICS
from switchyard.wire import ChatMessage, SamplingParams
from switchyard.ws_frames import FrameBatcher

log = logging.getLogger(__name__)

# aiohttp closes the socket (code 1009) above this; below it, over-size frames get a typed error.
_HARD_FRAME_LIMIT = 4 * 1024 * 1024


async def chat_socket(request: web.Request) -> web.StreamResponse:
    cfg = request.app[CONFIG]
    chat = request.app[CHAT]
    metrics = request.app[METRICS]
    # Browsers cannot set headers on a WebSocket, so the key may also come as ?api_key=.
    try:
        tenant = identify(
            cfg.auth, bearer(request.headers.get("Authorization")) or request.query.get("api_key")
        )
    except Unauthorized as exc:
        metrics.errors.labels(exc.code).inc()
        return web.json_response({"type": "error", "code": exc.code, "message": exc.message}, status=401)
    # No permessage-deflate: deltas are a few bytes each, and deflating every one costs more CPU than
    # it saves bandwidth.
    ws = web.WebSocketResponse(
        max_msg_size=max(_HARD_FRAME_LIMIT, cfg.max_frame_bytes), heartbeat=30.0, compress=False
    )
    await ws.prepare(request)
    running: dict[str, asyncio.Task[None]] = {}
    transport = request.transport
    assert transport is not None  # prepared: the connection is open
    frames = FrameBatcher(ws, transport)

    async def send(obj: dict[str, Any] | str) -> None:
        """Send one frame: a JSON object, or a frame already encoded (the per-token deltas)."""
        try:  # the batcher refuses frames once the socket is closed
            await frames.send(obj if isinstance(obj, str) else orjson.dumps(obj))
        except (ConnectionError, RuntimeError):
            pass  # the client went away: its chats are cancelled as the socket closes

    async def send_error(exc: SwitchyardError, chat_id: Any = None) -> None:
        metrics.errors.labels(exc.code).inc()
        frame: dict[str, Any] = {"type": "error", "code": exc.code, "message": exc.message}
        if chat_id is not None:
            frame["id"] = chat_id
        if isinstance(exc, RetryLater):
            frame["retry_after_s"] = exc.retry_after_s
        await send(frame)

    try:
        async for frame in ws:
            if frame.type == WSMsgType.ERROR:
                break
            if frame.type != WSMsgType.TEXT:
                await send_error(MalformedJSON("frames must be JSON text frames"))
                continue
            if len(frame.data) > cfg.max_frame_bytes:
                await send_error(
                    FrameTooLarge(f"frame of {len(frame.data)} bytes exceeds {cfg.max_frame_bytes}")
                )
                continue
            try:
                msg = orjson.loads(frame.data)
            except ValueError as exc:
                await send_error(MalformedJSON(f"invalid JSON: {exc}"))
                continue
            if not isinstance(msg, dict):
                await send_error(MalformedJSON("a frame must be a JSON object"))
                continue
            chat_id = msg.get("id")
            kind = msg.get("type")
            try:
                if kind == "chat":
                    req = _parse_chat(msg, cfg.max_message_chars, tenant)
                    key = str(req_id := msg["id"])
                    if key in running:
                        raise DuplicateRequestId(f"a chat with id {req_id!r} is already running", param="id")
                    if len(running) >= cfg.max_concurrent_chats_per_socket:
                        raise InvalidParams(
                            f"at most {cfg.max_concurrent_chats_per_socket} concurrent chats per socket"
                        )
                    task = asyncio.create_task(_run_chat(chat, req, req_id, send, send_error))
                    running[key] = task
                    task.add_done_callback(functools.partial(_forget, running, key))
                elif kind == "cancel":
                    task_ = running.get(str(chat_id))
                    if task_ is not None:
                        task_.cancel()
                        await send({"type": "cancelled", "id": chat_id})
                elif kind == "ping":
                    await send({"type": "pong", "id": chat_id})
                else:
                    raise UnknownMessageType(f"unknown message type {kind!r}", param="type")
            except SwitchyardError as exc:
                await send_error(exc, chat_id if _valid_id(chat_id) else None)
    finally:
        frames.flush()
        # The client went away (or the server is stopping): stop everything it started.
        for task in list(running.values()):
            task.cancel()
    return ws


async def _run_chat(chat: ChatService, req: ChatRequest, chat_id: Any, send: Any, send_error: Any) -> None:
    metrics = chat.metrics
    # Deltas are most of the frames: their fixed head is encoded once per chat, and each one costs
    # only its text's JSON string (the same bytes json.dumps writes with these separators).
    delta_head = '{"type":"delta","id":' + json.dumps(chat_id) + ',"text":'
    try:
        async for ev in chat.run(req):
            if isinstance(ev, TextOut):
                await send(delta_head + encode_basestring_ascii(ev.text) + "}")
            elif isinstance(ev, RouteChosen):
                await send(
                    {"type": "route", "id": chat_id, "route": ev.route.as_dict(), "session_id": ev.session_id}
                )
            elif isinstance(ev, Completed):
                await send(
                    {
                        "type": "done",
                        "id": chat_id,
                        "session_id": ev.session_id,
                        "finish_reason": ev.finish_reason,
                        "route": ev.route.as_dict(),
                        "usage": {
                            "prompt_tokens": ev.prompt_tokens,
                            "completion_tokens": ev.completion_tokens,
                            "total_tokens": ev.prompt_tokens + ev.completion_tokens,
                        },
                        "timings": {"ttft_ms": round(ev.ttft_ms, 2), "total_ms": round(ev.total_ms, 2)},
                    }
                )
        metrics.requests_by("ws", "ok").inc()
    except SwitchyardError as exc:
        metrics.requests_by("ws", exc.code).inc()
        await send_error(exc, chat_id)
    except asyncio.CancelledError:
        metrics.requests_by("ws", "cancelled").inc()
        raise
    except Exception:
        log.exception("chat %s failed", req.request_id)
        metrics.requests_by("ws", "internal_error").inc()
        await send_error(SwitchyardError("internal error"), chat_id)


def _forget(running: dict[str, asyncio.Task[None]], key: str, task: asyncio.Task[None]) -> None:
    if running.get(key) is task:
        del running[key]


def _valid_id(chat_id: Any) -> bool:
    return (isinstance(chat_id, str) and 0 < len(chat_id) <= 128) or (
        isinstance(chat_id, int) and not isinstance(chat_id, bool)
    )


def _parse_chat(msg: dict[str, Any], max_chars: int, tenant: str) -> ChatRequest:
    unknown = set(msg) - {"type", "id", "session_id", "message", "params", "system"}
    if unknown:
        raise InvalidParams(f"unknown field(s) in chat: {', '.join(sorted(unknown))}")
    if not _valid_id(msg.get("id")):
        raise InvalidParams("chat needs an id: a string of 1-128 characters or an integer", param="id")
    text = msg.get("message")
    if not isinstance(text, str) or not text.strip():
        raise InvalidParams("message must be a non-empty string", param="message")
    if len(text) > max_chars:
        raise InvalidParams(f"message is longer than {max_chars} characters", param="message")
    session_id = msg.get("session_id")
    if session_id is not None and (not isinstance(session_id, str) or not valid_session_id(session_id)):
        raise InvalidParams("session_id must be a session id this server gave out", param="session_id")
    raw_params = msg.get("params", {})
    if not isinstance(raw_params, dict):
        raise InvalidParams("params must be an object", param="params")
    try:
        params = SamplingParams.from_dict(raw_params)
    except ValueError as exc:
        raise InvalidParams(str(exc), param="params") from exc
    messages: list[ChatMessage] = []
    system = msg.get("system")
    if system is not None:
        if not isinstance(system, str) or len(system) > max_chars:
            raise InvalidParams("system must be a string", param="system")
        messages.append(ChatMessage("system", system))
    messages.append(ChatMessage("user", text))
    return ChatRequest(
        request_id=new_request_id(),
        messages=tuple(messages),
        params=params,
        api="ws",
        session_id=session_id,
        use_session=True,
        tenant=tenant,
    )
