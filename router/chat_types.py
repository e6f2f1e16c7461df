"""The values a chat turn is made of: the request, the route it took, and the events it yields.

``ChatService.run`` yields ``RouteChosen`` first, then ``TextOut`` for each piece of the reply, then
``Completed``; the client APIs encode these and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from switchyard.wire import ChatMessage, SamplingParams


@dataclass(frozen=True, slots=True)
class ChatRequest:
    request_id: str
    messages: tuple[ChatMessage, ...]  # what this request adds to the conversation
    params: SamplingParams
    api: str  # "ws" | "openai"
    session_id: str | None = None  # an existing session to continue
    use_session: bool = False  # keep the conversation in the session store
    model: str = ""
    tenant: str = ""


@dataclass(frozen=True, slots=True)
class Route:
    target: str
    node: str
    reason: str
    rule: str
    attempts: tuple[str, ...] = ()  # what failed before the first token
    failovers: tuple[str, ...] = ()  # nodes that failed mid-reply, and who continued

    def as_dict(self) -> dict[str, object]:
        out: dict[str, object] = {"target": self.target, "node": self.node, "reason": self.reason}
        if self.attempts:
            out["fallback_from"] = list(self.attempts)
        if self.failovers:
            out["failover"] = list(self.failovers)
        return out


@dataclass(frozen=True, slots=True)
class RouteChosen:
    route: Route
    session_id: str | None


@dataclass(frozen=True, slots=True)
class TextOut:
    text: str


@dataclass(frozen=True, slots=True)
class Completed:
    route: Route
    session_id: str | None
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    ttft_ms: float
    total_ms: float
    text: str = field(repr=False, default="")


ChatEvent = RouteChosen | TextOut | Completed
