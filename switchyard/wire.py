"""The node protocol: messages between a router and a model node (edge or cloud).

One persistent WebSocket per router-node connection carries binary frames, each one msgpack map
with a ``t`` tag naming the message type. Many generation streams are multiplexed over the
connection by an integer stream id (``sid``) that the router picks.

Handshake: the router sends ``Hello`` first; the node answers ``Welcome`` or an ``Error`` with
code ``version_mismatch`` / ``unauthorized`` and closes. After that the router sends ``Generate``
and ``Cancel``; the node sends ``Delta``, ``Done``, ``Error`` per stream and ``Load`` now and then.

This module imports nothing heavy: the router and both backends share it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Literal

import msgpack

PROTOCOL_VERSION = 1

Role = Literal["system", "user", "assistant"]
ROLES: frozenset[str] = frozenset({"system", "user", "assistant"})


class ProtocolError(ValueError):
    """A frame that is not a valid node-protocol message."""


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True, slots=True)
class SamplingParams:
    """Decoding parameters. ``temperature == 0`` means greedy."""

    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    ignore_eos: bool = False  # keep generating past EOS until max_tokens (benchmarks, tests)

    def validate(self) -> None:
        """Raise ``ValueError`` naming the field when a value is out of range."""
        if not isinstance(self.max_tokens, int) or not 1 <= self.max_tokens <= 32768:
            raise ValueError(f"max_tokens must be an integer in [1, 32768], got {self.max_tokens!r}")
        if not isinstance(self.temperature, int | float) or not 0.0 <= self.temperature <= 5.0:
            raise ValueError(f"temperature must be a number in [0, 5], got {self.temperature!r}")
        if not isinstance(self.top_p, int | float) or not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p must be a number in (0, 1], got {self.top_p!r}")
        if not isinstance(self.top_k, int) or self.top_k < 0:
            raise ValueError(f"top_k must be a non-negative integer, got {self.top_k!r}")
        if self.seed is not None and (not isinstance(self.seed, int) or not 0 <= self.seed < 2**63):
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}")
        if len(self.stop) > 8 or any(not isinstance(s, str) or not s or len(s) > 64 for s in self.stop):
            raise ValueError("stop must be at most 8 non-empty strings of at most 64 characters")
        if not isinstance(self.ignore_eos, bool):
            raise ValueError(f"ignore_eos must be a boolean, got {self.ignore_eos!r}")

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> SamplingParams:
        known = {"max_tokens", "temperature", "top_p", "top_k", "seed", "stop", "ignore_eos"}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown sampling parameter(s): {', '.join(sorted(unknown))}")
        stop = raw.get("stop", ())
        if isinstance(stop, str):
            stop = (stop,)
        if not isinstance(stop, list | tuple):
            raise ValueError("stop must be a string or a list of strings")
        params = cls(
            max_tokens=raw.get("max_tokens", 256),
            temperature=raw.get("temperature", 0.0),
            top_p=raw.get("top_p", 1.0),
            top_k=raw.get("top_k", 0),
            seed=raw.get("seed"),
            stop=tuple(stop),
            ignore_eos=raw.get("ignore_eos", False),
        )
        params.validate()
        return params


# --- messages -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    """Router -> node, first frame. ``secret`` is the shared cluster secret (may be empty)."""

    version: int
    router_id: str
    secret: str = ""
    t: Literal["hello"] = "hello"


@dataclass(frozen=True, slots=True)
class Welcome:
    """Node -> router, answer to ``Hello``."""

    version: int
    node_id: str
    kind: str  # "edge" | "cloud"
    model: str
    context_window: int
    capacity: int
    t: Literal["welcome"] = "welcome"


@dataclass(frozen=True, slots=True)
class Generate:
    """Router -> node: start stream ``sid`` for this conversation."""

    sid: int
    messages: tuple[ChatMessage, ...]
    params: SamplingParams
    session_id: str = ""
    request_id: str = ""
    continue_text: str = ""  # a partial reply to continue (failover mid-reply), else ""
    t: Literal["gen"] = "gen"


@dataclass(frozen=True, slots=True)
class Cancel:
    sid: int
    t: Literal["cancel"] = "cancel"


# Not frozen, unlike the other messages: a router decodes one Delta per token of every stream, and
# a frozen dataclass's __init__ (object.__setattr__ per field) cost as much as the msgpack decoding.
# Treat it as immutable all the same.
@dataclass(slots=True)
class Delta:
    """Node -> router: more text of stream ``sid`` (``tokens`` new tokens produced it)."""

    sid: int
    text: str
    tokens: int = 1
    t: Literal["delta"] = "delta"


@dataclass(frozen=True, slots=True)
class Done:
    sid: int
    finish_reason: str  # "stop" | "length" | "cancelled"
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    t: Literal["done"] = "done"


@dataclass(frozen=True, slots=True)
class Error:
    """A failed stream (``sid`` >= 0) or a failed connection (``sid`` == -1)."""

    sid: int
    code: str
    message: str
    t: Literal["error"] = "error"


@dataclass(frozen=True, slots=True)
class Load:
    """Node -> router, periodic: the node's live load."""

    active: int
    queued: int
    capacity: int
    sessions: tuple[str, ...] = ()
    draining: bool = False
    t: Literal["load"] = "load"


