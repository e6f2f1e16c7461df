"""The torch runtime on paged KV: one forward per decode step, prefix sharing, blocks freed, admission."""

from __future__ import annotations

import gc

import numpy as np
import pytest

import cloud_backend.torch_lm as torch_lm
from cloud_backend.paged_forward import forward_rows
from cloud_backend.torch_lm import KVBudget, KVCacheFull, TorchLanguageModel
from switchyard.lm import BatchPrefill, CacheOps, KVCache
from tests.batching import greedy_alone, greedy_batched
from tests.edge_runtime.tiny_model import random_llama, torch_last_logits

PROMPTS = ([3, 14, 15, 9, 2, 6], [5, 35], [8, 1, 7, 7, 30, 31, 32, 33, 34, 2, 2, 40, 41, 42, 43, 44], [60])
STEPS = (10, 6, 12, 9)


def test_protocols() -> None:
    lm = TorchLanguageModel(random_llama())
    assert isinstance(lm, CacheOps) and isinstance(lm, BatchPrefill) and isinstance(lm, KVBudget)


def test_batched_decode_is_one_forward_and_equals_solo(monkeypatch: pytest.MonkeyPatch) -> None:
    model = random_llama()
    alone = [greedy_alone(TorchLanguageModel(model), list(p), n) for p, n in zip(PROMPTS, STEPS, strict=True)]
    lm = TorchLanguageModel(model, block_size=4)  # small blocks: sequences cross block edges often
    forwards: list[int] = []

    def counting(*args: object) -> object:
        forwards.append(len(args[2]))  # type: ignore[arg-type]
        return forward_rows(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(torch_lm, "forward_rows", counting)
    decode = lm.decode

    def one_forward(tokens: list[int], caches: list[KVCache]) -> object:
        forwards.clear()
        out = decode(tokens, caches)
        assert forwards == [len(tokens)]  # the whole running batch in one forward pass
        return out

    monkeypatch.setattr(lm, "decode", one_forward)
    # Rows 0-1 start together, 2 joins after two steps, 3 after five; each leaves when done.
    got, seen = greedy_batched(lm, PROMPTS, STEPS, {0: [0, 1], 2: [2], 5: [3]})
    for i, (tokens, logits_alone) in enumerate(alone):
        assert got[i] == tokens
        np.testing.assert_allclose(np.stack(seen[i]), np.stack(logits_alone), atol=1e-5, rtol=0)


def test_decode_matches_a_full_forward_pass() -> None:
    model = random_llama()
    lm = TorchLanguageModel(model, block_size=4)
    seqs = [[5, 9, 2, 7, 1, 3], [11, 3]]
    logits, caches = lm.prefill_batch([list(s) for s in seqs], [None, None])
    for step in range(6):
        nxt = [20 + step, 40 + step]
        logits, caches = lm.decode(nxt, caches)
        seqs = [[*s, t] for s, t in zip(seqs, nxt, strict=True)]
        for row, s in zip(logits, seqs, strict=True):
            np.testing.assert_allclose(row, torch_last_logits(model, s).numpy(), atol=1e-5, rtol=0)
    assert [c.length for c in caches] == [len(s) for s in seqs]


def test_a_shared_prefix_is_computed_once() -> None:
    model = random_llama()
    lm = TorchLanguageModel(model, block_size=8)
    system = [(7 * i) % 80 + 2 for i in range(40)]  # five full blocks
    first = lm.prefill([*system, 3, 4, 5])
    assert lm.prefill_stats.computed == 43
    logits, cache = lm.prefill([*system, 9, 8])
    assert lm.prefill_stats.requested == 43 + 42 and lm.prefill_stats.computed == 43 + 2
    np.testing.assert_allclose(logits, torch_last_logits(model, [*system, 9, 8]).numpy(), atol=1e-5, rtol=0)
    # Decoding after shared blocks writes only into the sequence's own blocks.
    step, (cache,) = lm.decode([17], [cache])
    np.testing.assert_allclose(step[0], torch_last_logits(model, [*system, 9, 8, 17]).numpy(), atol=1e-5)
    assert first[1].length == 43 and cache.length == 43


def test_a_prompt_already_cached_runs_one_token_and_still_gives_its_logits() -> None:
    model = random_llama()
    lm = TorchLanguageModel(model, block_size=4)
    prompt = list(range(2, 14))
    lm.prefill(prompt)
    logits, cache = lm.prefill(prompt)
    assert lm.prefill_stats.computed == 12 + 1
    np.testing.assert_allclose(logits, torch_last_logits(model, prompt).numpy(), atol=1e-5, rtol=0)
    step, _ = lm.decode([3], [cache])
    np.testing.assert_allclose(step[0], torch_last_logits(model, [*prompt, 3]).numpy(), atol=1e-5, rtol=0)


def test_trimmed_live_cache_extends_without_touching_the_original() -> None:
    model = random_llama()
    lm = TorchLanguageModel(model, block_size=4)
    ids = [9, 8, 7, 6, 5, 4, 3]
    _, cache = lm.prefill(ids)
    short = lm.trim(cache, 5)
    logits, _ = lm.prefill([30, 31], short)  # writes behind the original's tail: copy-on-write
    np.testing.assert_allclose(logits, torch_last_logits(model, [*ids[:5], 30, 31]).numpy(), atol=1e-5)
    step, _ = lm.decode([12], [cache])
    np.testing.assert_allclose(step[0], torch_last_logits(model, [*ids, 12]).numpy(), atol=1e-5, rtol=0)


def test_blocks_are_freed_when_sequences_end() -> None:
    lm = TorchLanguageModel(random_llama(), block_size=4)
    _, caches = lm.prefill_batch([[1, 2, 3, 4, 5], [6, 7]], [None, None])
    for _ in range(5):
        _, caches = lm.decode([3, 4], caches)
    assert lm.pool.held_blocks == 3 + 2
    del caches
    gc.collect()
    assert lm.pool.held_blocks == 0 and lm.pool.free_blocks == lm.pool.usable_blocks


def test_a_full_budget_refuses_admission_instead_of_failing_later() -> None:
    model = random_llama()
    block_bytes = 4 * TorchLanguageModel(model).kv_bytes_per_token
    lm = TorchLanguageModel(model, block_size=4, kv_budget_bytes=6 * block_bytes)
    assert lm.kv_capacity_bytes == 6 * block_bytes
    assert lm.kv_reservation_bytes(7, 4) == 4 * block_bytes  # 11 tokens in 3 blocks, plus one
    assert lm.can_admit(list(range(10, 17)), 4)
    _, held = lm.prefill(list(range(10, 22)))  # three blocks
    assert not lm.can_admit(list(range(40, 47)), 4)
    assert lm.can_admit(list(range(10, 22)), 4)  # its prefix is cached: only the new tokens count
    _, other = lm.prefill([50, 51, 52, 53, 54, 55, 56, 57, 58])  # three more: the pool is full
    with pytest.raises(KVCacheFull):
        lm.prefill([60, 61])
    assert lm.pool.held_blocks == 6
    del held, other
    gc.collect()
    assert lm.can_admit(list(range(40, 47)), 4)
    lm.prefill([60, 61])


def test_detach_keeps_token_ids_only_and_reuses_what_is_still_cached() -> None:
    model = random_llama()
    lm = TorchLanguageModel(model, block_size=4)
    ids = list(range(2, 12))
    _, cache = lm.prefill(ids)
    kept = lm.detach(cache)
    del cache
    gc.collect()
    assert lm.pool.held_blocks == 0 and kept.length == 10
    before = lm.prefill_stats.computed
    logits, extended = lm.prefill([40, 41], lm.trim(kept, 9))
    assert lm.prefill_stats.computed - before == 1 + 2  # two cached blocks, the tail recomputed
    np.testing.assert_allclose(logits, torch_last_logits(model, [*ids[:9], 40, 41]).numpy(), atol=1e-5)
    assert extended.length == 11
