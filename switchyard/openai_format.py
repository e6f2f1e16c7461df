"""OpenAI chat-completions wire format: request parsing and response/chunk bodies.

Shared by the router's OpenAI-compatible API and the nodes' standalone endpoint, so both accept
and answer exactly the same thing. No I/O here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from switchyard.wire import ChatMessage, SamplingParams

_ROLE_ALIASES = {"developer": "system"}
# Fields of OpenAI's request that are accepted and have no effect here.
_IGNORED = frozenset(
    {
        "user",
        "frequency_penalty",
        "presence_penalty",
        "logit_bias",
        "logprobs",
        "top_logprobs",
        "metadata",
        "store",
        "parallel_tool_calls",
        "service_tier",
        "response_format",
        "stream_options",
        "n",
    }
)
_SAMPLING = ("temperature", "top_p", "top_k", "seed", "stop", "ignore_eos")
_KNOWN = (
    frozenset({"model", "messages", "stream", "max_tokens", "max_completion_tokens", *_SAMPLING}) | _IGNORED
)


class OpenAIRequestError(ValueError):
    """An invalid request; ``param`` names the offending field when there is one."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True, slots=True)
class ChatCompletionRequest:
    model: str
    messages: tuple[ChatMessage, ...]
    params: SamplingParams
    stream: bool
    include_usage: bool


def parse_request(body: Any, *, max_chars: int) -> ChatCompletionRequest:
    if not isinstance(body, dict):
        raise OpenAIRequestError("request body must be a JSON object")
    unknown = set(body) - _KNOWN
    if unknown:
        first = sorted(unknown)[0]
        raise OpenAIRequestError(f"unsupported parameter(s): {', '.join(sorted(unknown))}", first)
    model = body.get("model", "switchyard")
    if not isinstance(model, str) or not model:
        raise OpenAIRequestError("model must be a non-empty string", "model")
    if body.get("n", 1) != 1:
        raise OpenAIRequestError("only n=1 is supported", "n")
    raw_msgs = body.get("messages")
    if not isinstance(raw_msgs, list) or not raw_msgs:
        raise OpenAIRequestError("messages must be a non-empty array", "messages")
    messages = tuple(_message(m, i, max_chars) for i, m in enumerate(raw_msgs))
    if messages[-1].role != "user":
        raise OpenAIRequestError("the last message must come from the user", "messages")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise OpenAIRequestError("stream must be a boolean", "stream")
    opts = body.get("stream_options") or {}
    include_usage = bool(isinstance(opts, dict) and opts.get("include_usage"))
    raw_params = {k: body[k] for k in _SAMPLING if body.get(k) is not None}
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        raw_params["max_tokens"] = max_tokens
    try:
        params = SamplingParams.from_dict(raw_params)
    except ValueError as exc:
        raise OpenAIRequestError(str(exc)) from exc
    return ChatCompletionRequest(model, messages, params, stream, include_usage)


def _message(raw: Any, index: int, max_chars: int) -> ChatMessage:
    where = f"messages[{index}]"
    if not isinstance(raw, dict):
        raise OpenAIRequestError(f"{where} must be an object", where)
    role = raw.get("role")
    role = _ROLE_ALIASES.get(role, role) if isinstance(role, str) else role
    if role not in ("system", "user", "assistant"):
        raise OpenAIRequestError(
            f"{where}.role must be system, developer, user or assistant", f"{where}.role"
        )
    content = raw.get("content")
    if isinstance(content, list):  # content parts: only text is supported
        texts = []
        for part in content:
            if (
                not isinstance(part, dict)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise OpenAIRequestError(
                    f"{where}.content: only text parts are supported", f"{where}.content"
                )
            texts.append(part["text"])
        content = "".join(texts)
    if not isinstance(content, str):
        raise OpenAIRequestError(f"{where}.content must be a string", f"{where}.content")
    if len(content) > max_chars:
        raise OpenAIRequestError(f"{where}.content is longer than {max_chars} characters", f"{where}.content")
    return ChatMessage(role, content)


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion_body(
    completion_id: str, created: int, model: str, text: str, finish_reason: str, usage_: dict[str, int]
) -> dict[str, Any]:
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason}
        ],
        "usage": usage_,
    }


class ChunkWriter:
    """Builds the SSE lines of one streamed completion."""

    __slots__ = ("_head",)

    def __init__(self, completion_id: str, created: int, model: str) -> None:
        # Every chunk starts the same way; only the choices differ.
        self._head = (
            '{"id":'
            + json.dumps(completion_id)
            + ',"object":"chat.completion.chunk","created":'
            + str(created)
            + ',"model":'
            + json.dumps(model)
            + ","
        )

    def delta(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
        return b"data: " + (self._head + '"choices":[' + json.dumps(choice) + "]}").encode() + b"\n\n"

    def text(self, text: str) -> bytes:
        return (
            b"data: "
            + (
                self._head
                + '"choices":[{"index":0,"delta":{"content":'
                + json.dumps(text)
                + '},"finish_reason":null}]}'
            ).encode()
            + b"\n\n"
        )

    def usage(self, usage_: dict[str, int]) -> bytes:
        return (
            b"data: " + (self._head + '"choices":[],"usage":' + json.dumps(usage_) + "}").encode() + b"\n\n"
        )


DONE_LINE = b"data: [DONE]\n\n"


def sse_error(message: str, type_: str, code: str) -> bytes:
    body = {"error": {"message": message, "type": type_, "param": None, "code": code}}
    return b"data: " + json.dumps(body).encode() + b"\n\n"
