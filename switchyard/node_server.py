"""A model node's network face: the node protocol over WebSocket, plus health endpoints.

Used by both the edge daemon and the cloud backend; they differ only in the engine they pass in.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import json
import logging
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import WSCloseCode, WSMsgType, web

from switchyard import wire
from switchyard.engine import Failed, Finished, GenerationEngine, QueueFull, TextChunk
from switchyard.lm import LanguageModel
from switchyard.registry import NodeRecord
from switchyard.tokenizer import ChatTokenizer
from switchyard.ws_frames import FrameBatcher

log = logging.getLogger(__name__)

LOAD_REPORT_INTERVAL_S = 0.5
HANDSHAKE_TIMEOUT_S = 5.0
MAX_REPORTED_SESSIONS = 256  # most recent first; keeps the periodic load report small

_Send = Callable[[wire.Message], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    node_id: str
    kind: str  # "edge" | "cloud"
    model: str
    secret: str = ""


@dataclass(frozen=True, slots=True)
class NodeOptions:
    """How to serve one model folder as a node."""

    model_dir: Path
    kind: str  # "edge" | "cloud"
    node_id: str = ""
    secret: str = ""
    max_running: int = 16
    max_queued: int = 256
    max_kv_bytes: int | None = None  # KV memory of active sequences; beyond it requests queue
    session_kv_bytes: int = 64 * 1024 * 1024  # KV kept for sessions' next turns (LRU)
    precision: str = "auto"  # edge only: which graph of the folder runs (edge_runtime.onnx_lm.load)


def build_node_app(lm: LanguageModel, opts: NodeOptions, *, warm_up: bool = True) -> web.Application:
    engine = GenerationEngine(
        lm,
        ChatTokenizer(opts.model_dir),
        max_running=opts.max_running,
        max_queued=opts.max_queued,
        max_kv_bytes=opts.max_kv_bytes,
        session_kv_bytes=opts.session_kv_bytes,
    )
    identity = NodeIdentity(
        node_id=opts.node_id or f"{opts.kind}-{socket.gethostname()}",
        kind=opts.kind,
        model=read_model_name(opts.model_dir),
        secret=opts.secret,
    )
    return make_node_app(engine, identity, warm_up=warm_up)


def read_model_name(model_dir: Path) -> str:
    """``switchyard_name`` or ``_name_or_path`` from config.json, else the folder's name."""
    try:
        cfg = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        cfg = {}
    return str(cfg.get("switchyard_name") or cfg.get("_name_or_path") or model_dir.name)


class NodeState:
    """What the node's handlers share: engine, identity, readiness and drain flag."""

    def __init__(self, engine: GenerationEngine, identity: NodeIdentity) -> None:
        self.engine = engine
        self.identity = identity
        self.ready = False
        self.draining = False
        self.streams: set[asyncio.Task[None]] = set()
        self.sockets: set[web.WebSocketResponse] = set()

    def load(self) -> wire.Load:
        running, queued = self.engine.load()
        return wire.Load(
            active=running,
            queued=queued,
            capacity=self.engine.max_running,
            sessions=self.engine.sessions()[:MAX_REPORTED_SESSIONS],
            draining=self.draining,
        )

    def record(self, url: str) -> NodeRecord:
        load = self.load()
        return NodeRecord(
            node_id=self.identity.node_id,
            kind=self.identity.kind,
            url=url,
            model=self.identity.model,
            context_window=self.engine.context_window,
            capacity=load.capacity,
            active=load.active,
            queued=load.queued,
            draining=self.draining,
            sessions=load.sessions,
        )


STATE = web.AppKey("node_state", NodeState)


