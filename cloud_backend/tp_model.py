"""One tensor-parallel rank's slice of a Llama/Qwen2 decoder, loaded straight from safetensors slices.

q/k/v and gate/up are column-parallel, o and down row-parallel: each rank's partial sum is completed by
the all-reduce that ``LlamaAttention`` and ``LlamaMLP`` already call. The embedding is vocab-parallel
(each rank looks up its rows, zeros elsewhere, and an all-reduce sums them). Only the rank that samples
(rank 0) holds the final norm's consumer, the full LM head. Parameter names are Hugging Face's, so a
slice is read with ``safe_open(...).get_slice`` and no rank ever materialises a full weight it doesn't
keep.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from torch import Tensor, nn

from cloud_backend.llama import (
    SAFETENSORS_INDEX_NAME,
    SAFETENSORS_NAME,
    AllReduce,
    Architecture,
    LayerKV,
    LlamaAttention,
    LlamaDecoderLayer,
    LlamaMLP,
    RMSNorm,
    architecture_from_dict,
    read_config,
    run_layers,
)
from cloud_backend.tp_layout import ShardLayout
from switchyard.lm import ModelConfig


class _Body(nn.Module):
    def __init__(self, config: ModelConfig, layout: ShardLayout, layers: list[LlamaDecoderLayer]) -> None:
        super().__init__()
        self.embed_tokens = nn.Embedding(len(layout.vocab), config.hidden_size)
        self.layers = nn.ModuleList(layers)
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)


class ShardedLlama(nn.Module):
    """This rank's layers; ``forward`` gives the last layer's hidden states, ``logits`` the head's output."""

    def __init__(
        self,
        config: ModelConfig,
        arch: Architecture,
        layout: ShardLayout,
        all_reduce: AllReduce,
        *,
        with_head: bool,
    ) -> None:
        super().__init__()
        self.config = config
        self.arch = arch
        self.layout = layout
        self.all_reduce = all_reduce
        hd = config.head_dim
        layers = [
            LlamaDecoderLayer(
                config,
                LlamaAttention(
                    config.hidden_size,
                    len(layout.heads),
                    len(layout.kv_heads),
                    hd,
                    all_reduce,
                    qkv_bias=arch.qkv_bias,
                    o_bias=arch.o_bias,
                ),
                LlamaMLP(config.hidden_size, len(layout.units), all_reduce),
            )
            for _ in range(config.num_hidden_layers)
        ]
        self.model = _Body(config, layout, layers)
        self.lm_head: nn.Linear | None = (
            nn.Linear(config.hidden_size, config.vocab_size, bias=False) if with_head else None
        )

    def embed(self, input_ids: Tensor) -> Tensor:
        if self.layout.world == 1:
            out: Tensor = self.model.embed_tokens(input_ids)
            return out
        start, stop = self.layout.vocab.start, self.layout.vocab.stop
        mine = (input_ids >= start) & (input_ids < stop)
        local = torch.where(mine, input_ids - start, torch.zeros_like(input_ids))
        rows = self.model.embed_tokens(local) * mine[..., None].to(self.model.embed_tokens.weight.dtype)
        return self.all_reduce(rows)

    def forward(
        self,
        input_ids: Tensor,
        position_ids: Tensor,
        attention_mask: Tensor | None = None,
        past_key_values: list[LayerKV] | None = None,
    ) -> tuple[Tensor, list[LayerKV]]:
        """Hidden states ``[batch, seq, hidden]`` before the final norm, and this rank's keys/values."""
        x = self.embed(input_ids)
        return run_layers(self.model.layers, self.config, x, position_ids, attention_mask, past_key_values)

    def logits(self, hidden: Tensor) -> Tensor:
        if self.lm_head is None:
            raise RuntimeError(f"rank {self.layout.rank} holds no LM head")
        out: Tensor = self.lm_head(self.model.norm(hidden))
        return out


