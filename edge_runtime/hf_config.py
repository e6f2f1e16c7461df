"""Map a Hugging Face ``config.json`` (Llama, Qwen2, GPT-2) onto the fields the edge runtime reads.

The runtime builds a ``switchyard.lm.ModelConfig`` from the exported folder's ``config.json``; GPT-2
names its sizes differently (``n_embd``, ``n_layer``, ...), so the exporter writes the original body
plus the runtime's names. Variants that the exported graph or the runtime cannot serve faithfully
are refused here, before any weights are read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "gpt2")
# Rotary variants whose frequencies are fixed at load time, so a traced graph holds them exactly;
# "dynamic" and "longrope" change with the sequence length, which a trace would freeze.
_STATIC_ROPE_TYPES = frozenset({"default", "linear", "llama3", "yarn"})


class UnsupportedModelError(ValueError):
    """The folder holds a model the exporter or the edge runtime cannot serve faithfully."""


def model_type(raw: dict[str, Any], source: str) -> str:
    """``model_type`` of a ``config.json`` body, refusing the architectures not supported here."""
    found = raw.get("model_type")
    if found not in SUPPORTED_MODEL_TYPES:
        raise UnsupportedModelError(
            f"{source}: model_type={found!r} is not supported (only {', '.join(SUPPORTED_MODEL_TYPES)})"
        )
    return str(found)


def runtime_config(raw: dict[str, Any], *, name: str, source: str) -> dict[str, Any]:
    """The exported folder's ``config.json``: ``raw`` plus the fields ``ModelConfig.from_dict`` reads."""
    fields = _ADAPTERS[model_type(raw, source)](raw, source)
    eos = raw.get("eos_token_id")
    return {
        **raw,
        **fields,
        "bos_token_id": raw.get("bos_token_id"),
        # The runtime's ModelConfig keeps one id; the tokenizer config names the one chats end with.
        "eos_token_id": eos[0] if isinstance(eos, list) and eos else eos,
        "switchyard_name": name,
    }


def _llama(raw: dict[str, Any], source: str) -> dict[str, Any]:
    hidden, heads = int(raw["hidden_size"]), int(raw["num_attention_heads"])
    head_dim = raw.get("head_dim")
    if head_dim is not None and int(head_dim) * heads != hidden:
        # switchyard.lm.ModelConfig derives head_dim as hidden_size // num_attention_heads.
        raise UnsupportedModelError(
            f"{source}: head_dim={head_dim} differs from hidden_size / num_attention_heads "
            f"({hidden} / {heads}); the edge runtime cannot size such a cache"
        )
    rope = raw.get("rope_parameters") or raw.get("rope_scaling") or {}
    rope_type = rope.get("rope_type", rope.get("type", "default"))
    if rope_type not in _STATIC_ROPE_TYPES:
        raise UnsupportedModelError(f"{source}: rope_type={rope_type!r} cannot be exported to a static graph")
    return {
        "num_key_value_heads": int(raw.get("num_key_value_heads") or heads),
        "max_position_embeddings": int(raw.get("max_position_embeddings", 2048)),
    }


def _qwen2(raw: dict[str, Any], source: str) -> dict[str, Any]:
    layer_types = raw.get("layer_types") or []
    if raw.get("use_sliding_window") or any(t != "full_attention" for t in layer_types):
        # The exported graph masks causally over the whole past; a window would be silently ignored.
        raise UnsupportedModelError(f"{source}: Qwen2 sliding-window attention is not supported")
    return _llama(raw, source)


def _gpt2(raw: dict[str, Any], source: str) -> dict[str, Any]:
    hidden, heads = int(raw["n_embd"]), int(raw["n_head"])
    if raw.get("add_cross_attention"):
        raise UnsupportedModelError(f"{source}: GPT-2 with cross-attention is not a causal LM")
    return {
        "hidden_size": hidden,
        "num_hidden_layers": int(raw["n_layer"]),
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "intermediate_size": int(raw.get("n_inner") or 4 * hidden),
        "max_position_embeddings": int(raw["n_positions"]),
        "tie_word_embeddings": bool(raw.get("tie_word_embeddings", True)),
    }


_ADAPTERS: dict[str, Callable[[dict[str, Any], str], dict[str, Any]]] = {
    "llama": _llama,
    "qwen2": _qwen2,
    "gpt2": _gpt2,
}
