"""The router's configuration file (YAML), validated once at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from router.admission import AuthConfig
from router.limits.config import LimitsConfig

Tier = Literal["edge", "cloud"]


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the file and field."""


class NodeEndpoint(BaseModel):
    """One upstream: a Switchyard node (native protocol) or any OpenAI-compatible server."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(min_length=1, max_length=64)
    url: str = Field(
        description="native: the node's WebSocket URL (ws://host:9001/node); "
        "openai: the API base URL (http://host:8000/v1)"
    )
    kind: Tier
    protocol: Literal["node", "openai"] = "node"
    # For protocol "openai" only:
    model: str = Field("", description="model name sent upstream")
    api_key_env: str | None = Field(None, description="environment variable holding the API key")
    context_window: int = Field(8192, ge=16, description="the upstream model's context window")
    max_concurrency: int = Field(64, ge=1, description="streams this router keeps open there at most")
    continue_extra: dict[str, bool | int | float | str] = Field(
        default_factory=dict,
        description="extra request fields that make the server continue a partial assistant message on "
        "failover (vLLM: {continue_final_message: true, add_generation_prompt: false})",
    )

    @model_validator(mode="after")
    def _url_matches_protocol(self) -> NodeEndpoint:
        want = ("ws://", "wss://") if self.protocol == "node" else ("http://", "https://")
        if not self.url.startswith(want):
            raise ValueError(f"url for protocol {self.protocol!r} must start with {' or '.join(want)}")
        if self.protocol == "openai" and not self.model:
            raise ValueError("an openai upstream needs a model name")
        return self


class CacheSettings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    ttl_s: float = Field(600.0, gt=0)
    max_entries: int = Field(10_000, ge=1, description="in-memory cache only; Redis evicts by its own policy")


class RouterConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    router_id: str = "router-1"
    redis_url: str | None = None
    discover_nodes: bool = Field(True, description="with redis_url: add nodes from the fleet registry")
    policy: Path = Path("policies/default.yaml")
    nodes: tuple[NodeEndpoint, ...] = ()
    tokenizer: Path | None = Field(None, description="tokenizer.json used to count prompt tokens")
    classifier: Path | None = Field(
        None, description="difficulty classifier weights (default: the shipped one)"
    )
    classifier_enabled: bool = Field(True, description="score prompts when the policy uses `score`")
    cluster_secret_env: str = "SWITCHYARD_CLUSTER_SECRET"
    auth: AuthConfig = Field(default_factory=AuthConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig, description="per-tenant rate limits")
    max_inflight: int = Field(
        4096, ge=1, description="requests in flight beyond which the router answers 503"
    )
    cache: CacheSettings = Field(default_factory=CacheSettings)
    session_ttl_s: int = Field(3600, ge=1)
    max_frame_bytes: int = Field(256 * 1024, ge=1024)
    max_message_chars: int = Field(64 * 1024, ge=1)
    max_concurrent_chats_per_socket: int = Field(32, ge=1)
    node_queue_limit: int = Field(16, ge=1, description="a node with this many queued requests takes no more")
    first_token_timeout_s: float = Field(30.0, gt=0)
    request_timeout_s: float = Field(300.0, gt=0)


def load_config(path: Path) -> RouterConfig:
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        cfg = RouterConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {_describe(exc)}") from exc
    # Relative paths in the file are relative to the file.
    base = path.parent
    updates: dict[str, Path] = {}
    if not cfg.policy.is_absolute():
        updates["policy"] = (base / cfg.policy).resolve()
    if cfg.tokenizer is not None and not cfg.tokenizer.is_absolute():
        updates["tokenizer"] = (base / cfg.tokenizer).resolve()
    if cfg.classifier is not None and not cfg.classifier.is_absolute():
        updates["classifier"] = (base / cfg.classifier).resolve()
    return cfg.model_copy(update=updates)


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        parts.append(f"field {loc}: {err['msg']} (got {err.get('input')!r})")
    return "; ".join(parts)
