"""Typed keys for what the router app holds; the handlers read their dependencies from these."""

from __future__ import annotations

from aiohttp import web

from router.chat import ChatService
from router.config import RouterConfig
from router.fleet import Fleet
from router.metrics import RouterMetrics

CONFIG = web.AppKey("config", RouterConfig)
METRICS = web.AppKey("metrics", RouterMetrics)
FLEET = web.AppKey("fleet", Fleet)
CHAT = web.AppKey("chat", ChatService)
