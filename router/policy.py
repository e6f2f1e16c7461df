"""Routing policies: operator-edited YAML rules turned into a pure decision function.

A policy is an ordered list of rules. Each rule has conditions over request features and names a
target tier and its fallback chain; the first rule whose conditions all hold decides. ``decide``
does no I/O and reads no clock, so tables of cases test it directly.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Tier = Literal["edge", "cloud"]
Feature = Literal[
    "prompt_tokens",
    "conversation_tokens",
    "turn",
    "score",
    "tenant",
    "model",
    "fits_edge_context",
    "edge_queue_depth",
    "edge_load",
    "session_tier",
]
Scalar = int | float | str | bool


class PolicyError(ValueError):
    """An unusable policy file; the message names the file, line and field."""


@dataclass(frozen=True, slots=True)
class Features:
    """What a rule can look at. Computed by the router for each request."""

    prompt_tokens: int
    conversation_tokens: int
    turn: int = 1
    score: float = 0.0
    tenant: str = ""
    model: str = ""
    fits_edge_context: bool = True
    edge_queue_depth: int = 0
    edge_load: float = 0.0
    session_tier: str = ""
    score_threshold: float = 0.5  # the calibrated threshold, for conditions written "calibrated"


class Condition(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    lt: float | None = None
    lte: float | None = None
    gt: float | Literal["calibrated"] | None = None
    gte: float | Literal["calibrated"] | None = None
    eq: Scalar | None = None
    ne: Scalar | None = None
    in_: tuple[Scalar, ...] | None = Field(None, alias="in")

    @model_validator(mode="after")
    def _not_empty(self) -> Condition:
        if all(v is None for v in (self.lt, self.lte, self.gt, self.gte, self.eq, self.ne, self.in_)):
            raise ValueError("a condition needs at least one of lt, lte, gt, gte, eq, ne, in")
        return self

    def holds(self, value: Scalar, calibrated: float = 0.5) -> bool:
        """Does ``value`` satisfy every bound? ``calibrated`` stands in for the word "calibrated"."""
        if self.eq is not None and value != self.eq:
            return False
        if self.ne is not None and value == self.ne:
            return False
        if self.in_ is not None and value not in self.in_:
            return False
        if any(b is not None for b in (self.lt, self.lte, self.gt, self.gte)):
            if isinstance(value, str):
                return False
            v = float(value)
            gt = calibrated if self.gt == "calibrated" else self.gt
            gte = calibrated if self.gte == "calibrated" else self.gte
            if (self.lt is not None and not v < self.lt) or (self.lte is not None and not v <= self.lte):
                return False
            if (gt is not None and not v > gt) or (gte is not None and not v >= gte):
                return False
        return True

    def describe(self) -> str:
        ops = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">=", "eq": "==", "ne": "!=", "in_": "in"}
        return " and ".join(f"{ops[k]} {_num(v)}" for k, v in self if v is not None and k in ops)

    def describe_with(self, calibrated: float) -> str:
        text = self.describe()
        return text.replace("calibrated", f"calibrated {calibrated:.3f}") if "calibrated" in text else text


class Rule(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(min_length=1)
    when: dict[Feature, Condition] = Field(default_factory=dict)
    route: Tier
    fallback: tuple[Tier, ...] = ()
    max_tokens: int | None = Field(None, ge=1, description="cap on the reply's max_tokens")
    deadline_s: float | None = Field(None, gt=0, description="bound on the whole request")
    moves_sticky: bool = Field(
        False, description="with a sticky policy: this rule may move a conversation off the tier it is on"
    )


class Calibration(BaseModel):
    """Route by a target cloud share instead of a fixed score threshold."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    target_cloud_share: float = Field(ge=0.0, le=1.0, description="share of traffic the score rules send on")
    fallback_threshold: float = Field(
        0.5, ge=0.0, le=1.0, description="threshold until enough traffic is seen"
    )


