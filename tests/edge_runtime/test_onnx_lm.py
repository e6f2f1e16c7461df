from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cloud_backend.llama import LlamaForCausalLM, config_to_dict
from edge_runtime.export import export_onnx
from edge_runtime.onnx_lm import OnnxKVCache, OnnxLanguageModel, load
from tests.edge_runtime.tiny_model import random_llama

Exported = tuple[LlamaForCausalLM, OnnxLanguageModel]


def random_model(*, tie: bool = False) -> LlamaForCausalLM:
    return random_llama(tie=tie, name="tiny-onnx")


def export_dir(model: LlamaForCausalLM, out: Path) -> Path:
    export_onnx(model, out / "model.onnx")
    body = config_to_dict(model.config)
    (out / "config.json").write_text(json.dumps(body))
    return out


def torch_last_logits(model: LlamaForCausalLM, ids: list[int]) -> np.ndarray:
    with torch.inference_mode():
        logits, _ = model(torch.tensor([ids]), torch.arange(len(ids))[None])
    out: np.ndarray = logits[0, -1].float().numpy()
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Exported:
    model = random_model()
    lm = load(export_dir(model, tmp_path_factory.mktemp("onnx")), threads=1)
    return model, lm


def test_prefill_and_decode_match_torch(exported: Exported) -> None:
    model, lm = exported
    a, b = [3, 14, 15, 9, 2, 6], [5, 35]
    logits_a, cache_a = lm.prefill(a)
    logits_b, cache_b = lm.prefill(b)
    np.testing.assert_allclose(logits_a, torch_last_logits(model, a), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(logits_b, torch_last_logits(model, b), atol=1e-4, rtol=1e-4)
    caches = [cache_a, cache_b]
    for step in range(4):
        nxt = [7 + step, 60 + step]
        logits, caches = lm.decode(nxt, caches)
        a, b = [*a, nxt[0]], [*b, nxt[1]]
        assert logits.shape == (2, 90) and logits.dtype == np.float32
        np.testing.assert_allclose(logits[0], torch_last_logits(model, a), atol=1e-4, rtol=1e-4)
        np.testing.assert_allclose(logits[1], torch_last_logits(model, b), atol=1e-4, rtol=1e-4)
    assert [c.length for c in caches] == [len(a), len(b)]


def test_prefill_extends_cache(exported: Exported) -> None:
    model, lm = exported
    _, cache = lm.prefill([1, 2, 3])
    logits, cache = lm.prefill([4, 5, 6], cache)
    np.testing.assert_allclose(logits, torch_last_logits(model, [1, 2, 3, 4, 5, 6]), atol=1e-4, rtol=1e-4)
    assert cache.length == 6
    assert lm.config.name == "tiny-onnx" and lm.context_window == 64
    assert lm.providers[-1] == "CPUExecutionProvider"


def test_batched_graph_with_padding(exported: Exported, tmp_path: Path) -> None:
    # The raw graph takes a left-padded batch with a past, as a batching runtime will feed it.
    import onnxruntime as ort

    model, _ = exported
    export_onnx(model, tmp_path / "model.onnx", check=False)
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    with torch.inference_mode():
        _, past = model(torch.tensor([[4, 8, 15]]), torch.arange(3)[None])
    pad = torch.zeros(1, 2, 1, 8)
    feed = {
        "input_ids": np.array([[16], [23]]),
        "attention_mask": np.array([[1, 1, 1, 1], [0, 1, 1, 1]]),
        "position_ids": np.array([[3], [2]]),
    }
    with torch.inference_mode():
        _, short = model(torch.tensor([[8, 15]]), torch.arange(2)[None])
    for i, ((k, v), (sk, sv)) in enumerate(zip(past, short, strict=True)):
        feed[f"past_key_values.{i}.key"] = torch.cat((k, torch.cat((pad, sk), dim=2))).numpy()
        feed[f"past_key_values.{i}.value"] = torch.cat((v, torch.cat((pad, sv), dim=2))).numpy()
    logits = session.run(["logits"], feed)[0]
    np.testing.assert_allclose(logits[0, -1], torch_last_logits(model, [4, 8, 15, 16]), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(logits[1, -1], torch_last_logits(model, [8, 15, 23]), atol=1e-4, rtol=1e-4)


def test_fp16_export_runs(tmp_path: Path) -> None:
    model = random_model(tie=True)
    fp16 = random_model(tie=True).half()
    lm = load(export_dir(fp16, tmp_path), threads=1)
    ids = [3, 1, 4, 1, 5]
    logits, cache = lm.prefill(ids)
    assert isinstance(cache, OnnxKVCache) and cache.layers[0][0].dtype == np.float16
    logits, _ = lm.decode([9], [cache])
    np.testing.assert_allclose(logits[0], torch_last_logits(model, [*ids, 9]), atol=5e-2, rtol=5e-2)


def test_graph_returns_the_last_positions_logits_only(exported: Exported, tmp_path: Path) -> None:
    # A prompt's other positions need no vocabulary projection: the graph gives [batch, 1, vocab].
    import onnxruntime as ort

    model, _ = exported
    export_onnx(model, tmp_path / "model.onnx", check=False)
    session = ort.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    ids = [[0, 0, 4, 8, 15], [3, 1, 4, 1, 5]]
    empty = np.zeros((2, 2, 0, 8), dtype=np.float32)
    pasts = [f"past_key_values.{i}.{kind}" for i in range(2) for kind in ("key", "value")]
    feed = {
        "input_ids": np.array(ids),
        "attention_mask": np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]),
        "position_ids": np.array([[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]),
        **{name: empty for name in pasts},
    }
    logits = session.run(["logits"], feed)[0]
    assert logits.shape == (2, 1, 90)
    np.testing.assert_allclose(logits[0, 0], torch_last_logits(model, [4, 8, 15]), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(logits[1, 0], torch_last_logits(model, ids[1]), atol=1e-4, rtol=1e-4)
