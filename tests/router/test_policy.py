"""The routing decision as a pure function: tables of cases, and the shipped policy files."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.policy import Features, PolicyError, decide, load_policy, parse_policy
from switchyard.paths import POLICIES_DIR

DEFAULT = load_policy(POLICIES_DIR / "default.yaml")


@pytest.mark.parametrize(
    ("features", "target", "fallbacks", "rule"),
    [
        (Features(prompt_tokens=5, conversation_tokens=9), "edge", ("cloud",), "short-prompt"),
        (Features(prompt_tokens=47, conversation_tokens=60), "edge", ("cloud",), "short-prompt"),
        (Features(prompt_tokens=48, conversation_tokens=60), "cloud", ("edge",), "long-prompt"),
        (Features(prompt_tokens=500, conversation_tokens=600), "cloud", ("edge",), "long-prompt"),
        (
            Features(prompt_tokens=5, conversation_tokens=9000, fits_edge_context=False),
            "cloud",
            ("edge",),
            "outgrew-edge",
        ),
        (
            Features(prompt_tokens=500, conversation_tokens=900, session_tier="edge"),
            "cloud",
            ("edge",),
            "long-prompt",
        ),
        (
            Features(prompt_tokens=5, conversation_tokens=900, session_tier="edge"),
            "edge",
            ("cloud",),
            "sticky",
        ),
        (
            Features(prompt_tokens=5, conversation_tokens=900, session_tier="cloud"),
            "cloud",
            ("edge",),
            "sticky",
        ),
        (
            Features(prompt_tokens=5, conversation_tokens=9000, fits_edge_context=False, session_tier="edge"),
            "cloud",
            ("edge",),
            "outgrew-edge",
        ),
        (
            Features(prompt_tokens=500, conversation_tokens=600, model="switchyard-edge"),
            "edge",
            ("cloud",),
            "asked-for-edge",
        ),
        (
            Features(prompt_tokens=5, conversation_tokens=9, model="switchyard-cloud"),
            "cloud",
            ("edge",),
            "asked-for-cloud",
        ),
    ],
)
def test_default_policy(features: Features, target: str, fallbacks: tuple[str, ...], rule: str) -> None:
    d = decide(DEFAULT, features)
    assert (d.target, d.fallbacks, d.rule) == (target, fallbacks, rule)
    assert d.reason.startswith(rule)


def test_reason_names_the_feature_and_threshold() -> None:
    d = decide(DEFAULT, Features(prompt_tokens=5, conversation_tokens=9))
    assert "prompt_tokens=5 < 48" in d.reason


def test_every_shipped_policy_loads() -> None:
    files = sorted(POLICIES_DIR.glob("*.yaml"))
    assert files
    for f in files:
        load_policy(f)


def test_decide_is_deterministic() -> None:
    f = Features(prompt_tokens=30, conversation_tokens=40)
    assert decide(DEFAULT, f) == decide(DEFAULT, f)


def test_error_names_file_line_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "version: 1\nname: x\nrules:\n  - name: a\n    when:\n"
        "      prompt_tokens: {lt: many}\n    route: edge\n  - name: b\n    route: cloud\n"
    )
    with pytest.raises(PolicyError) as info:
        load_policy(bad)
    msg = str(info.value)
    assert f"{bad}:6" in msg
    assert "rules.0.when.prompt_tokens.lt" in msg


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        ({"name": "x", "rules": []}, "rules"),
        ({"name": "x", "rules": [{"name": "a", "route": "moon"}]}, "route"),
        (
            {"name": "x", "rules": [{"name": "a", "route": "edge", "when": {"prompt_tokens": {"lt": 3}}}]},
            "last rule",
        ),
        (
            {
                "name": "x",
                "rules": [
                    {"name": "a", "route": "edge", "when": {"colour": {"eq": 1}}},
                    {"name": "b", "route": "cloud"},
                ],
            },
            "colour",
        ),
        (
            {
                "name": "x",
                "rules": [
                    {"name": "a", "route": "edge", "when": {"turn": {}}},
                    {"name": "b", "route": "cloud"},
                ],
            },
            "at least one",
        ),
        ({"name": "x", "rules": [{"name": "a", "route": "edge"}], "extra": 1}, "extra"),
    ],
)
def test_invalid_policies_are_refused(raw: object, fragment: str) -> None:
    with pytest.raises(PolicyError, match=fragment):
        parse_policy(raw)


def test_caps_and_deadline_carried() -> None:
    p = parse_policy(
        {
            "name": "x",
            "rules": [
                {
                    "name": "a",
                    "route": "edge",
                    "fallback": ["cloud", "edge"],
                    "max_tokens": 64,
                    "deadline_s": 5,
                }
            ],
        }
    )
    d = decide(p, Features(prompt_tokens=1, conversation_tokens=1))
    assert (d.max_tokens, d.deadline_s, d.fallbacks) == (64, 5.0, ("cloud",))


COST = load_policy(POLICIES_DIR / "cost-saver.yaml")
LATENCY = load_policy(POLICIES_DIR / "latency-first.yaml")


@pytest.mark.parametrize(
    ("features", "target", "rule"),
    [
        (Features(prompt_tokens=300, conversation_tokens=300, score=0.2), "edge", "everything-else"),
        (Features(prompt_tokens=10, conversation_tokens=10, score=0.9), "cloud", "confidently-hard"),
        (Features(prompt_tokens=10, conversation_tokens=10, edge_queue_depth=40), "cloud", "edge-backed-up"),
        (
            Features(prompt_tokens=10, conversation_tokens=10, fits_edge_context=False),
            "cloud",
            "outgrew-edge",
        ),
        (
            Features(prompt_tokens=10, conversation_tokens=10, score=0.9, session_tier="edge"),
            "edge",
            "sticky",
        ),
    ],
)
def test_cost_saver_policy(features: Features, target: str, rule: str) -> None:
    d = decide(COST, features)
    assert (d.target, d.rule) == (target, rule)
    if rule == "everything-else":
        assert d.max_tokens == 512


def test_uses_looks_only_at_rules_that_can_move_a_sticky_conversation() -> None:
    assert COST.uses("score")
    assert not COST.uses("score", sticky=True)  # confidently-hard cannot move a held conversation
    assert COST.uses("edge_queue_depth", sticky=True)
    assert COST.holds_sticky("edge") and not COST.holds_sticky("")
    assert not LATENCY.holds_sticky("cloud")  # latency-first is not sticky


@pytest.mark.parametrize(
    ("features", "target", "rule"),
    [
        (Features(prompt_tokens=900, conversation_tokens=900), "edge", "edge-fits-and-idle"),
        (
            Features(prompt_tokens=9, conversation_tokens=9, edge_queue_depth=3),
            "cloud",
            "edge-busy-or-too-long",
        ),
        (Features(prompt_tokens=9, conversation_tokens=9, edge_load=0.95), "cloud", "edge-busy-or-too-long"),
        (
            Features(prompt_tokens=9, conversation_tokens=9, fits_edge_context=False),
            "cloud",
            "edge-busy-or-too-long",
        ),
        # Not sticky: a conversation on the cloud comes back to an idle edge.
        (
            Features(prompt_tokens=9, conversation_tokens=9, session_tier="cloud"),
            "edge",
            "edge-fits-and-idle",
        ),
    ],
)
def test_latency_first_policy(features: Features, target: str, rule: str) -> None:
    d = decide(LATENCY, features)
    assert (d.target, d.rule) == (target, rule)
    assert d.deadline_s is not None


def test_shipped_schema_is_current() -> None:
    import json

    from router.policy import policy_json_schema

    shipped = json.loads((POLICIES_DIR / "policy.schema.json").read_text())
    assert shipped == policy_json_schema(), "run: switchyard policy schema > policies/policy.schema.json"


def test_cloud_share_policy_uses_the_calibrated_threshold() -> None:
    policy = load_policy(POLICIES_DIR / "cloud-share.yaml")
    hard = Features(prompt_tokens=9, conversation_tokens=9, score=0.42, score_threshold=0.4)
    easy = Features(prompt_tokens=9, conversation_tokens=9, score=0.38, score_threshold=0.4)
    assert decide(policy, hard).rule == "hardest-share"
    assert "calibrated 0.400" in decide(policy, hard).reason
    assert decide(policy, easy).target == "edge"