class Policy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = 1
    name: str
    description: str = ""
    sticky: bool = Field(
        True,
        description="keep a conversation on the tier that answered its last turn, unless a rule with "
        "moves_sticky matches",
    )
    calibration: Calibration | None = Field(
        None, description="makes `score: {gte: calibrated}` track a target cloud share of recent traffic"
    )
    cache: bool = Field(True, description="serve exact repeats from the prompt cache")
    cache_sampled: bool = Field(
        False,
        description="also cache sampled replies (temperature > 0 without a seed); off: deterministic only",
    )
    rules: tuple[Rule, ...] = Field(min_length=1)

    def uses(self, feature: str, *, sticky: bool = False) -> bool:
        """Can ``decide`` read ``feature``? For a conversation held by stickiness only the rules that
        may move it are looked at. (Per request in the hot path: answered from a set.)"""
        return feature in (self._features_read_sticky if sticky else self._features_read)

    @functools.cached_property
    def _features_read(self) -> frozenset[str]:
        return frozenset(f for rule in self.rules for f in rule.when)

    @functools.cached_property
    def _features_read_sticky(self) -> frozenset[str]:
        return frozenset(f for rule in self.rules if rule.moves_sticky for f in rule.when)

    def holds_sticky(self, session_tier: str) -> bool:
        """Is a conversation on ``session_tier`` held there unless a ``moves_sticky`` rule matches?"""
        return self.sticky and session_tier in ("edge", "cloud")

    @model_validator(mode="after")
    def _last_rule_catches_all(self) -> Policy:
        if self.rules[-1].when:
            raise ValueError("the last rule must have no conditions, so every request gets a route")
        calibrated = any("calibrated" in (c.gt, c.gte) for r in self.rules for c in r.when.values())
        if calibrated and self.calibration is None:
            raise ValueError('a condition uses "calibrated" but the policy has no calibration section')
        return self


def _num(v: object) -> object:
    return int(v) if isinstance(v, float) and v.is_integer() else v


def _fmt(v: object) -> str:
    if isinstance(v, float) and not v.is_integer():
        return f"{v:.3f}"
    return repr(_num(v))


@dataclass(frozen=True, slots=True)
class Decision:
    target: Tier
    fallbacks: tuple[Tier, ...]
    rule: str
    reason: str
    max_tokens: int | None = None
    deadline_s: float | None = None


def decide(policy: Policy, features: Features) -> Decision:
    sticky = policy.holds_sticky(features.session_tier)
    for rule in policy.rules:
        if sticky and not rule.moves_sticky:
            continue
        if all(
            cond.holds(getattr(features, feat), features.score_threshold) for feat, cond in rule.when.items()
        ):
            why = ", ".join(
                f"{feat}={_fmt(getattr(features, feat))} {cond.describe_with(features.score_threshold)}"
                for feat, cond in rule.when.items()
            )
            return Decision(
                target=rule.route,
                fallbacks=tuple(t for t in rule.fallback if t != rule.route),
                rule=rule.name,
                reason=f"{rule.name}: {why}" if why else rule.name,
                max_tokens=rule.max_tokens,
                deadline_s=rule.deadline_s,
            )
    if sticky:
        tier = features.session_tier
        other = "cloud" if tier == "edge" else "edge"
        return Decision(
            target=tier,  # type: ignore[arg-type]
            fallbacks=(other,),  # type: ignore[arg-type]
            rule="sticky",
            reason=f"sticky: the conversation is on the {tier}",
        )
    raise AssertionError("unreachable: validation guarantees a catch-all last rule")


def load_policy(path: Path) -> Policy:
    try:
        text = path.read_text()
        raw = yaml.safe_load(text)
    except (OSError, yaml.YAMLError) as exc:
        raise PolicyError(f"{path}: {exc}") from exc
    return parse_policy(raw, source=str(path), text=text)


def parse_policy(raw: Any, *, source: str = "<policy>", text: str = "") -> Policy:
    try:
        return Policy.model_validate(raw)
    except ValidationError as exc:
        lines = _line_index(text)
        parts = []
        for err in exc.errors():
            loc = tuple(err["loc"])
            line = _find_line(lines, loc)
            where = f"{source}:{line}" if line else source
            field = ".".join(str(p) for p in loc) or "(top level)"
            parts.append(f"{where}: field {field}: {err['msg']}")
        raise PolicyError("; ".join(parts)) from exc


def _line_index(text: str) -> yaml.Node | None:
    if not text:
        return None
    try:
        return yaml.compose(text)
    except yaml.YAMLError:
        return None


def _find_line(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the deepest YAML node on the path ``loc`` (pydantic's error location)."""
    best = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            node = next((v for k, v in node.value if getattr(k, "value", None) == str(key)), None)
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
        else:
            break
        if node is None:
            break
        best = node.start_mark.line + 1
    return best


def policy_json_schema() -> dict[str, Any]:
    """The JSON Schema of policy files, for editors (``policies/policy.schema.json``)."""
    schema = Policy.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "Switchyard routing policy"
    return schema
