"""Who is calling, and whether to serve them now: API keys, per-key rate limits, the in-flight cap.

Keys are never stored: the config lists the SHA-256 of each key with its tenant, and the limiter
is keyed by the tenant (or, for keys not listed when anonymous use is allowed, by a digest prefix).
Redis trouble fails open (the request is served, a metric counts it): a rate limiter that takes
the whole gateway down with it protects nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math

from pydantic import BaseModel, ConfigDict, Field

from router.errors import Overloaded, RateLimited, Unauthorized
from router.limits import InflightLimiter, LimitsConfig, RateLimiter
from router.limits.base import Limited
from router.metrics import RouterMetrics

log = logging.getLogger(__name__)

ANONYMOUS = "anonymous"


class ApiKey(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    tenant: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")


class AuthConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    require_api_key: bool = False
    keys: dict[str, ApiKey] = Field(
        default_factory=dict, description="sha256 hex digest of each API key -> its tenant"
    )


def key_digest(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def identify(auth: AuthConfig, api_key: str | None) -> str:
    """The caller's tenant (the rate-limit and cache namespace); raise ``Unauthorized`` if refused."""
    if not api_key:
        if auth.require_api_key:
            raise Unauthorized("an API key is required (Authorization: Bearer KEY)")
        return ANONYMOUS
    digest = key_digest(api_key)
    for known, entry in auth.keys.items():
        if hmac.compare_digest(known, digest):
            return entry.tenant
    if auth.require_api_key:
        raise Unauthorized("unknown API key")
    return "key-" + digest[:16]


def bearer(header: str | None) -> str | None:
    if header and header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return None


class Gate:
    """Admission for one request: the router's in-flight cap, then the caller's rate limit."""

    def __init__(
        self, limiter: RateLimiter, limits: LimitsConfig, inflight: InflightLimiter, metrics: RouterMetrics
    ) -> None:
        self._limiter = limiter
        self._limits = limits
        self._inflight = inflight
        self._metrics = metrics

    async def enter(self, tenant: str) -> None:
        """Take an in-flight slot and a rate-limit slot, or raise. Pair with ``leave``."""
        if not self._inflight.try_acquire():
            self._metrics.rejected.labels("overloaded").inc()
            raise Overloaded("the router is at its in-flight limit; retry shortly", retry_after_s=1.0)
        limits = self._limits.for_key(tenant)
        if limits is None:
            return
        try:
            verdict = await self._limiter.admit(tenant, limits)
        except Exception as exc:  # Redis down or slow: fail open
            self._metrics.rejected.labels("limiter_error").inc()
            log.warning("rate limiter unavailable, admitting: %s", exc)
            return
        if isinstance(verdict, Limited):
            self._inflight.release()
            self._metrics.rejected.labels(f"rate_{verdict.reason}").inc()
            raise RateLimited(
                f"rate limit exceeded ({verdict.reason}); retry in {verdict.retry_after_s:.2f}s",
                retry_after_s=math.ceil(verdict.retry_after_s * 100) / 100,
            )

    def leave(self) -> None:
        self._inflight.release()

    async def charge(self, tenant: str, tokens: int) -> None:
        limits = self._limits.for_key(tenant)
        if limits is None or limits.tokens_per_minute is None or tokens <= 0:
            return
        try:
            await self._limiter.charge(tenant, limits, tokens)
        except Exception as exc:
            log.warning("rate limiter unavailable, usage not charged: %s", exc)
