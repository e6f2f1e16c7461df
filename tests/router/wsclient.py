"""A small WebSocket chat client for the system tests."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import aiohttp

LONG_PROMPT = (
    "Please explain in detail how a hash table handles collisions, compare open addressing with "
    "separate chaining, discuss load factors and resizing, and say when each design is the better "
    "choice for a program that stores many small records in memory and reads them far more often "
    "than it writes them."
)


@dataclass
class ChatResult:
    deltas: list[str] = field(default_factory=list)
    frames: list[dict[str, Any]] = field(default_factory=list)
    done: dict[str, Any] | None = None
    error: dict[str, Any] | None = None

    @property
    def text(self) -> str:
        return "".join(self.deltas)


async def chat(
    ws: aiohttp.ClientWebSocketResponse, message: str, *, chat_id: str = "c1", **extra: Any
) -> ChatResult:
    await ws.send_str(json.dumps({"type": "chat", "id": chat_id, "message": message, **extra}))
    return await collect(ws, chat_id)


async def collect(ws: aiohttp.ClientWebSocketResponse, chat_id: str, wait_s: float = 60) -> ChatResult:
    result = ChatResult()
    while True:
        frame = await ws.receive_json(timeout=wait_s)
        if frame.get("id") != chat_id:
            continue
        result.frames.append(frame)
        if frame["type"] == "delta":
            result.deltas.append(frame["text"])
        elif frame["type"] == "done":
            result.done = frame
            return result
        elif frame["type"] == "error":
            result.error = frame
            return result
