"""Instant-streaming fake upstreams for ``switchyard bench router``: no model, only the protocols.

* ``/node``: the native node protocol (``switchyard.wire`` over WebSocket): the Hello/Welcome
  handshake with the cluster secret, periodic ``Load`` reports, and for each ``Generate`` a burst of
  ``Delta`` frames (one token each) then ``Done``, written as fast as the socket takes them.
* ``/v1/chat/completions`` and ``/v1/models``: an OpenAI-compatible server that streams one SSE
  chunk per token (role chunk first, finish chunk, usage chunk, ``[DONE]``), like vLLM does.

Both answer ``min(max_tokens, tokens)`` tokens. Run as ``python -m router.bench.fakes``: it prints
one JSON line with its port once listening and serves until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import json
import os
import signal
import sys
import time
from dataclasses import dataclass

from aiohttp import WSMsgType, web

from switchyard import openai_format as oai
from switchyard import wire

LOAD_REPORT_INTERVAL_S = 0.5
HANDSHAKE_TIMEOUT_S = 5.0
FAKE_MODEL = "fake-instant"


@dataclass(frozen=True, slots=True)
class FakeSettings:
    tokens: int = 32  # tokens per reply at most
    secret: str = ""  # the cluster secret the native handshake expects
    context_window: int = 8192
    capacity: int = 256


SETTINGS = web.AppKey("fake_settings", FakeSettings)


def token_text(i: int) -> str:
    return f" w{i}"


def make_fake_app(settings: FakeSettings) -> web.Application:
    app = web.Application()
    app[SETTINGS] = settings
    app.router.add_get("/node", _node_socket)
    app.router.add_get("/v1/models", _models)
    app.router.add_post("/v1/chat/completions", _chat_completions)
    app.router.add_get("/readyz", _ready)
    return app


async def _ready(request: web.Request) -> web.Response:
    return web.json_response({"ready": True})


# --- native node protocol --------------------------------------------------------------------


async def _node_socket(request: web.Request) -> web.WebSocketResponse:
    settings = request.app[SETTINGS]
    ws = web.WebSocketResponse(max_msg_size=4 * 1024 * 1024)
    await ws.prepare(request)
    if not await _handshake(ws, settings):
        await ws.close()
        return ws
    active = [0]

    async def report() -> None:
        while not ws.closed:
            load = wire.Load(active=active[0], queued=0, capacity=settings.capacity)
            with contextlib.suppress(ConnectionError):
                await ws.send_bytes(wire.encode(load))
            await asyncio.sleep(LOAD_REPORT_INTERVAL_S)

    reporter = asyncio.create_task(report())
    try:
        async for frame in ws:
            if frame.type != WSMsgType.BINARY:
                break
            msg = wire.decode(frame.data)
            if isinstance(msg, wire.Generate):
                # Served inline: every token is ready at once, so there is nothing to wait for and no
                # task to create. Frames without compression are written synchronously by aiohttp, so
                # they never interleave with the load reporter's.
                active[0] += 1
                try:
                    await _generate(ws, msg, settings.tokens)
                finally:
                    active[0] -= 1
            # Cancel: every stream has finished by the time the next frame is read.
    except ConnectionError:
        pass
    finally:
        reporter.cancel()
    return ws


async def _handshake(ws: web.WebSocketResponse, settings: FakeSettings) -> bool:
    try:
        frame = await ws.receive(timeout=HANDSHAKE_TIMEOUT_S)
        hello = wire.decode(frame.data) if frame.type == WSMsgType.BINARY else None
    except (TimeoutError, wire.ProtocolError):
        hello = None
    if not isinstance(hello, wire.Hello) or hello.version != wire.PROTOCOL_VERSION:
        await ws.send_bytes(wire.encode(wire.Error(-1, "bad_handshake", "expected a version 1 hello")))
        return False
    if not hmac.compare_digest(hello.secret.encode(), settings.secret.encode()):
        await ws.send_bytes(wire.encode(wire.Error(-1, "unauthorized", "wrong cluster secret")))
        return False
    welcome = wire.Welcome(
        version=wire.PROTOCOL_VERSION,
        node_id="fake-native",
        kind="edge",
        model=FAKE_MODEL,
        context_window=settings.context_window,
        capacity=settings.capacity,
    )
    await ws.send_bytes(wire.encode(welcome))
    return True


async def _generate(ws: web.WebSocketResponse, msg: wire.Generate, tokens: int) -> None:
    n = min(tokens, msg.params.max_tokens)
    sid = msg.sid
    for i in range(n):
        await ws.send_bytes(wire.encode(wire.Delta(sid, token_text(i), 1)))
    prompt_tokens = sum(len(m.content) // 4 + 1 for m in msg.messages)
    await ws.send_bytes(wire.encode(wire.Done(sid, "length", prompt_tokens, n)))


# --- OpenAI-compatible server ----------------------------------------------------------------


async def _models(request: web.Request) -> web.Response:
    return web.json_response(
        {"object": "list", "data": [{"id": FAKE_MODEL, "object": "model", "owned_by": "bench"}]}
    )


async def _chat_completions(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    body = json.loads(await request.read())
    n = min(settings.tokens, int(body.get("max_tokens") or settings.tokens))
    prompt_tokens = sum(len(str(m.get("content", ""))) // 4 + 1 for m in body.get("messages", ()))
    model = str(body.get("model") or FAKE_MODEL)
    completion_id = "chatcmpl-fake"
    created = int(time.time())
    if not body.get("stream"):
        text = "".join(token_text(i) for i in range(n))
        usage = oai.usage(prompt_tokens, n)
        return web.json_response(oai.completion_body(completion_id, created, model, text, "length", usage))
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    writer = oai.ChunkWriter(completion_id, created, model)
    await resp.write(writer.delta({"role": "assistant", "content": ""}))
    for i in range(n):
        await resp.write(writer.text(token_text(i)))
    await resp.write(writer.delta({}, "length"))
    if (body.get("stream_options") or {}).get("include_usage"):
        await resp.write(writer.usage(oai.usage(prompt_tokens, n)))
    await resp.write(oai.DONE_LINE)
    return resp


# --- process entry point -----------------------------------------------------------------------


async def serve(settings: FakeSettings, host: str = "127.0.0.1", port: int = 0) -> None:
    """Serve until SIGTERM/SIGINT; print ``{"port": N}`` on stdout once listening."""
    runner = web.AppRunner(make_fake_app(settings), handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(json.dumps({"port": bound}), flush=True)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m router.bench.fakes", description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=32)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--secret-env", default="SWITCHYARD_CLUSTER_SECRET")
    args = p.parse_args(argv)
    settings = FakeSettings(tokens=args.tokens, secret=os.environ.get(args.secret_env, ""))
    try:
        import uvloop

        uvloop.run(serve(settings, port=args.port))
    except ImportError:
        asyncio.run(serve(settings, port=args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