def make_node_app(
    engine: GenerationEngine, identity: NodeIdentity, *, warm_up: bool = True
) -> web.Application:
    app = web.Application()
    state = NodeState(engine, identity)
    app[STATE] = state
    app.router.add_get("/node", _node_socket)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    from switchyard import node_openai  # imports this module: bind late

    node_openai.add_routes(app)

    async def engine_ctx(app: web.Application) -> AsyncIterator[None]:
        engine.start()
        if warm_up:
            await asyncio.to_thread(engine.warm_up)
        state.ready = True
        yield
        state.ready = False
        engine.close()

    app.cleanup_ctx.append(engine_ctx)
    app.on_shutdown.append(_cancel_streams)
    return app


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    state = request.app[STATE]
    ok = state.ready and not state.draining
    body = {"ready": ok, "node_id": state.identity.node_id, "kind": state.identity.kind}
    return web.json_response(body, status=200 if ok else 503)


async def _cancel_streams(app: web.Application) -> None:
    state = app[STATE]
    for task in list(state.streams):
        task.cancel()
    # Close router connections now rather than wait out aiohttp's shutdown timeout on them.
    for ws in list(state.sockets):
        await ws.close(code=WSCloseCode.GOING_AWAY, message=b"node shutting down")


async def _node_socket(request: web.Request) -> web.WebSocketResponse:
    state = request.app[STATE]
    # No permessage-deflate: the frames are written by ``FrameBatcher``, which frames them itself.
    ws = web.WebSocketResponse(max_msg_size=4 * 1024 * 1024, heartbeat=10.0, compress=False)
    await ws.prepare(request)
    if not await _handshake(ws, state):
        await ws.close()
        return ws
    transport = request.transport
    assert transport is not None  # prepared: the connection is open
    # After a model step every running stream has a delta: they go out in one write.
    frames = FrameBatcher(ws, transport, binary=True)
    tasks: dict[int, asyncio.Task[None]] = {}

    async def send(msg: wire.Message) -> None:
        with contextlib.suppress(ConnectionError):  # the router went away: its streams are cancelled
            await frames.send(wire.encode(msg))

    reporter = asyncio.create_task(_report_load(state, send))
    state.sockets.add(ws)
    try:
        async for frame in ws:
            if frame.type != WSMsgType.BINARY:
                if frame.type == WSMsgType.ERROR:
                    break
                await send(wire.Error(-1, "bad_frame", "node protocol frames are binary msgpack"))
                continue
            try:
                msg = wire.decode(frame.data)
            except wire.ProtocolError as exc:
                await send(wire.Error(-1, "bad_frame", str(exc)))
                continue
            if isinstance(msg, wire.Generate):
                if msg.sid in tasks:
                    await send(
                        wire.Error(msg.sid, "duplicate_stream", f"stream {msg.sid} is already running")
                    )
                    continue
                if state.draining:
                    await send(wire.Error(msg.sid, "draining", "node is draining; send elsewhere"))
                    continue
                task = asyncio.create_task(_serve_stream(state, msg, send))
                tasks[msg.sid] = task
                state.streams.add(task)
                task.add_done_callback(functools.partial(_forget, tasks, state.streams, msg.sid))
            elif isinstance(msg, wire.Cancel):
                task_ = tasks.get(msg.sid)
                if task_ is not None:
                    task_.cancel()
            else:
                await send(wire.Error(-1, "unexpected_message", f"unexpected {msg.t} message"))
    finally:
        state.sockets.discard(ws)
        reporter.cancel()
        # The router went away: stop everything it started here.
        for task in list(tasks.values()):
            task.cancel()
    return ws


def _forget(
    tasks: dict[int, asyncio.Task[None]], streams: set[asyncio.Task[None]], sid: int, task: asyncio.Task[None]
) -> None:
    if tasks.get(sid) is task:
        del tasks[sid]
    streams.discard(task)


