"""An OpenAI-compatible chat-completions server (vLLM, SGLang, llama.cpp, TGI, a hosted API, or a
Switchyard node's own endpoint) as an upstream of the router.

Streams are HTTP requests with ``stream: true``; the server-sent events are turned into the node
protocol's Delta/Done/Error so the rest of the router cannot tell the two kinds apart. Health is a
periodic ``GET {base}/models``. Closing a stream early closes its HTTP response, which is how these
servers learn that the client cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
import orjson

from router.config import NodeEndpoint
from router.upstream.base import StreamEvent, UpstreamUnavailable
from switchyard import wire

log = logging.getLogger(__name__)

HEALTH_INTERVAL_S = 2.0


class OpenAIUpstream:
    def __init__(
        self, endpoint: NodeEndpoint, http: aiohttp.ClientSession, *, connect_timeout_s: float = 5.0
    ):
        self.endpoint = endpoint
        self._http = http
        self._base = endpoint.url.rstrip("/")
        key = os.environ.get(endpoint.api_key_env, "") if endpoint.api_key_env else ""
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._timeout = aiohttp.ClientTimeout(
            total=None, connect=connect_timeout_s, sock_connect=connect_timeout_s
        )
        self._open = 0
        self._healthy = False
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.load = wire.Load(active=0, queued=0, capacity=endpoint.max_concurrency)
        self.last_error = ""

    @property
    def id(self) -> str:
        return self.endpoint.id

    @property
    def kind(self) -> str:
        return self.endpoint.kind

    @property
    def connected(self) -> bool:
        return self._healthy

    @property
    def outstanding(self) -> int:
        return self._open

    @property
    def context_window(self) -> int:
        return self.endpoint.context_window

    def start(self) -> None:
        self._task = asyncio.create_task(self._probe_loop(), name=f"openai-health-{self.id}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def wait_connected(self, within_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._ready.wait(), within_s)
        return self._healthy

    async def _probe_loop(self) -> None:
        while True:
            await self.probe()
            await asyncio.sleep(HEALTH_INTERVAL_S)

    async def probe(self) -> None:
        try:
            async with self._http.get(
                self._base + "/models", headers=self._headers, timeout=aiohttp.ClientTimeout(total=3.0)
            ) as resp:
                ok = resp.status == 200
                self.last_error = "" if ok else f"GET /models answered {resp.status}"
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            ok = False
            self.last_error = f"{type(exc).__name__}: {exc}"
        if ok != self._healthy:
            log.info("openai upstream %s is %s", self.id, "up" if ok else f"down ({self.last_error})")
        self._healthy = ok
        if ok:
            self._ready.set()
        else:
            self._ready.clear()

    def _body(
        self, messages: Sequence[wire.ChatMessage], params: wire.SamplingParams, continue_text: str
    ) -> Any:
        msgs = [{"role": m.role, "content": m.content} for m in messages]
        body: dict[str, Any] = {
            "model": self.endpoint.model,
            "messages": msgs,
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": params.max_tokens,
            "temperature": params.temperature,
            "top_p": params.top_p,
        }
        if params.seed is not None:
            body["seed"] = params.seed
        if params.stop:
            body["stop"] = list(params.stop)
        # Not in OpenAI's own API; sent only when asked for, for servers that take them (vLLM, SGLang).
        if params.top_k:
            body["top_k"] = params.top_k
        if params.ignore_eos:
            body["ignore_eos"] = True
        if continue_text:
            msgs.append({"role": "assistant", "content": continue_text})
            body.update(self.endpoint.continue_extra)
        return body

    async def stream(
        self,
        messages: Sequence[wire.ChatMessage],
        params: wire.SamplingParams,
        *,
        session_id: str = "",
        request_id: str = "",
        continue_text: str = "",
    ) -> AsyncIterator[StreamEvent]:
        if not self._healthy:
            raise UpstreamUnavailable(f"upstream {self.id} is not healthy: {self.last_error}")
        if self._open >= self.endpoint.max_concurrency:
            raise UpstreamUnavailable(f"upstream {self.id} has {self._open} streams open, its limit")
        headers = {**self._headers, "x-request-id": request_id} if request_id else self._headers
        self._open += 1
        self.load = wire.Load(active=self._open, queued=0, capacity=self.endpoint.max_concurrency)
        try:
            try:
                resp = await self._http.post(
                    self._base + "/chat/completions",
                    json=self._body(messages, params, continue_text),
                    headers=headers,
                    timeout=self._timeout,
                )
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                raise UpstreamUnavailable(f"upstream {self.id}: {type(exc).__name__}: {exc}") from exc
            async with resp:
                if resp.status != 200:
                    text = (await resp.text())[:300]
                    code = "overloaded" if resp.status in (429, 503) else f"upstream_http_{resp.status}"
                    yield wire.Error(0, code, f"{self.id} answered {resp.status}: {text}")
                    return
                async for ev in _events(resp):
                    yield ev
        finally:
            self._open -= 1
            self.load = wire.Load(active=self._open, queued=0, capacity=self.endpoint.max_concurrency)


async def _events(resp: aiohttp.ClientResponse) -> AsyncIterator[StreamEvent]:
    """Server-sent events of a streamed chat completion, as node-protocol events.

    Reads whatever bytes have arrived and relays the text of all complete events in them as one
    delta: one event per token when idle, fewer and larger deltas when the stream runs ahead of us.
    """
    state = _SSEState()
    buf = b""
    try:
        async for chunk in resp.content.iter_any():
            *lines, buf = (buf + chunk).split(b"\n")
            texts: list[str] = []
            failure = None
            for raw_line in lines:
                failure = state.feed(raw_line, texts)
                if failure is not None or state.done:
                    break
            if texts:
                yield wire.Delta(0, "".join(texts), len(texts))
            if failure is not None:
                yield failure
                return
            if state.done:
                break
    except (aiohttp.ClientError, OSError) as exc:
        yield wire.Error(0, "node_disconnected", f"upstream stream broke: {type(exc).__name__}")
        return
    if not state.finish:
        yield wire.Error(0, "stream_ended", "the upstream stream ended without a finish reason")
        return
    yield wire.Done(0, state.finish, state.prompt_tokens, state.completion_tokens or state.chunks)


class _SSEState:
    """What one streamed completion has told us so far."""

    __slots__ = ("chunks", "completion_tokens", "done", "finish", "prompt_tokens")

    def __init__(self) -> None:
        self.finish = ""
        self.prompt_tokens = self.completion_tokens = self.chunks = 0
        self.done = False

    def feed(self, raw_line: bytes, texts: list[str]) -> wire.Error | None:
        """Take one SSE line; append any content to ``texts``; return an error event if it is one."""
        line = raw_line.strip()
        if not line.startswith(b"data:"):
            return None
        data = line[5:].strip()
        if data == b"[DONE]":
            self.done = True
            return None
        try:
            obj = orjson.loads(data)  # several times faster than json.loads, per token of every reply
        except orjson.JSONDecodeError:
            obj = None
        if not isinstance(obj, dict):
            return wire.Error(0, "bad_upstream_event", "the upstream sent an event that is not a JSON object")
        if "error" in obj:
            err = obj["error"] if isinstance(obj["error"], dict) else {"message": str(obj["error"])}
            return wire.Error(0, str(err.get("code") or "upstream_error"), str(err.get("message", "")))
        usage = obj.get("usage")
        if isinstance(usage, dict):
            self.prompt_tokens = int(usage.get("prompt_tokens") or 0)
            self.completion_tokens = int(usage.get("completion_tokens") or 0)
        for choice in obj.get("choices") or ():
            text = (choice.get("delta") or {}).get("content")
            if text:
                self.chunks += 1
                texts.append(text)
            if choice.get("finish_reason"):
                self.finish = str(choice["finish_reason"])
        return None