def _weight_files(model_dir: Path) -> dict[str, Path]:
    single = model_dir / SAFETENSORS_NAME
    if single.exists():
        with safe_open(str(single), framework="pt") as f:
            return dict.fromkeys(f.keys(), single)
    index_path = model_dir / SAFETENSORS_INDEX_NAME
    if not index_path.exists():
        raise FileNotFoundError(f"{model_dir}: neither {SAFETENSORS_NAME} nor {SAFETENSORS_INDEX_NAME}")
    weight_map: dict[str, str] = json.loads(index_path.read_text(encoding="utf-8"))["weight_map"]
    return {key: model_dir / name for key, name in weight_map.items()}


def _rows_or_cols(name: str, layout: ShardLayout, head_dim: int) -> tuple[int, range] | None:
    """(dimension, range) of ``name`` this rank reads; ``None`` for a replicated tensor."""
    heads = range(layout.heads.start * head_dim, layout.heads.stop * head_dim)
    kv = range(layout.kv_heads.start * head_dim, layout.kv_heads.stop * head_dim)
    rules = (
        (".self_attn.q_proj.", 0, heads),
        (".self_attn.k_proj.", 0, kv),
        (".self_attn.v_proj.", 0, kv),
        (".self_attn.o_proj.weight", 1, heads),
        (".mlp.gate_proj.weight", 0, layout.units),
        (".mlp.up_proj.weight", 0, layout.units),
        (".mlp.down_proj.weight", 1, layout.units),
        ("model.embed_tokens.weight", 0, layout.vocab),
    )
    for marker, dim, part in rules:
        if marker in name:
            return dim, part
    return None


def load_shard(
    model_dir: Path,
    rank: int,
    world: int,
    all_reduce: AllReduce,
    *,
    with_head: bool,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> ShardedLlama:
    """Build this rank's ``ShardedLlama`` in eval mode, reading only the slices it keeps."""
    config, raw = read_config(model_dir)
    layout = ShardLayout.plan(config, rank, world)
    with torch.device("meta"):
        model = ShardedLlama(config, architecture_from_dict(raw), layout, all_reduce, with_head=with_head)
    files = _weight_files(model_dir)
    state: dict[str, Tensor] = {}
    with contextlib.ExitStack() as stack:
        handles: dict[Path, Any] = {
            path: stack.enter_context(safe_open(str(path), framework="pt")) for path in set(files.values())
        }
        for name, param in model.state_dict().items():
            state[name] = _read_part(handles, files, model_dir, name, param, layout, config, dtype)
    model.load_state_dict(state, strict=True, assign=True)
    return model.to(device=device).eval()


def _read_part(
    handles: dict[Path, Any],
    files: dict[str, Path],
    model_dir: Path,
    name: str,
    param: Tensor,
    layout: ShardLayout,
    config: ModelConfig,
    dtype: torch.dtype,
) -> Tensor:
    source = name
    if name == "lm_head.weight" and config.tie_word_embeddings:
        source = "model.embed_tokens.weight"
    if name.endswith("o_proj.bias") and layout.rank != 0:
        # Row-parallel bias: added once, by rank 0, so the all-reduce doesn't count it N times.
        return torch.zeros(param.shape, dtype=dtype)
    if source not in files:
        raise ValueError(f"{model_dir}: missing weight {source}")
    part = None if name == "lm_head.weight" else _rows_or_cols(source, layout, config.head_dim)
    piece = handles[files[source]].get_slice(source)
    if part is None:
        tensor = piece[:]
    elif part[0] == 0:
        tensor = piece[part[1].start : part[1].stop]
    else:
        tensor = piece[:, part[1].start : part[1].stop]
    if tuple(tensor.shape) != tuple(param.shape):
        got, want = tuple(tensor.shape), tuple(param.shape)
        raise ValueError(f"{model_dir}: {source} slice is {got}, this rank expects {want}")
    out: Tensor = tensor.to(dtype)
    return out