async def _handshake(ws: web.WebSocketResponse, state: NodeState) -> bool:
    try:
        frame = await ws.receive(timeout=HANDSHAKE_TIMEOUT_S)
        msg = wire.decode(frame.data) if frame.type == WSMsgType.BINARY else None
    except (TimeoutError, wire.ProtocolError):
        msg = None
    if not isinstance(msg, wire.Hello):
        await ws.send_bytes(wire.encode(wire.Error(-1, "bad_handshake", "expected a hello frame")))
        return False
    if msg.version != wire.PROTOCOL_VERSION:
        text = f"node speaks protocol version {wire.PROTOCOL_VERSION}, router sent {msg.version}"
        await ws.send_bytes(wire.encode(wire.Error(-1, "version_mismatch", text)))
        log.warning("refused router %s: %s", msg.router_id, text)
        return False
    if not hmac.compare_digest(msg.secret.encode(), state.identity.secret.encode()):
        await ws.send_bytes(wire.encode(wire.Error(-1, "unauthorized", "wrong cluster secret")))
        log.warning("refused router %s: wrong cluster secret", msg.router_id)
        return False
    ident = state.identity
    welcome = wire.Welcome(
        version=wire.PROTOCOL_VERSION,
        node_id=ident.node_id,
        kind=ident.kind,
        model=ident.model,
        context_window=state.engine.context_window,
        capacity=state.engine.max_running,
    )
    await ws.send_bytes(wire.encode(welcome))
    return True


async def _report_load(state: NodeState, send: _Send) -> None:
    while True:
        await send(state.load())
        await asyncio.sleep(LOAD_REPORT_INTERVAL_S)


async def _serve_stream(state: NodeState, msg: wire.Generate, send: _Send) -> None:
    sid = msg.sid
    try:
        events = state.engine.generate(msg.messages, msg.params, msg.session_id, msg.continue_text)
        try:
            async for ev in events:
                if isinstance(ev, TextChunk):
                    await send(wire.Delta(sid, ev.text, ev.tokens))
                elif isinstance(ev, Finished):
                    await send(
                        wire.Done(sid, ev.reason, ev.prompt_tokens, ev.completion_tokens, ev.cached_tokens)
                    )
                elif isinstance(ev, Failed):
                    await send(wire.Error(sid, ev.code, ev.message))
        finally:
            await events.aclose()  # type: ignore[attr-defined]
    except QueueFull as exc:
        await send(wire.Error(sid, "overloaded", str(exc)))
    except asyncio.CancelledError:
        await send(wire.Done(sid, "cancelled", 0, 0))
        raise


async def serve_node(
    app: web.Application,
    host: str,
    port: int,
    *,
    drain_grace_s: float = 30.0,
    redis_url: str | None = None,
    advertise_url: str | None = None,
) -> None:
    """Run a node app until SIGINT/SIGTERM, then drain: refuse new streams, let running ones finish
    (up to ``drain_grace_s``), deregister from the fleet and exit.

    With ``redis_url`` the node announces itself in the fleet registry while it serves.
    """
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    state = app[STATE]
    ident = state.identity
    log.info("node %s (%s) listening on %s:%d", ident.node_id, ident.kind, host, port)
    announcer = None
    redis_client: Any = None
    if redis_url:
        import redis.asyncio as redis_asyncio  # only when the fleet registry is used

        from switchyard.registry import NodeAnnouncer

        redis_client = redis_asyncio.from_url(redis_url, socket_timeout=3.0, socket_connect_timeout=3.0)
        url = advertise_url or f"ws://{_advertised_host(host)}:{port}/node"
        announcer = NodeAnnouncer(redis_client, lambda: state.record(url))
        announcer.start()
        log.info("announcing %s in the fleet registry", url)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    state.draining = True
    if announcer is not None:
        await announcer.beat()  # tell routers at once, not at the next heartbeat
    log.info("draining %d running streams (grace %.0fs)", len(state.streams), drain_grace_s)
    if state.streams:
        await asyncio.wait(list(state.streams), timeout=drain_grace_s)
    if announcer is not None:
        await announcer.stop(ident.node_id)
        await redis_client.aclose()
    await runner.cleanup()
    log.info("node %s stopped", ident.node_id)


def _advertised_host(host: str) -> str:
    return socket.gethostname() if host in ("0.0.0.0", "::", "") else host
