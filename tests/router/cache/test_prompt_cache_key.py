"""What counts as the same request: key normalisation, tenant namespaces, what may be cached."""

from __future__ import annotations

from dataclasses import replace

import pytest

from router.cache import cache_key, cacheable, storable
from router.cache.base import DEFAULT_PREFIX, normalise
from switchyard.wire import ChatMessage, SamplingParams

BASE_PARAMS = SamplingParams(max_tokens=64, temperature=0.0, top_p=1.0, top_k=0, stop=("\n\n", "END"))
CONVERSATION = (
    ChatMessage("system", "You are terse."),
    ChatMessage("user", "Name a prime."),
    ChatMessage("assistant", "7"),
    ChatMessage("user", "Another one?"),
)


def key(
    messages: tuple[ChatMessage, ...] = CONVERSATION,
    params: SamplingParams = BASE_PARAMS,
    *,
    tenant: str = "acme",
    tier: str = "edge",
    model: str = "switchyard-auto",
) -> str:
    return cache_key(tenant, tier, model, messages, params)


def test_key_is_namespaced_by_tenant() -> None:
    k = key()
    assert k.startswith(f"{DEFAULT_PREFIX}acme:")
    assert len(k.rsplit(":", 1)[1]) == 32
    assert cache_key("acme", "edge", "m", CONVERSATION, BASE_PARAMS, prefix="p:").startswith("p:acme:")


def test_key_is_stable() -> None:
    assert key() == key(tuple(ChatMessage(m.role, m.content) for m in CONVERSATION))


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("  hi  ", "hi"),
        ("a\n\n  b\tc", "a b c"),
        ("a\u00a0 b", "a b"),
        ("Keep CASE", "Keep CASE"),
        ("", ""),
    ],
)
def test_normalise(raw: str, normalised: str) -> None:
    assert normalise(raw) == normalised


def test_whitespace_variants_share_a_key() -> None:
    spaced = tuple(ChatMessage(m.role, f"  {m.content.replace(' ', '   ')}\n") for m in CONVERSATION)
    assert key(spaced) == key()


@pytest.mark.parametrize(
    "changed",
    [
        (ChatMessage("system", "you are terse."), *CONVERSATION[1:]),  # case
        (ChatMessage("user", "You are terse."), *CONVERSATION[1:]),  # role
        CONVERSATION[:-1],  # a turn fewer
        (*CONVERSATION[:-1], ChatMessage("user", "Another"), ChatMessage("user", "one?")),  # split turn
        (*CONVERSATION[:-1], ChatMessage("user", "Anotherone?")),  # whitespace removed, not collapsed
    ],
)
def test_conversation_changes_miss(changed: tuple[ChatMessage, ...]) -> None:
    assert key(changed) != key()


@pytest.mark.parametrize(
    "params",
    [
        replace(BASE_PARAMS, max_tokens=65),
        replace(BASE_PARAMS, temperature=0.5),
        replace(BASE_PARAMS, top_p=0.9),
        replace(BASE_PARAMS, top_k=40),
        replace(BASE_PARAMS, seed=1),
        replace(BASE_PARAMS, stop=("\n\n",)),
        replace(BASE_PARAMS, ignore_eos=True),
    ],
)
def test_param_changes_miss(params: SamplingParams) -> None:
    assert key(params=params) != key()


def test_equivalent_params_share_a_key() -> None:
    assert key(params=replace(BASE_PARAMS, stop=("END", "\n\n", "END"))) == key()
    assert key(params=replace(BASE_PARAMS, temperature=0, top_p=1)) == key()


def test_tier_model_and_tenant_are_part_of_the_key() -> None:
    assert key(tier="cloud") != key()
    assert key(model="gpt-4o") != key()
    assert key(tenant="other") != key()
    # A tenant name holding the separator cannot reach into another tenant's namespace.
    assert key(tenant="a:b") != key(tenant="a")


@pytest.mark.parametrize(
    ("params", "allow_sampled", "expected"),
    [
        (SamplingParams(temperature=0.0), False, True),
        (SamplingParams(temperature=0.8, seed=42), False, True),
        (SamplingParams(temperature=0.8), False, False),
        (SamplingParams(temperature=0.8, top_p=0.5), False, False),
        (SamplingParams(temperature=0.8), True, True),
    ],
)
def test_cacheable(params: SamplingParams, allow_sampled: bool, expected: bool) -> None:
    assert cacheable(params, allow_sampled) is expected


@pytest.mark.parametrize(("reason", "expected"), [("stop", True), ("length", True), ("cancelled", False)])
def test_only_complete_replies_are_storable(reason: str, expected: bool) -> None:
    assert storable(reason) is expected
