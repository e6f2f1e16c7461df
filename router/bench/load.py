"""The load generator of ``switchyard bench router``: closed-loop lanes over four kinds of client.

Each lane sends one streamed chat, reads it to the end and sends the next, until the level's time
or request budget is spent. Over the native protocol a lane is a conversation of a few turns: through
the router's WebSocket API it continues its session (a session look-up and append per turn), and
going direct the client sends the same history itself. A request counts when its reply arrived whole
(every token); its TTFT is the time from just before the request is written to the first token's
arrival.

The clients are kept lean because they share a CPU with the fake upstreams: frames are recognised
by their prefix instead of being parsed, and only the frames that end a reply are decoded.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import aiohttp

from router.config import NodeEndpoint
from router.upstream.node_client import NodeClient
from switchyard import wire

REQUEST_TIMEOUT_S = 30.0
_PROMPTS = (
    "How do I reverse a list in Python?",
    "Write a haiku about the sea at night.",
    "What is the capital of Australia, and why is it not Sydney?",
    "Explain what a hash table is to a beginner, with one everyday example.",
    "Give me three tips for writing clear commit messages.",
    "Summarise the plot of a heist film in two sentences.",
)


class RequestFailed(Exception):
    """A benchmark request that did not complete with every token."""


class Client(Protocol):
    async def open(self, lanes: int) -> None: ...

    async def one(self, lane: int, prompt: str) -> float:
        """Send one chat on ``lane`` and read it whole; return its TTFT in seconds."""
        ...

    async def close(self) -> None: ...


class Prompts:
    """Distinct prompts for the whole run, so that no request hits the prompt cache."""

    def __init__(self) -> None:
        self._n = itertools.count()

    def next(self) -> str:
        i = next(self._n)
        return f"{_PROMPTS[i % len(_PROMPTS)]} (request {i})"


@dataclass(frozen=True, slots=True)
class LevelResult:
    concurrency: int
    requests: int
    errors: int
    elapsed_s: float
    ttfts_s: tuple[float, ...]
    first_error: str = ""
    cpu_s: float | None = None  # CPU time the measured process (the router) spent in the level


async def run_level(
    client: Client,
    prompts: Prompts,
    concurrency: int,
    *,
    seconds: float,
    max_requests: int | None = None,
    warmup_s: float = 0.0,
    cpu_probe: Callable[[], float | None] | None = None,
) -> LevelResult:
    """Drive ``concurrency`` lanes for ``seconds`` (and at most ``max_requests`` requests)."""
    await client.open(concurrency)
    if warmup_s > 0:
        await _drive(client, prompts, concurrency, seconds=warmup_s, limit=None, record=None)
    ttfts: list[float] = []
    errors: list[str] = []
    cpu_before = cpu_probe() if cpu_probe else None
    start = time.perf_counter()
    last = await _drive(
        client, prompts, concurrency, seconds=seconds, limit=max_requests, record=(ttfts, errors)
    )
    cpu_after = cpu_probe() if cpu_probe else None
    return LevelResult(
        concurrency=concurrency,
        requests=len(ttfts),
        errors=len(errors),
        elapsed_s=max(last - start, 1e-9),
        ttfts_s=tuple(ttfts),
        first_error=errors[0] if errors else "",
        cpu_s=None if cpu_before is None or cpu_after is None else cpu_after - cpu_before,
    )


async def _drive(
    client: Client,
    prompts: Prompts,
    concurrency: int,
    *,
    seconds: float,
    limit: int | None,
    record: tuple[list[float], list[str]] | None,
) -> float:
    """Run the lanes; return when the last request finished."""
    until = time.perf_counter() + seconds
    issued = itertools.count()
    last = time.perf_counter()

    async def lane(k: int) -> None:
        nonlocal last
        while time.perf_counter() < until and (limit is None or next(issued) < limit):
            try:
                ttft = await client.one(k, prompts.next())
            except (RequestFailed, aiohttp.ClientError, OSError, TimeoutError) as exc:
                if record is not None:
                    record[1].append(f"{type(exc).__name__}: {exc}")
                continue
            last = time.perf_counter()
            if record is not None:
                record[0].append(ttft)

    # Every request has its own deadline, so this ends within seconds + REQUEST_TIMEOUT_S.
    await asyncio.gather(*(lane(k) for k in range(concurrency)))
    return last


# --- clients ---------------------------------------------------------------------------------


def _chat_params(tokens: int) -> wire.SamplingParams:
    return wire.SamplingParams(max_tokens=tokens, temperature=0.0)


class NativeDirect:
    """The node protocol with no router: the router's own node client on one multiplexed socket."""

    def __init__(self, url: str, secret: str, tokens: int, turns: int) -> None:
        self._url = url
        self._turns = turns
        self._history: dict[int, list[wire.ChatMessage]] = {}
        self._secret = secret
        self._tokens = tokens
        self._params = _chat_params(tokens)
        self._http: aiohttp.ClientSession | None = None
        self._node: NodeClient | None = None

    async def open(self, lanes: int) -> None:
        if self._node is not None:
            return
        self._http = aiohttp.ClientSession()
        endpoint = NodeEndpoint(id="fake-native", url=self._url, kind="edge")
        self._node = NodeClient(endpoint, self._http, router_id="bench-direct", secret=self._secret)
        self._node.start()
        if not await self._node.wait_connected(10.0):
            raise RuntimeError(f"cannot reach the fake node at {self._url}: {self._node.last_error}")

    async def one(self, lane: int, prompt: str) -> float:
        assert self._node is not None
        # The client keeps the conversation, as the router's session store does for its clients.
        history = self._history.setdefault(lane, [])
        messages = (*history, wire.ChatMessage("user", prompt))
        start = time.perf_counter()
        ttft = 0.0
        tokens = 0
        parts: list[str] = []
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            async for ev in self._node.stream(messages, self._params):
                if isinstance(ev, wire.Delta):
                    if not tokens:
                        ttft = time.perf_counter() - start
                    tokens += ev.tokens
                    parts.append(ev.text)
                elif isinstance(ev, wire.Error):
                    raise RequestFailed(f"{ev.code}: {ev.message}")
        if tokens != self._tokens:
            raise RequestFailed(f"got {tokens} tokens, expected {self._tokens}")
        if len(messages) >= 2 * self._turns - 1:
            history.clear()
        else:
            history[:] = (*messages, wire.ChatMessage("assistant", "".join(parts)))
        return ttft

    async def close(self) -> None:
        if self._node is not None:
            await self._node.close()
        if self._http is not None:
            await self._http.close()


