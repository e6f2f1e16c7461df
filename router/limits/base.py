"""The rate limiter contract: admission per API key, answered with a value.

A key has two limits (see ``KeyLimits``): a request rate with a burst, and optionally a token
budget. ``admit`` runs before a request is served: it checks that the budget is not exhausted and
takes one request slot, both in one atomic step. ``charge`` runs after the reply, with what it
actually used; the budget may go into debt then (a reply's size is unknown in advance), and the
key's next requests wait until the debt is repaid. ``Limited`` maps to HTTP 429 with
``Retry-After: ceil(retry_after_s)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

from router.limits.config import KeyLimits

LimitReason = Literal["requests", "tokens"]


@dataclass(frozen=True, slots=True)
class Admitted:
    remaining: int  # requests the key could still make at once (for X-RateLimit-Remaining)


@dataclass(frozen=True, slots=True)
class Limited:
    retry_after_s: float  # the earliest moment worth trying again, from now
    reason: LimitReason  # which limit refused: the request rate or the token budget


Admission = Admitted | Limited


class RateLimiter(Protocol):
    async def admit(self, key: str, limits: KeyLimits) -> Admission:
        """Check the key's token budget and take one request slot, as one atomic step."""
        ...

    async def charge(self, key: str, limits: KeyLimits, tokens: int) -> None:
        """Charge a finished reply's actual usage (prompt plus completion tokens) to the budget."""
        ...

    async def close(self) -> None: ...
