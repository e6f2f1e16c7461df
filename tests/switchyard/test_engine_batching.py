"""The engine's schedule on a real ONNX runtime: batching, joins, KV budget, chunked prefill, sessions."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.onnx_lm import OnnxLanguageModel, load
from switchyard.engine import GenerationEngine, TextChunk
from switchyard.lm import BatchPrefill, CacheOps, KVCache, Logits, ModelConfig
from switchyard.tokenizer import ChatTokenizer
from switchyard.wire import ChatMessage, SamplingParams
from tests.batching import GREEDY, PROMPTS, ask, chat
from tests.edge_runtime.tiny_model import export_tiny, random_llama


@pytest.fixture(scope="module")
def model_dir(demo_models: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    vocab = ChatTokenizer(demo_models.edge).vocab_size
    return export_tiny(
        random_llama(vocab=vocab, context=256),
        tmp_path_factory.mktemp("tiny"),
        tokenizer_from=demo_models.edge,
    )


@dataclass
class Recording:
    """Forwards to the runtime and records each call: what the schedule did, and each row's tokens."""

    lm: OnnxLanguageModel
    calls: list[tuple[str, list[int]]] = field(default_factory=list)  # (kind, tokens per row)
    fed: dict[int, list[int]] = field(default_factory=dict)  # sequence -> tokens decoded after prefill
    _owner: dict[int, int] = field(default_factory=dict)  # id(cache) -> sequence
    _keep: list[KVCache] = field(default_factory=list)

    @property
    def config(self) -> ModelConfig:
        return self.lm.config

    @property
    def context_window(self) -> int:
        return self.lm.context_window

    @property
    def kv_bytes_per_token(self) -> int:
        return self.lm.kv_bytes_per_token

    def prefill(self, token_ids: list[int], cache: KVCache | None = None) -> tuple[Logits, KVCache]:
        self.calls.append(("prefill", [len(token_ids)]))
        logits, out = self.lm.prefill(token_ids, cache)
        self._track([cache], [out])
        return logits, out

    def prefill_batch(
        self, token_ids: list[list[int]], caches: list[KVCache | None]
    ) -> tuple[Logits, list[KVCache]]:
        self.calls.append(("prefill", [len(r) for r in token_ids]))
        logits, out = self.lm.prefill_batch(token_ids, caches)
        self._track(caches, out)
        return logits, out

    def decode(self, token_ids: list[int], caches: list[KVCache]) -> tuple[Logits, list[KVCache]]:
        self.calls.append(("decode", [1] * len(token_ids)))
        for token, cache in zip(token_ids, caches, strict=True):
            self.fed[self._owner[id(cache)]].append(token)
        logits, out = self.lm.decode(token_ids, caches)
        self._track(list(caches), out)
        return logits, out

    def trim(self, cache: KVCache, length: int) -> KVCache:
        return self.lm.trim(cache, length)

    def detach(self, cache: KVCache) -> KVCache:
        return self.lm.detach(cache)

    def _track(self, before: Sequence[KVCache | None], after: Sequence[KVCache]) -> None:
        for old, new in zip(before, after, strict=True):
            seq = self._owner.get(id(old), len(self.fed)) if old is not None else len(self.fed)
            self.fed.setdefault(seq, [])
            self._owner[id(new)] = seq
            self._keep.append(new)  # keep ids unique for the test's lifetime

    def decode_batches(self) -> list[int]:
        return [len(rows) for kind, rows in self.calls if kind == "decode"]


def make_engine(model_dir: Path, **kwargs: Any) -> tuple[GenerationEngine, Recording]:
    rec = Recording(load(model_dir, threads=1))
    engine = GenerationEngine(rec, ChatTokenizer(model_dir), **kwargs)
    engine.start()
    return engine, rec


