"""Tiny random Llama decoders exported to the edge runtime's layout, for batching and reuse tests.

Random weights with a wide spread give well-separated logits, so greedy decoding is a sharp test of
"the same tokens whether run alone or in a batch"; a trained-for-two-steps model would be flatter.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from cloud_backend.llama import LlamaForCausalLM, config_to_dict
from edge_runtime.export import export_onnx
from switchyard.lm import ModelConfig


def random_llama(
    *, vocab: int = 90, context: int = 64, seed: int = 2, tie: bool = False, name: str = "tiny-batching"
) -> LlamaForCausalLM:
    """A two-layer Llama with grouped-query attention (4 query heads, 2 kv heads of 8) and random weights."""
    torch.manual_seed(seed)
    config = ModelConfig(
        vocab_size=vocab,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=40,
        max_position_embeddings=context,
        rope_theta=2000.0,
        eos_token_id=1,
        tie_word_embeddings=tie,
        name=name,
    )
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    return model


def export_tiny(model: LlamaForCausalLM, out: Path, *, tokenizer_from: Path | None = None) -> Path:
    """``out`` as an edge model folder; with ``tokenizer_from``, that folder's tokenizer files too."""
    out.mkdir(parents=True, exist_ok=True)
    export_onnx(model, out / "model.onnx")
    (out / "config.json").write_text(json.dumps(config_to_dict(model.config)))
    if tokenizer_from is not None:
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copyfile(tokenizer_from / name, out / name)
    return out


def torch_last_logits(model: LlamaForCausalLM, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        logits, _ = model(torch.tensor([ids]), torch.arange(len(ids))[None])
    last: torch.Tensor = logits[0, -1].float()
    return last
