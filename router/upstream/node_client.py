"""One persistent WebSocket from the router to one node, multiplexing many streams.

The client keeps the connection up in the background (reconnecting with capped exponential
backoff), tracks the node's last load report, and hands out streams: ``stream()`` sends a
``Generate`` frame and yields the node's ``Delta``/``Done``/``Error`` frames for that stream id.
Closing the stream early sends ``Cancel`` so the node stops generating.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import aiohttp

from router.config import NodeEndpoint
from router.upstream.base import StreamEvent, UpstreamUnavailable
from router.upstream.turn_cork import TurnCork
from switchyard import wire

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Capped exponential backoff: base * 2**attempt, at most ``cap`` seconds."""

    base: float = 0.1
    cap: float = 2.0

    def delay(self, attempt: int) -> float:
        return float(min(self.cap, self.base * (2 ** min(attempt, 16))))


NodeUnavailable = UpstreamUnavailable  # the name callers of this module know


class NodeClient:
    def __init__(
        self,
        endpoint: NodeEndpoint,
        http: aiohttp.ClientSession,
        *,
        router_id: str,
        secret: str,
        backoff: Backoff | None = None,
        connect_timeout_s: float = 3.0,
    ) -> None:
        self.endpoint = endpoint
        self._http = http
        self._router_id = router_id
        self._secret = secret
        self._backoff = backoff or Backoff()
        self._connect_timeout = connect_timeout_s
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._cork: TurnCork | None = None
        self._streams: dict[int, asyncio.Queue[StreamEvent]] = {}
        self._sids = itertools.count(1)
        self._task: asyncio.Task[None] | None = None
        self._connected = asyncio.Event()
        self.welcome: wire.Welcome | None = None
        self.load = wire.Load(active=0, queued=0, capacity=1)
        self.last_error = ""

    @property
    def id(self) -> str:
        return self.endpoint.id

    @property
    def kind(self) -> str:
        return self.endpoint.kind

    @property
    def connected(self) -> bool:
        return self._ws is not None and not self._ws.closed and self.welcome is not None

    @property
    def outstanding(self) -> int:
        """Streams this router has open on the node: fresher than the node's own report."""
        return len(self._streams)

    @property
    def context_window(self) -> int:
        return self.welcome.context_window if self.welcome else 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"node-client-{self.id}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._ws is not None:
            await self._ws.close()

    async def wait_connected(self, within_s: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._connected.wait(), within_s)
        return self.connected

    async def _run(self) -> None:
        attempt = 0
        while True:
            try:
                await self._connect_and_read()
                attempt = 0
            except asyncio.CancelledError:
                raise
            except RefusedByNode as exc:
                self.last_error = str(exc)
                log.error("node %s refused this router: %s", self.id, exc)
                attempt = max(attempt, 4)  # a config error: retry, but slowly
            except (aiohttp.ClientError, OSError, TimeoutError, wire.ProtocolError) as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
            finally:
                self._drop_connection()
            await asyncio.sleep(self._backoff.delay(attempt))
            attempt += 1

    async def _connect_and_read(self) -> None:
        ws = await self._http.ws_connect(
            self.endpoint.url,
            timeout=aiohttp.ClientWSTimeout(ws_close=2.0),
            heartbeat=10.0,
            max_msg_size=4 * 1024 * 1024,
        )
        self._ws = ws
        self._cork = TurnCork(ws.get_extra_info("socket"))
        await ws.send_bytes(wire.encode(wire.Hello(wire.PROTOCOL_VERSION, self._router_id, self._secret)))
        first = await ws.receive(timeout=self._connect_timeout)
        if first.type != aiohttp.WSMsgType.BINARY:
            raise ConnectionError("node closed during the handshake")
        msg = wire.decode(first.data)
        if isinstance(msg, wire.Error):
            raise RefusedByNode(f"{msg.code}: {msg.message}")
        if not isinstance(msg, wire.Welcome):
            raise wire.ProtocolError(f"expected welcome, got {msg.t}")
        self.welcome = msg
        self.load = wire.Load(active=0, queued=0, capacity=msg.capacity)
        self.last_error = ""
        self._connected.set()
        log.info("connected to %s node %s (%s, ctx %d)", msg.kind, msg.node_id, msg.model, msg.context_window)
        async for frame in ws:
            if frame.type != aiohttp.WSMsgType.BINARY:
                break
            try:
                ev = wire.decode(frame.data)
            except wire.ProtocolError as exc:
                log.warning("node %s sent a bad frame: %s", self.id, exc)
                continue
            if type(ev) is wire.Delta or isinstance(ev, wire.Done | wire.Error):  # Delta: most frames
                queue = self._streams.get(ev.sid)
                if queue is not None:
                    queue.put_nowait(ev)
                elif isinstance(ev, wire.Error) and ev.sid == -1:
                    log.warning("node %s: %s: %s", self.id, ev.code, ev.message)
            elif isinstance(ev, wire.Load):
                self.load = ev
        log.warning("lost connection to node %s", self.id)

    def _drop_connection(self) -> None:
        self._connected.clear()
        self.welcome = None
        self._ws = None
        self._cork = None
        for sid, queue in list(self._streams.items()):
            queue.put_nowait(wire.Error(sid, "node_disconnected", f"lost connection to node {self.id}"))

    async def stream(
        self,
        messages: Sequence[wire.ChatMessage],
        params: wire.SamplingParams,
        *,
        session_id: str = "",
        request_id: str = "",
        continue_text: str = "",
    ) -> AsyncIterator[StreamEvent]:
        ws = self._ws
        if ws is None or ws.closed or self.welcome is None:
            raise NodeUnavailable(f"node {self.id} is not connected")
        sid = next(self._sids)
        queue: asyncio.Queue[StreamEvent] = asyncio.Queue()
        self._streams[sid] = queue
        finished = False
        try:
            gen = wire.Generate(sid, tuple(messages), params, session_id, request_id, continue_text)
            if self._cork is not None:
                self._cork.hold()  # the chats this loop turn starts reach the node together
            try:
                await ws.send_bytes(wire.encode(gen))
            except (ConnectionError, RuntimeError) as exc:
                raise NodeUnavailable(f"node {self.id}: {exc}") from exc
            while True:
                ev = await queue.get()
                if isinstance(ev, wire.Delta) and not queue.empty():
                    # Under load several deltas wait here: relay them as one (same text, fewer frames
                    # and wake-ups downstream). When idle each token still goes out on its own.
                    ev, held = _coalesce(ev, queue)
                    if held is not None:
                        yield ev
                        ev = held
                if not isinstance(ev, wire.Delta):
                    finished = True
                yield ev
                if finished:
                    return
        finally:
            del self._streams[sid]
            if not finished and self._ws is ws and not ws.closed:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await ws.send_bytes(wire.encode(wire.Cancel(sid)))


def _coalesce(first: wire.Delta, queue: asyncio.Queue[StreamEvent]) -> tuple[wire.Delta, StreamEvent | None]:
    """Merge the deltas already queued after ``first``; return the merged delta and the non-delta
    event that ended the run (``Done``/``Error``), if one was taken off the queue."""
    texts = [first.text]
    tokens = first.tokens
    while not queue.empty():
        nxt = queue.get_nowait()
        if not isinstance(nxt, wire.Delta):
            return wire.Delta(first.sid, "".join(texts), tokens), nxt
        texts.append(nxt.text)
        tokens += nxt.tokens
    return wire.Delta(first.sid, "".join(texts), tokens), None


class RefusedByNode(Exception):
    """The node answered the handshake with an error (version mismatch, wrong secret)."""