async def test_seeded_sampling_and_greedy_share_a_batch(model_dir: Path) -> None:
    """A sampled stream in the batch takes the per-row path; each stream still replays alone."""
    sampled = SamplingParams(max_tokens=30, temperature=0.9, top_k=50, seed=11, ignore_eos=True)
    greedy = SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True)
    plan = [(PROMPTS[0], greedy), (PROMPTS[1], sampled), (PROMPTS[2], greedy), (PROMPTS[3], sampled)]
    solo, _ = make_engine(model_dir, max_running=1)
    try:
        alone = [await ask(solo, chat(p), params) for p, params in plan]
    finally:
        solo.close()
    batched, rec = make_engine(model_dir, max_running=8)
    try:
        together = await asyncio.gather(*(ask(batched, chat(p), params) for p, params in plan))
        # The sampled ones finish first (30 tokens); the greedy pair then decodes on its own.
        after = await asyncio.gather(*(ask(batched, chat(p), params) for p, params in plan[::2]))
    finally:
        batched.close()
    assert [t for t, _ in together] == [t for t, _ in alone]
    assert [t for t, _ in after] == [t for t, _ in alone[::2]]
    assert max(rec.decode_batches()) == 4
    assert batched._sampling == 0  # every sampled stream that joined has left


async def test_batched_greedy_equals_solo_through_the_engine(model_dir: Path) -> None:
    # The first three run long enough for the others to join their batch, then leave at different steps.
    params = [SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True) for n in (40, 30, 35, 12, 9, 14)]
    solo, solo_rec = make_engine(model_dir, max_running=1)
    try:
        alone = await asyncio.gather(*(ask(solo, chat(p), params[i]) for i, p in enumerate(PROMPTS)))
    finally:
        solo.close()
    assert max(solo_rec.decode_batches()) == 1

    batched, rec = make_engine(model_dir, max_running=8)
    try:
        started = asyncio.Event()
        first = [
            asyncio.create_task(ask(batched, chat(p), params[i], first_token=started))
            for i, p in enumerate(PROMPTS[:3])
        ]
        await started.wait()  # the rest join a batch that is already decoding
        rest = [asyncio.create_task(ask(batched, chat(p), params[3 + i])) for i, p in enumerate(PROMPTS[3:])]
        together = await asyncio.gather(*first, *rest)
    finally:
        batched.close()
    assert [t for t, _ in together] == [t for t, _ in alone]
    assert max(rec.decode_batches()) >= 4
    assert any(kind == "prefill" and len(rows) > 1 for kind, rows in rec.calls)
    # The tokens each sequence fed back, in order, are the same as when it ran alone.
    assert sorted(rec.fed.values()) == sorted(solo_rec.fed.values())
    assert sorted(len(t) for t in rec.fed.values()) == sorted(p.max_tokens - 1 for p in params)


async def test_followup_turn_reuses_the_session_prefix(model_dir: Path) -> None:
    engine, rec = make_engine(model_dir)
    try:
        history = [ChatMessage("user", "Tell me about rivers and the towns that grew up along them.")]
        reply, first = await ask(engine, history, session="s-1")
        assert first.cached_tokens == 0 and engine.sessions() == ("s-1",)
        follow = [*history, ChatMessage("assistant", reply), ChatMessage("user", "And lakes?")]
        cold, cold_done = await ask(engine, follow)
        calls = len(rec.calls)
        warm, warm_done = await ask(engine, follow, session="s-1")
    finally:
        engine.close()
    assert warm == cold
    assert cold_done.cached_tokens == 0
    # At least the whole first prompt is reused; only the rest of the new prompt is computed.
    assert warm_done.cached_tokens >= first.prompt_tokens
    assert warm_done.prompt_tokens == cold_done.prompt_tokens
    prefilled = sum(sum(rows) for kind, rows in rec.calls[calls:] if kind == "prefill")
    assert prefilled == warm_done.prompt_tokens - warm_done.cached_tokens


