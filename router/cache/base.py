"""The prompt cache contract and the key that decides what counts as "the same request".

A key is ``{prefix}{tenant}:{hash}``: the tenant is the namespace, so entries are never shared
across tenants, and ``hash`` is a blake2b digest of a canonical msgpack encoding of everything
that shapes the reply: the normalised conversation, the tier, the requested model and the
sampling parameters. Normalising a message strips it and collapses each run of whitespace to one
space; case and roles are kept, because they change what a model answers.

Only complete replies belong in the cache: a caller that streams stores the reply after the
final frame (``storable(finish_reason)``), never a partial or cancelled one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

import msgpack

from switchyard.wire import ChatMessage, SamplingParams

DEFAULT_PREFIX = "sy:cache:"
# Part of the hashed material: bump it when the key's encoding changes, so old entries miss.
KEY_VERSION = 1
STORABLE_FINISH_REASONS = frozenset({"stop", "length"})


@dataclass(frozen=True, slots=True)
class CachedReply:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int
    tier: str  # the tier that produced the reply
    node: str  # the node that produced it
    created: float  # wall-clock seconds since the epoch


class PromptCache(Protocol):
    async def get(self, key: str) -> CachedReply | None:
        """The stored reply, or ``None`` on a miss (absent, expired or unreadable)."""
        ...

    async def put(self, key: str, reply: CachedReply, ttl_s: float) -> None:
        """Store a complete reply for ``ttl_s`` seconds (a no-op when ``ttl_s <= 0``).

        Call it only once a streamed reply has finished (see ``storable``): the cache never
        holds partial text.
        """
        ...

    async def close(self) -> None: ...


def normalise(text: str) -> str:
    """Strip the text and collapse every run of whitespace (any kind, newlines too) to one space."""
    return " ".join(text.split())


def cache_key(
    tenant: str,
    tier: str,
    model: str,
    messages: Iterable[ChatMessage],
    params: SamplingParams,
    *,
    prefix: str = DEFAULT_PREFIX,
) -> str:
    # The digest has a fixed length and no ':', so "{tenant}:{hash}" splits one way only and
    # tenants cannot collide whatever characters their names hold.
    material = [
        KEY_VERSION,
        tenant,
        tier,
        model,
        [[m.role, normalise(m.content)] for m in messages],
        [
            int(params.max_tokens),
            float(params.temperature),
            float(params.top_p),
            int(params.top_k),
            params.seed,
            sorted(set(params.stop)),  # a set of stop strings: order does not change the reply
            bool(params.ignore_eos),
        ],
    ]
    digest = hashlib.blake2b(msgpack.packb(material), digest_size=16).hexdigest()
    return f"{prefix}{tenant}:{digest}"


def cacheable(params: SamplingParams, allow_sampled: bool) -> bool:
    """Deterministic requests only (greedy, or sampled with a fixed seed) unless the policy opts in."""
    return allow_sampled or params.temperature == 0 or params.seed is not None


def storable(finish_reason: str) -> bool:
    """Whether a reply that ended this way is complete enough to serve again."""
    return finish_reason in STORABLE_FINISH_REASONS
