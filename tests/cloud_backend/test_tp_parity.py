"""Tensor parallelism matches Hugging Face transformers: logits within 1e-4, identical greedy replies.

One group of ranks per (model, TP size), started once (rank 0 is this process, the others spawned)
and reused by every test below; TP=4 on a model with two kv heads exercises kv-head replication.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from cloud_backend.tp_launch import launch
from cloud_backend.tp_lm import TPLanguageModel

transformers = pytest.importorskip("transformers")

TOLERANCE = 1e-4


def _tiny_hf(arch: str, out: Path) -> Any:
    common: dict[str, Any] = {
        "vocab_size": 98,  # uneven vocab-parallel split at TP=4
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_key_value_heads": 2,
        "intermediate_size": 50,  # uneven MLP split at TP=4
        "max_position_embeddings": 64,
        "rope_theta": 5000.0,
        "rms_norm_eps": 1e-6,
    }
    if arch == "llama":
        # attention_bias puts a bias on o_proj too: the row-parallel split must add it once.
        config = transformers.LlamaConfig(num_attention_heads=8, attention_bias=True, **common)
        model = transformers.LlamaForCausalLM(config)
    else:
        config = transformers.Qwen2Config(num_attention_heads=4, tie_word_embeddings=True, **common)
        model = transformers.Qwen2ForCausalLM(config)
    torch.manual_seed(7)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    model.eval().save_pretrained(out)
    return model


@dataclass
class Group:
    lm: TPLanguageModel
    hf: Any


@pytest.fixture(
    scope="module",
    params=[("llama", 1), ("llama", 2), ("llama", 4), ("qwen2", 1), ("qwen2", 2), ("qwen2", 4)],
    ids=lambda p: f"{p[0]}-tp{p[1]}",
)
def group(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Group]:
    arch, tp = request.param
    model_dir = tmp_path_factory.mktemp(f"{arch}-tp{tp}")
    hf = _tiny_hf(arch, model_dir)
    threads = torch.get_num_threads()
    lm = launch(model_dir, tp, timeout_s=30, cuda=False)  # the parity is fp32 on CPU with gloo
    try:
        assert lm.world == tp
        yield Group(lm, hf)
    finally:
        lm.close()
        torch.set_num_threads(threads)


def _hf_logits(hf: Any, ids: list[int]) -> np.ndarray:
    with torch.inference_mode():
        out: np.ndarray = hf(input_ids=torch.tensor([ids])).logits[0].float().numpy()
    return out


def test_prefill_and_batched_decode_match_transformers(group: Group) -> None:
    lm, hf = group.lm, group.hf
    a, b = [5, 9, 2, 7, 96, 11], [11, 3]
    logits_a, cache_a = lm.prefill(a)
    logits_b, cache_b = lm.prefill(b)
    worst = max(
        np.abs(logits_a - _hf_logits(hf, a)[-1]).max(), np.abs(logits_b - _hf_logits(hf, b)[-1]).max()
    )
    caches = [cache_a, cache_b]
    for step in range(3):
        nxt = [20 + step, 90 + step]
        logits, caches = lm.decode(nxt, caches)
        a, b = [*a, nxt[0]], [*b, nxt[1]]
        worst = max(worst, np.abs(logits[0] - _hf_logits(hf, a)[-1]).max())
        worst = max(worst, np.abs(logits[1] - _hf_logits(hf, b)[-1]).max())
    assert [c.length for c in caches] == [len(a), len(b)]
    assert worst < TOLERANCE, f"max abs diff {worst:.2e} at TP={lm.world}"


def test_prefill_extends_an_existing_cache(group: Group) -> None:
    _, cache = group.lm.prefill([1, 2, 3])
    logits, cache = group.lm.prefill([4, 5], cache)
    assert cache.length == 5
    assert np.abs(logits - _hf_logits(group.hf, [1, 2, 3, 4, 5])[-1]).max() < TOLERANCE


def test_greedy_generation_is_identical(group: Group) -> None:
    prompt = [3, 14, 15, 92, 65]
    with torch.inference_mode():
        expected = group.hf.generate(
            torch.tensor([prompt]), max_new_tokens=12, do_sample=False, pad_token_id=0, eos_token_id=None
        )[0, len(prompt) :].tolist()
    logits, cache = group.lm.prefill(prompt)
    got = [int(logits.argmax())]
    while len(got) < 12:
        step, (cache,) = group.lm.decode([got[-1]], [cache])
        got.append(int(step[0].argmax()))
    assert got == expected


def test_context_window_is_enforced_before_any_rank_runs(group: Group) -> None:
    with pytest.raises(ValueError, match="context window"):
        group.lm.prefill(list(range(65)))
    assert group.lm.healthy()


def test_ranks_free_caches_the_engine_dropped(group: Group) -> None:
    for _ in range(3):
        group.lm.prefill([1, 2, 3])
    gc.collect()
    group.lm.prefill([4])  # carries the frees to every rank
    assert group.lm.cached_sequences <= 2