class RouterWebSocket:
    """The router's WebSocket chat API, one socket per lane (one user per socket)."""

    def __init__(self, url: str, tokens: int, turns: int) -> None:
        self._url = url
        self._tokens = tokens
        self._turns = turns
        self._sessions: dict[int, tuple[str, int]] = {}  # lane -> (session id, turns so far)
        self._params = {"max_tokens": tokens, "temperature": 0}
        self._http: aiohttp.ClientSession | None = None
        self._sockets: list[aiohttp.ClientWebSocketResponse] = []
        self._ids = itertools.count(1)

    async def open(self, lanes: int) -> None:
        if self._http is None:
            # No pool cap: aiohttp's default of 100 connections would hold back the 101st socket.
            self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        while len(self._sockets) < lanes:
            self._sockets.append(await self._http.ws_connect(self._url))

    async def one(self, lane: int, prompt: str) -> float:
        ws = self._sockets[lane]
        chat_id = next(self._ids)
        chat = {"type": "chat", "id": chat_id, "message": prompt, "params": self._params}
        session_id, turn = self._sessions.get(lane, ("", 0))
        if session_id:
            chat["session_id"] = session_id
        frame = json.dumps(chat)
        start = time.perf_counter()
        ttft = 0.0
        deltas = 0
        async with asyncio.timeout(REQUEST_TIMEOUT_S):
            await ws.send_str(frame)
            while True:
                msg = await ws.receive()
                if msg.type != aiohttp.WSMsgType.TEXT:
                    raise RequestFailed(f"socket closed mid-reply ({msg.type.name})")
                data: str = msg.data
                if data.startswith('{"type":"delta"'):
                    if not deltas:
                        ttft = time.perf_counter() - start
                    deltas += 1
                elif data.startswith('{"type":"route"'):
                    continue
                else:
                    reply = json.loads(data)
                    if reply.get("type") != "done":
                        raise RequestFailed(f"{reply.get('code')}: {reply.get('message')}")
                    break
        if reply["usage"]["completion_tokens"] != self._tokens:
            raise RequestFailed(f"got {reply['usage']['completion_tokens']} tokens, expected {self._tokens}")
        turn += 1
        self._sessions[lane] = (str(reply["session_id"]), turn) if turn < self._turns else ("", 0)
        return ttft

    async def close(self) -> None:
        for ws in self._sockets:
            await ws.close()
        if self._http is not None:
            await self._http.close()


