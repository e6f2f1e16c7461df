"""The router's app factory: every resource is opened and closed through the app's lifecycle."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from router import openai_api, ws_api
from router.admission import Gate
from router.calibration import MemoryWindows, RedisWindows, ShareCalibrator
from router.chat import ChatService
from router.config import NodeEndpoint, RouterConfig
from router.fleet import Fleet
from router.limits import InflightLimiter
from router.metrics import RouterMetrics
from router.policy_watch import PolicyWatcher
from router.state import CHAT, CONFIG, FLEET, METRICS
from router.stores import open_stores
from router.tokens import EstimatingCounter, TokenCounter, TokenizerCounter
from router.upstream.base import Upstream
from router.upstream.node_client import NodeClient
from router.upstream.openai_client import OpenAIUpstream

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"


def create_app(cfg: RouterConfig) -> web.Application:
    app = web.Application(client_max_size=cfg.max_frame_bytes)
    app[CONFIG] = cfg
    app[METRICS] = RouterMetrics()
    # Fail fast on a bad policy, before serving anything; later edits are hot-reloaded.
    policy = PolicyWatcher(cfg.policy, app[METRICS].policy_reloads)
    app.cleanup_ctx.append(_resources(policy))
    app.router.add_get("/", _index)
    app.router.add_get("/v1/chat/ws", ws_api.chat_socket)
    app.router.add_post("/v1/chat/completions", openai_api.chat_completions)
    app.router.add_get("/v1/models", openai_api.list_models)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/readyz", _readyz)
    app.router.add_get("/metrics", _metrics)
    return app


def _resources(policy: PolicyWatcher) -> Any:
    async def ctx(app: web.Application) -> AsyncIterator[None]:
        cfg = app[CONFIG]
        stores = await open_stores(cfg)
        redis_client = stores.redis
        # No pool cap here: each upstream bounds its own streams (max_concurrency, node multiplexing).
        http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        secret = os.environ.get(cfg.cluster_secret_env, "")

        def make_client(ep: NodeEndpoint) -> Upstream:
            if ep.protocol == "openai":
                return OpenAIUpstream(ep, http)
            return NodeClient(ep, http, router_id=cfg.router_id, secret=secret)

        clients = [make_client(ep) for ep in cfg.nodes]
        for c in clients:
            c.start()
        fleet = Fleet(clients, queue_limit=cfg.node_queue_limit)
        watcher = None
        if redis_client is not None and cfg.discover_nodes:
            from router.discovery import RegistryWatcher

            watcher = RegistryWatcher(
                redis_client, fleet, make_client, static_ids=frozenset(ep.id for ep in cfg.nodes)
            )
            watcher.start()
        counter: TokenCounter = TokenizerCounter(cfg.tokenizer) if cfg.tokenizer else EstimatingCounter()
        scorer = None
        if cfg.classifier_enabled:
            from router.difficulty.scorer import DifficultyClassifier

            scorer = DifficultyClassifier.load(cfg.classifier).score
        app[FLEET] = fleet
        calibrator = ShareCalibrator(
            RedisWindows(redis_client) if redis_client is not None else MemoryWindows()
        )
        calibrator.start()
        gate = Gate(stores.limiter, cfg.limits, InflightLimiter(cfg.max_inflight), app[METRICS])
        app[CHAT] = ChatService(
            fleet=fleet,
            sessions=stores.sessions,
            policy=policy.current,
            counter=counter,
            metrics=app[METRICS],
            first_token_timeout_s=cfg.first_token_timeout_s,
            request_timeout_s=cfg.request_timeout_s,
            scorer=scorer,
            gate=gate,
            cache=stores.cache,
            cache_ttl_s=cfg.cache.ttl_s,
            calibrator=calibrator,
        )
        policy.start()
        try:
            yield
        finally:
            await policy.close()
            await calibrator.close()
            if watcher is not None:
                await watcher.close()
            for c in fleet.all():
                await c.close()
            await http.close()
            await stores.close()

    return ctx


async def _index(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html")


async def _healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _readyz(request: web.Request) -> web.Response:
    fleet = request.app[FLEET]
    ejected = set(fleet.ejected())
    nodes = {
        c.id: {"kind": c.kind, "connected": c.connected, "ejected": c.id in ejected, "error": c.last_error}
        for c in fleet.all()
    }
    ready = fleet.any_healthy()
    return web.json_response({"ready": ready, "nodes": nodes}, status=200 if ready else 503)


async def _metrics(request: web.Request) -> web.Response:
    metrics = request.app[METRICS]
    fleet = request.app[FLEET]
    for tier in ("edge", "cloud"):
        metrics.nodes_connected.labels(tier).set(len(fleet.healthy(tier)))
    return web.Response(body=metrics.render(), content_type="text/plain", charset="utf-8")
