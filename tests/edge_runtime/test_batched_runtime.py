"""One onnxruntime call for many sequences: padded batches give what each sequence gets alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cloud_backend.llama import LlamaForCausalLM
from edge_runtime.kv_block import OnnxKVCache
from edge_runtime.onnx_lm import OnnxLanguageModel, load
from switchyard.lm import BatchPrefill, CacheOps
from tests.batching import greedy_alone, greedy_batched
from tests.edge_runtime.tiny_model import export_tiny, random_llama, torch_last_logits

Tiny = tuple[LlamaForCausalLM, Path]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Tiny:
    model = random_llama()
    return model, export_tiny(model, tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def lm(tiny: Tiny) -> OnnxLanguageModel:
    return load(tiny[1], threads=1)


PROMPTS = ([3, 14, 15, 9, 2, 6], [5, 35], [8, 1, 7, 7, 30, 31, 32, 33, 34, 2, 2], [60], [44, 45, 46])
STEPS = (10, 6, 12, 9, 7)


def test_optional_protocols_are_implemented(lm: OnnxLanguageModel) -> None:
    assert isinstance(lm, CacheOps) and isinstance(lm, BatchPrefill)
    # 2 layers x (key + value) x 2 kv heads x head_dim 8 x fp32
    assert lm.kv_bytes_per_token == 2 * 2 * 2 * 8 * 4


def test_batched_greedy_equals_alone_with_joins_and_leaves(lm: OnnxLanguageModel) -> None:
    expected = [greedy_alone(lm, list(p), n)[0] for p, n in zip(PROMPTS, STEPS, strict=True)]
    # Rows 0-2 start together (one batched prefill), 3 joins after two steps, 4 after five;
    # each leaves when it has its tokens, so the batch changes shape both ways.
    got, _ = greedy_batched(lm, PROMPTS, STEPS, {0: [0, 1, 2], 2: [3], 5: [4]})
    assert got == expected


def test_steady_batch_feeds_last_output_back_without_copy(lm: OnnxLanguageModel) -> None:
    _, caches = lm.prefill_batch([[1, 2, 3], [4, 5]], [None, None])
    _, caches = lm.decode([7, 8], caches)
    first = caches[0]
    assert isinstance(first, OnnxKVCache) and first.block is caches[1].block  # type: ignore[attr-defined]
    assert first.block.lengths == (4, 3) and first.block.width == 4


def test_prefill_batch_rows_with_and_without_past(tiny: Tiny, lm: OnnxLanguageModel) -> None:
    model, _ = tiny
    _, with_past = lm.prefill([1, 2, 3])
    _, short_past = lm.prefill([11])
    rows = [[4, 5], [6, 7, 8, 9, 10], [12, 13, 14, 15, 16]]
    logits, caches = lm.prefill_batch(rows, [with_past, None, short_past])
    full = [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10], [11, 12, 13, 14, 15, 16]]
    for i, ids in enumerate(full):
        np.testing.assert_allclose(logits[i], torch_last_logits(model, ids).numpy(), atol=1e-4, rtol=1e-4)
    assert [c.length for c in caches] == [5, 5, 6]
    logits, _ = lm.decode([20, 21, 22], caches)
    for i, ids in enumerate(full):
        want = torch_last_logits(model, [*ids, 20 + i]).numpy()
        np.testing.assert_allclose(logits[i], want, atol=1e-4, rtol=1e-4)


def test_trim_and_detach(tiny: Tiny, lm: OnnxLanguageModel) -> None:
    model, _ = tiny
    ids = [9, 8, 7, 6, 5, 4, 3, 2, 1, 10]
    _, caches = lm.prefill_batch([ids, [1, 2]], [None, None])
    kept = lm.detach(caches[0])
    assert isinstance(kept, OnnxKVCache) and kept.block.rows == 1 and kept.length == len(ids)
    trimmed = lm.trim(kept, 6)
    logits, _ = lm.prefill([*ids[6:], 33], trimmed)
    np.testing.assert_allclose(logits, torch_last_logits(model, [*ids, 33]).numpy(), atol=1e-4, rtol=1e-4)
    assert kept.length == len(ids)  # caches are values: trimming made a new one
    with pytest.raises(ValueError):
        lm.trim(kept, 0)


def test_io_binding_on_cpu_matches_plain_run(tiny: Tiny, lm: OnnxLanguageModel) -> None:
    bound = load(tiny[1], threads=1, io_binding=True)
    assert bound.io_binding and not lm.io_binding
    prompts = [[3, 4, 5], [6]]
    a_logits, a = lm.prefill_batch(prompts, [None, None])
    b_logits, b = bound.prefill_batch(prompts, [None, None])
    np.testing.assert_allclose(a_logits, b_logits, atol=1e-6)
    for step in range(4):
        a_logits, a = lm.decode([step, step + 1], a)
        b_logits, b = bound.decode([step, step + 1], b)
        np.testing.assert_allclose(a_logits, b_logits, atol=1e-6)
    np.testing.assert_allclose(a[0].layers[0][0], b[0].layers[0][0], atol=1e-6)  # type: ignore[attr-defined]


def test_context_window_is_enforced_per_row(lm: OnnxLanguageModel) -> None:
    _, cache = lm.prefill(list(range(2, 2 + lm.context_window)))
    with pytest.raises(ValueError, match="context window"):
        lm.decode([3], [cache])