async def test_kv_budget_queues_requests_beyond_it(model_dir: Path) -> None:
    tok = ChatTokenizer(model_dir)
    per_seq = (len(tok.encode_chat(chat("What is a queue?"))) + GREEDY.max_tokens) * 2 * 2 * 2 * 8 * 4
    engine, rec = make_engine(model_dir, max_running=8, max_kv_bytes=2 * per_seq)
    try:
        tasks = [asyncio.create_task(ask(engine, chat("What is a queue?"))) for _ in range(4)]
        queued = 0
        while not all(t.done() for t in tasks):
            queued = max(queued, engine.load()[1])
            await asyncio.sleep(0.001)
        results = [t.result() for t in tasks]
    finally:
        engine.close()
    assert max(rec.decode_batches()) == 2
    assert queued >= 1
    assert len({text for text, _ in results}) == 1


async def test_long_prompt_is_prefilled_in_chunks_between_decode_steps(model_dir: Path) -> None:
    long_prompt = chat(" ".join(["The river runs past the mill and under the old stone bridge."] * 8))
    reference, _ = make_engine(model_dir)
    try:
        expected, _ = await ask(reference, long_prompt)
    finally:
        reference.close()
    engine, rec = make_engine(model_dir, prefill_chunk=16)
    try:
        started = asyncio.Event()
        runner = asyncio.create_task(
            ask(engine, chat("Hi."), SamplingParams(max_tokens=60, ignore_eos=True), first_token=started)
        )
        await started.wait()
        text, done = await ask(engine, long_prompt)
        await runner
    finally:
        engine.close()
    assert text == expected and done.prompt_tokens > 48
    chunks = [rows for kind, rows in rec.calls if kind == "prefill"]
    assert all(sum(rows) <= 16 for rows in chunks) and len(chunks) >= 4
    # The running stream kept decoding while the long prompt went in: decodes sit between chunks.
    kinds = [kind for kind, _ in rec.calls]
    first_chunk = next(i for i, (kind, rows) in enumerate(rec.calls) if kind == "prefill" and rows == [16])
    assert "decode" in kinds[first_chunk + 1 : first_chunk + 3]


@dataclass
class Minimal:
    """Only the required contract: no batched prefill, no trim, no detach."""

    lm: OnnxLanguageModel

    @property
    def config(self) -> ModelConfig:
        return self.lm.config

    @property
    def context_window(self) -> int:
        return self.lm.context_window

    def prefill(self, token_ids: list[int], cache: KVCache | None = None) -> tuple[Logits, KVCache]:
        return self.lm.prefill(token_ids, cache)

    def decode(self, token_ids: list[int], caches: list[KVCache]) -> tuple[Logits, list[KVCache]]:
        return self.lm.decode(token_ids, caches)


async def test_runtime_without_the_optional_methods_still_serves(model_dir: Path) -> None:
    minimal = Minimal(load(model_dir, threads=1))
    assert not isinstance(minimal, CacheOps) and not isinstance(minimal, BatchPrefill)
    engine = GenerationEngine(minimal, ChatTokenizer(model_dir), max_kv_bytes=10_000_000)
    engine.start()
    try:
        results = await asyncio.gather(
            *(ask(engine, chat(p), session=f"s{i}") for i, p in enumerate(PROMPTS))
        )
        history = [*chat(PROMPTS[0]), ChatMessage("assistant", results[0][0]), ChatMessage("user", "More?")]
        _, again = await ask(engine, history, session="s0")
    finally:
        engine.close()
    assert all(done.completion_tokens == GREEDY.max_tokens for _, done in results)
    assert set(engine.sessions()) == {f"s{i}" for i in range(len(PROMPTS))}
    assert again.cached_tokens == 0 or again.cached_tokens < again.prompt_tokens


async def test_running_text_is_handed_over_at_the_stream_interval(model_dir: Path) -> None:
    engine, _ = make_engine(model_dir, stream_interval_s=60.0)
    params = SamplingParams(max_tokens=40, temperature=0.0, ignore_eos=True)
    chunks: list[int] = []
    try:
        async for ev in engine.generate(chat("Tell me about rivers."), params):
            if isinstance(ev, TextChunk):
                chunks.append(ev.tokens)
    finally:
        engine.close()
    # The first text goes at once; the rest waits for the ending, which is never held back.
    assert sum(chunks) == 40 and len(chunks) <= 3 and chunks[0] <= 2
