"""Rate-limit configuration: default limits and per-key overrides, validated once at load."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class KeyLimits(BaseModel):
    """The limits of one API key."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    requests_per_s: float = Field(gt=0, description="sustained request rate")
    burst: int = Field(ge=1, description="requests that may arrive at once after a quiet spell")
    tokens_per_minute: int | None = Field(
        None, ge=1, description="prompt plus completion tokens per minute; None: no token budget"
    )

    @property
    def request_interval_s(self) -> float:
        return 1.0 / self.requests_per_s

    @property
    def token_interval_s(self) -> float | None:
        return None if self.tokens_per_minute is None else 60.0 / self.tokens_per_minute


class LimitsConfig(BaseModel):
    """``per_key`` is keyed by the API key's id (or tenant name), never by the secret itself."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    default: KeyLimits | None = Field(None, description="limits for keys not listed; None: unlimited")
    per_key: dict[str, KeyLimits] = Field(default_factory=dict)

    def for_key(self, key_id: str) -> KeyLimits | None:
        """The key's limits, or ``None`` when it is not limited at all."""
        return self.per_key.get(key_id, self.default)
