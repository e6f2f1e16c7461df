"""The generation engine on the paged torch runtime: batched equals solo, shared prompts prefill once."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from cloud_backend.torch_lm import TorchLanguageModel
from switchyard.engine import GenerationEngine
from switchyard.lm import KVCache, Logits
from switchyard.tokenizer import ChatTokenizer
from switchyard.wire import ChatMessage, SamplingParams
from tests.batching import PROMPTS, ask, chat
from tests.edge_runtime.tiny_model import random_llama

SYSTEM = " ".join(f"Rule {i}: answer briefly and stay on the topic of item {i}." for i in range(12))


@pytest.fixture(scope="module")
def tokenizer(demo_models: Any) -> ChatTokenizer:
    return ChatTokenizer(demo_models.cloud)


def make(tokenizer: ChatTokenizer, **kwargs: Any) -> tuple[GenerationEngine, TorchLanguageModel, list[int]]:
    """An engine on a fresh runtime (same random weights each time) and the size of each decode batch."""
    lm = TorchLanguageModel(random_llama(vocab=tokenizer.vocab_size, context=512))
    batches: list[int] = []
    decode = lm.decode

    def recording(token_ids: list[int], caches: list[KVCache]) -> tuple[Logits, list[KVCache]]:
        batches.append(len(token_ids))
        return decode(token_ids, caches)

    lm.decode = recording  # type: ignore[method-assign]
    engine = GenerationEngine(lm, tokenizer, **kwargs)
    engine.start()
    return engine, lm, batches


async def test_batched_greedy_equals_solo_through_the_engine(tokenizer: ChatTokenizer) -> None:
    params = [SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True) for n in (30, 22, 26, 10, 8, 12)]
    solo, _, solo_batches = make(tokenizer, max_running=1)
    try:
        alone = [await ask(solo, chat(p), params[i]) for i, p in enumerate(PROMPTS)]
    finally:
        solo.close()
    assert max(solo_batches) == 1
    batched, _, batches = make(tokenizer, max_running=8)
    try:
        together = await asyncio.gather(*(ask(batched, chat(p), params[i]) for i, p in enumerate(PROMPTS)))
    finally:
        batched.close()
    assert [text for text, _ in together] == [text for text, _ in alone]
    assert max(batches) == len(PROMPTS)


async def test_a_shared_system_prompt_is_prefilled_once(tokenizer: ChatTokenizer) -> None:
    params = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
    engine, lm, _ = make(tokenizer, max_running=8)
    try:
        first, first_done = await ask(engine, chat(PROMPTS[0], SYSTEM), params)
        after_first = lm.prefill_stats.computed
        rest = await asyncio.gather(*(ask(engine, chat(p, SYSTEM), params) for p in PROMPTS[1:]))
    finally:
        engine.close()
    system_tokens = len(tokenizer.encode_chat(list(chat("", SYSTEM))[:1]))
    assert first_done.prompt_tokens > system_tokens > 150
    assert after_first == first_done.prompt_tokens
    # Each later request computes about its own question, never the system prompt again.
    for _, done in rest:
        assert done.prompt_tokens > system_tokens
    computed_later = lm.prefill_stats.computed - after_first
    unique = sum(done.prompt_tokens for _, done in rest) - len(rest) * system_tokens
    assert computed_later <= unique + len(rest) * lm.block_size
    # Sharing blocks changes nothing in what is generated.
    solo, _, _ = make(tokenizer, max_running=1)
    try:
        fresh = await ask(solo, chat(PROMPTS[3], SYSTEM), params)
    finally:
        solo.close()
    assert rest[2][0] == fresh[0] and first


async def test_followup_turn_reuses_the_session_prefix(tokenizer: ChatTokenizer) -> None:
    params = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
    engine, lm, _ = make(tokenizer)
    try:
        history = [ChatMessage("user", PROMPTS[1])]
        reply, first = await ask(engine, history, params, session="s-1")
        follow = [*history, ChatMessage("assistant", reply), ChatMessage("user", "And lakes?")]
        before = lm.prefill_stats.computed
        warm, warm_done = await ask(engine, follow, params, session="s-1")
        computed = lm.prefill_stats.computed - before
    finally:
        engine.close()
    solo, _, _ = make(tokenizer)
    try:
        cold, _ = await ask(solo, follow, params)
    finally:
        solo.close()
    assert warm == cold
    assert warm_done.cached_tokens >= first.prompt_tokens
    assert computed < warm_done.prompt_tokens - warm_done.cached_tokens + lm.block_size
