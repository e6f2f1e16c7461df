from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cloud_backend.llama import (
    LLAMA,
    QWEN2,
    Architecture,
    LlamaForCausalLM,
    architecture_from_dict,
    load_llama,
    save_llama,
)
from tests.edge_runtime.tiny_model import random_llama


def tiny_model(*, tie: bool = False) -> LlamaForCausalLM:
    return random_llama(vocab=96, context=128, seed=0, tie=tie)


@torch.inference_mode()
def test_kv_cache_decode_matches_full_forward() -> None:
    model = tiny_model()
    ids = torch.randint(0, 96, (2, 12))
    positions = torch.arange(12).expand(2, -1)
    full, _ = model(ids, positions)
    logits, past = model(ids[:, :7], positions[:, :7])
    steps = [logits]
    for t in range(7, 12):
        logits, past = model(ids[:, t : t + 1], positions[:, t : t + 1], past_key_values=past)
        steps.append(logits)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-5, rtol=1e-5)
    assert past[0][0].shape == (2, 2, 12, 8)


@torch.inference_mode()
def test_left_padding_matches_unpadded() -> None:
    model = tiny_model()
    ids = torch.randint(0, 96, (1, 6))
    alone, _ = model(ids, torch.arange(6)[None])
    padded_ids = torch.cat((torch.zeros(1, 3, dtype=torch.long), ids), dim=1)
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1, 1]])
    positions = torch.tensor([[0, 0, 0, 0, 1, 2, 3, 4, 5]])
    padded, _ = model(padded_ids, positions, attention_mask=mask)
    torch.testing.assert_close(padded[:, 3:], alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("tie", [False, True])
def test_matches_transformers(tmp_path: Path, tie: bool) -> None:
    transformers = pytest.importorskip("transformers")
    hf_config = transformers.LlamaConfig(
        vocab_size=96,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=48,
        max_position_embeddings=128,
        rope_theta=5000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=tie,
    )
    torch.manual_seed(0)
    hf = transformers.LlamaForCausalLM(hf_config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0.0, 0.2)
    hf.save_pretrained(tmp_path, safe_serialization=True)
    ours = load_llama(tmp_path)
    assert ours.config.rope_theta == 5000.0
    ids = torch.randint(0, 96, (2, 10))
    with torch.inference_mode():
        expected = hf(input_ids=ids).logits
        got, _ = ours(ids, torch.arange(10).expand(2, -1))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("shard", [None, 20_000])
@pytest.mark.parametrize("tie", [False, True])
def test_save_load_round_trip(tmp_path: Path, shard: int | None, tie: bool) -> None:
    model = tiny_model(tie=tie)
    save_llama(model, tmp_path, extra_config={"switchyard_name": "tiny-test"}, max_shard_bytes=shard)
    assert json.loads((tmp_path / "config.json").read_text())["switchyard_name"] == "tiny-test"
    assert (tmp_path / "model.safetensors.index.json").exists() == (shard is not None)
    loaded = load_llama(tmp_path)
    ids = torch.randint(0, 96, (1, 5))
    positions = torch.arange(5)[None]
    with torch.inference_mode():
        torch.testing.assert_close(loaded(ids, positions)[0], model(ids, positions)[0])
    if tie:
        assert loaded.lm_head.weight is loaded.model.embed_tokens.weight


def test_qwen2_matches_transformers_and_round_trips(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    hf_config = transformers.Qwen2Config(
        vocab_size=96,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=48,
        max_position_embeddings=128,
    )
    torch.manual_seed(0)
    hf = transformers.Qwen2ForCausalLM(hf_config).eval()
    with torch.no_grad():
        for p in hf.parameters():
            p.normal_(0.0, 0.2)
    hf.save_pretrained(tmp_path / "hf", safe_serialization=True)
    ours = load_llama(tmp_path / "hf")
    assert ours.arch == QWEN2 and "model.layers.0.self_attn.q_proj.bias" in ours.state_dict()
    ids = torch.randint(0, 96, (2, 10))
    with torch.inference_mode():
        expected = hf(input_ids=ids).logits
        got, _ = ours(ids, torch.arange(10).expand(2, -1))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    save_llama(ours, tmp_path / "ours")
    assert json.loads((tmp_path / "ours" / "config.json").read_text())["model_type"] == "qwen2"
    assert load_llama(tmp_path / "ours").arch == QWEN2


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({}, LLAMA),
        ({"model_type": "llama", "attention_bias": True}, Architecture("llama", qkv_bias=True, o_bias=True)),
        ({"architectures": ["Qwen2ForCausalLM"]}, QWEN2),
        ({"model_type": "qwen2", "use_sliding_window": False}, QWEN2),
    ],
)
def test_architecture_from_config(raw: dict[str, object], expected: Architecture) -> None:
    assert architecture_from_dict(raw) == expected


@pytest.mark.parametrize(
    "raw", [{"model_type": "mistral"}, {"model_type": "qwen2", "use_sliding_window": True}]
)
def test_unsupported_variants_are_refused(raw: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="not supported"):
        architecture_from_dict(raw)