Message = Hello | Welcome | Generate | Cancel | Delta | Done | Error | Load

_BY_TAG: dict[str, type[Any]] = {
    "hello": Hello,
    "welcome": Welcome,
    "gen": Generate,
    "cancel": Cancel,
    "delta": Delta,
    "done": Done,
    "error": Error,
    "load": Load,
}

_packer = msgpack.Packer(use_bin_type=True)
_DELTA_KEYS = frozenset({"t", "sid", "text", "tokens"})
# Field names per message class: encoding reads them directly, since ``asdict`` (which deep-copies
# through every nested value) cost more than the rest of a request's encoding on the router.
_FIELDS: dict[type[Any], tuple[str, ...]] = {
    cls: tuple(f.name for f in fields(cls)) for cls in (*_BY_TAG.values(), SamplingParams)
}


def _as_map(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in _FIELDS[type(obj)]}


def encode(msg: Message) -> bytes:
    """One frame holding ``msg``: a msgpack map of its fields (tuples travel as arrays)."""
    if isinstance(msg, Delta):  # once per chunk of every stream
        frame: bytes = _packer.pack({"t": "delta", "sid": msg.sid, "text": msg.text, "tokens": msg.tokens})
        return frame
    body = _as_map(msg)
    if isinstance(msg, Generate):
        body["messages"] = [{"role": m.role, "content": m.content} for m in msg.messages]
        body["params"] = _as_map(msg.params)
    frame = _packer.pack(body)
    return frame


def decode(frame: bytes) -> Message:
    """Decode one frame; raise ``ProtocolError`` on anything malformed."""
    try:
        raw = msgpack.unpackb(frame)  # msgpack >= 1.0: str keys and values, string-only map keys
    except Exception as exc:  # msgpack raises several unrelated types
        raise ProtocolError(f"undecodable frame: {exc}") from exc
    if not isinstance(raw, dict):
        raise ProtocolError("frame is not a map")
    if raw.keys() == _DELTA_KEYS:  # most frames: checked inline, without the generic path's passes
        sid, text, tokens = raw["sid"], raw["text"], raw["tokens"]
        if raw["t"] == "delta" and type(sid) is int and type(text) is str and type(tokens) is int:
            return Delta(sid, text, tokens)
    tag = raw.pop("t", None)
    cls = _BY_TAG.get(tag) if isinstance(tag, str) else None
    if cls is None:
        raise ProtocolError(f"unknown message type {tag!r}")
    try:
        if cls is Generate:
            msgs = tuple(_chat_message(m) for m in raw.pop("messages"))
            params = SamplingParams.from_dict(raw.pop("params"))
            return Generate(messages=msgs, params=params, **raw)
        if cls is Load:
            raw["sessions"] = tuple(raw.get("sessions", ()))
        msg = cls(**raw)
    except (TypeError, KeyError, ValueError) as exc:
        raise ProtocolError(f"bad {tag} message: {exc}") from exc
    _check_types(msg)
    return msg  # type: ignore[no-any-return]


def _chat_message(raw: Any) -> ChatMessage:
    if not isinstance(raw, dict) or not isinstance(raw.get("content"), str) or raw.get("role") not in ROLES:
        raise ValueError("each message needs a role (system/user/assistant) and string content")
    return ChatMessage(role=raw["role"], content=raw["content"])


def _check_types(msg: Any) -> None:
    sid = getattr(msg, "sid", 0)
    if not isinstance(sid, int):
        raise ProtocolError(f"sid must be an integer, got {sid!r}")
    if isinstance(msg, Delta) and not (isinstance(msg.text, str) and type(msg.tokens) is int):
        raise ProtocolError("a delta needs string text and an integer token count")
