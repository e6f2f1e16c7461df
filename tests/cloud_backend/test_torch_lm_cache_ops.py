"""The torch runtime's optional cache operations, which session KV reuse in the engine uses."""

from __future__ import annotations

import numpy as np

from cloud_backend.paged_kv import PagedKVCache
from cloud_backend.torch_lm import TorchLanguageModel
from switchyard.lm import CacheOps
from tests.edge_runtime.tiny_model import random_llama, torch_last_logits


def test_trim_then_prefill_matches_a_full_prefill() -> None:
    model = random_llama()
    lm = TorchLanguageModel(model)
    assert isinstance(lm, CacheOps)
    assert lm.kv_bytes_per_token == 2 * 2 * 2 * 8 * 4
    ids = [9, 8, 7, 6, 5, 4, 3]
    _, cache = lm.prefill(ids)
    kept = lm.detach(cache)
    trimmed = lm.trim(kept, 4)
    assert trimmed.length == 4 and kept.length == len(ids)
    logits, extended = lm.prefill([*ids[4:], 11], trimmed)
    np.testing.assert_allclose(logits, torch_last_logits(model, [*ids, 11]).numpy(), atol=1e-5, rtol=1e-5)
    assert isinstance(extended, PagedKVCache) and extended.length == len(ids) + 1