_TEXT_CHUNK = b'"delta":{"content":"'
_USAGE = b'"usage":{'
_EMPTY_TEXT_CHUNK = b'"delta":{"content":""'


class OpenAIStream:
    """An OpenAI-compatible ``/chat/completions`` endpoint, streamed (the fake server or the router)."""

    def __init__(self, base_url: str, model: str, tokens: int) -> None:
        self._url = base_url.rstrip("/") + "/chat/completions"
        self._model = model
        self._tokens = tokens
        self._http: aiohttp.ClientSession | None = None
        self._headers = {"Content-Type": "application/json"}

    async def open(self, lanes: int) -> None:
        if self._http is None:
            # No pool cap: one keep-alive connection per lane, as many clients would hold.
            self._http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    def body(self, prompt: str, *, stream: bool = True) -> bytes:
        body = {
            "model": self._model,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": self._tokens,
            "temperature": 0,
            "stream": stream,
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
        return json.dumps(body).encode()

    async def one(self, lane: int, prompt: str) -> float:
        assert self._http is not None
        data = self.body(prompt)
        start = time.perf_counter()
        ttft = 0.0
        chunks = 0
        tokens = 0
        finished = False
        async with (
            asyncio.timeout(REQUEST_TIMEOUT_S),
            self._http.post(self._url, data=data, headers=self._headers) as resp,
        ):
            if resp.status != 200:
                raise RequestFailed(f"HTTP {resp.status}: {(await resp.text())[:200]}")
            async for line in resp.content:
                if _TEXT_CHUNK in line and _EMPTY_TEXT_CHUNK not in line:
                    if not chunks:
                        ttft = time.perf_counter() - start
                    chunks += 1
                elif line.startswith(b"data: [DONE]"):
                    finished = True
                elif _USAGE in line:
                    # Count tokens from usage: a server may send several tokens in one chunk.
                    tokens = int(json.loads(line[5:])["usage"]["completion_tokens"])
                elif line.startswith(b'data: {"error"'):
                    raise RequestFailed(line.decode(errors="replace")[:200])
        if not finished or not chunks or tokens != self._tokens:
            raise RequestFailed(
                f"got {tokens} tokens in {chunks} chunks (finished: {finished}), expected {self._tokens}"
            )
        return ttft

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()


async def cache_hits(base_url: str, requests: int, *, tokens: int) -> tuple[list[float], int]:
    """Time ``requests`` identical non-streamed chats after one that fills the prompt cache.

    Returns every latency (seconds, request written to body read) and how many were served from
    the cache (the route header names the node ``cache``).
    """
    url = base_url.rstrip("/") + "/chat/completions"
    body = OpenAIStream(base_url, "switchyard", tokens).body(
        "What is the boiling point of water at sea level? (cache bench)", stream=False
    )
    headers = {"Content-Type": "application/json"}
    latencies: list[float] = []
    hits = 0
    async with aiohttp.ClientSession() as http:
        for i in range(requests + 1):
            start = time.perf_counter()
            async with (
                asyncio.timeout(REQUEST_TIMEOUT_S),
                http.post(url, data=body, headers=headers) as resp,
            ):
                await resp.read()
                if resp.status != 200:
                    raise RequestFailed(f"HTTP {resp.status} on the cache bench")
                route = resp.headers.get("x-switchyard-route", "")
            if i:  # the first request fills the cache
                latencies.append(time.perf_counter() - start)
                hits += route.endswith("node=cache")
    return latencies, hits
