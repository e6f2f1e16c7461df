from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from cloud_backend.llama import LlamaForCausalLM, save_llama
from cloud_backend.torch_lm import TorchLanguageModel, load
from tests.edge_runtime.tiny_model import random_llama


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    return random_llama(vocab=80, context=16, seed=1, name="tiny")


def full_logits(model: LlamaForCausalLM, ids: list[int]) -> np.ndarray:
    with torch.inference_mode():
        logits, _ = model(torch.tensor([ids]), torch.arange(len(ids))[None])
    out: np.ndarray = logits[0].numpy()
    return out


def test_prefill_and_batched_decode_match_full_forward(model: LlamaForCausalLM) -> None:
    lm = TorchLanguageModel(model)
    a, b = [5, 9, 2, 7], [11, 3]
    logits_a, cache_a = lm.prefill(a)
    logits_b, cache_b = lm.prefill(b)
    np.testing.assert_allclose(logits_a, full_logits(model, a)[-1], atol=1e-5)
    np.testing.assert_allclose(logits_b, full_logits(model, b)[-1], atol=1e-5)
    caches = [cache_a, cache_b]
    for step in range(3):
        nxt = [20 + step, 40 + step]
        logits, caches = lm.decode(nxt, caches)
        a, b = [*a, nxt[0]], [*b, nxt[1]]
        assert logits.shape == (2, 80) and logits.dtype == np.float32
        np.testing.assert_allclose(logits[0], full_logits(model, a)[-1], atol=1e-5)
        np.testing.assert_allclose(logits[1], full_logits(model, b)[-1], atol=1e-5)
    assert [c.length for c in caches] == [len(a), len(b)]


def test_prefill_extends_existing_cache(model: LlamaForCausalLM) -> None:
    lm = TorchLanguageModel(model)
    _, cache = lm.prefill([1, 2, 3])
    logits, cache = lm.prefill([4, 5], cache)
    np.testing.assert_allclose(logits, full_logits(model, [1, 2, 3, 4, 5])[-1], atol=1e-5)
    assert cache.length == 5


def test_context_window_is_enforced(model: LlamaForCausalLM) -> None:
    lm = TorchLanguageModel(model)
    assert lm.context_window == 16
    with pytest.raises(ValueError, match="context window"):
        lm.prefill(list(range(17)))


def test_load_from_folder(model: LlamaForCausalLM, tmp_path: Path) -> None:
    save_llama(model, tmp_path)
    lm = load(tmp_path)
    assert lm.config == model.config
    np.testing.assert_allclose(lm.prefill([3, 4])[0], full_logits(model, [3, 4])[-1], atol=1e-5)
