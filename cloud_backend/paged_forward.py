"""One forward pass of the Llama decoder for many sequences over paged keys and values.

Every row runs its new tokens after the tokens its block table already holds (a decode step is one new
token per row; a prefill is several). Per layer, the new tokens' keys and values are scattered into their
slots, then each row's keys and values up to its last new token are gathered from the block storage into
one right-padded batch and a single attention call covers all rows under a causal mask. Padding reads
block 0, which stays zero, so padded rows give exactly what each row gets alone (up to the order of
floating-point sums). The decoder's own modules (projections, norms, MLP) do the rest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor

from cloud_backend.llama import LlamaDecoderLayer, LlamaForCausalLM, rotary_cos_sin


@dataclass(frozen=True, slots=True)
class Row:
    """Run ``tokens`` at positions ``start``, ``start + 1``... after ``start`` tokens held by ``table``."""

    table: Sequence[int]  # block ids covering at least ``start + len(tokens)`` positions when writing
    start: int
    tokens: Sequence[int]
    write: bool = True  # store the new keys and values (False: they are already there)


class KVBlockStorage:
    """Keys and values of every layer in ``num_blocks`` blocks of ``block_size`` slots on one device.

    One tensor ``[layers, 2, num_blocks * block_size, kv_heads, head_dim]``: a token's slot is
    ``block * block_size + offset``, the same in every layer.
    """

    def __init__(self, model: LlamaForCausalLM, num_blocks: int, block_size: int) -> None:
        cfg = model.config
        param = next(model.parameters())
        self.block_size = block_size
        self.device = param.device
        shape = (cfg.num_hidden_layers, 2, num_blocks * block_size, cfg.num_key_value_heads, cfg.head_dim)
        with torch.inference_mode():
            # Uninitialised: only written slots are ever read, except block 0, which pads and stays zero.
            self.kv = torch.empty(shape, dtype=param.dtype, device=self.device)
            self.kv[:, :, :block_size].zero_()

    @property
    def nbytes(self) -> int:
        return self.kv.numel() * self.kv.element_size()

    def copy_slots(self, src: int, dst: int, slots: int) -> None:
        """Copy the first ``slots`` slots of block ``src`` into block ``dst`` (copy-on-write)."""
        bs = self.block_size
        with torch.inference_mode():
            self.kv[:, :, dst * bs : dst * bs + slots] = self.kv[:, :, src * bs : src * bs + slots]


def _slots(table: Sequence[int], positions: range, block_size: int) -> list[int]:
    return [table[p // block_size] * block_size + p % block_size for p in positions]


def _rotate(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotary embedding of ``x`` ``[batch, seq, heads, head_dim]``; cos/sin are ``[batch, seq, head_dim]``."""
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos[:, :, None] + rotated * sin[:, :, None]


@torch.inference_mode()
def forward_rows(model: LlamaForCausalLM, storage: KVBlockStorage, rows: Sequence[Row]) -> Tensor:
    """Logits of each row's last new token, ``[len(rows), vocab]``; new keys and values are stored.

    Per layer the new keys and values are written to their slots first, then every row's keys and values
    up to its last new token are gathered, so one attention call covers the cached and the new tokens.
    """
    device, bs = storage.device, storage.block_size
    n = len(rows)
    width = max(len(r.tokens) for r in rows)
    ends = [r.start + len(r.tokens) for r in rows]
    # Rounded up to whole blocks: CPU kernels are set up per shape, so fewer shapes run faster.
    span = -(-max(ends) // bs)
    ids = torch.tensor([[*r.tokens, *[0] * (width - len(r.tokens))] for r in rows], device=device)
    positions = torch.tensor([list(range(r.start, r.start + width)) for r in rows], device=device)
    lengths = torch.tensor([len(r.tokens) for r in rows], device=device)
    # Gather index [rows, span * bs]: the slot of each position up to the row's end; past it, block 0.
    tables = torch.tensor(
        [[*r.table[: -(-e // bs)], *[0] * (span - -(-e // bs))] for r, e in zip(rows, ends, strict=True)],
        device=device,
    )
    offsets = torch.arange(span * bs, device=device)
    slots = tables[:, offsets // bs] * bs + offsets % bs
    ends_t = torch.tensor(ends, device=device)
    read = torch.where(offsets[None] < ends_t[:, None], slots, 0).reshape(-1)
    # Query j of a row sits at position start + j and sees every key up to there (causal).
    allowed = (offsets[None, None, :] <= positions[:, :, None])[:, None]
    # Where the new keys and values go: (row * width + j) of the layer's output -> slot.
    sources: list[int] = []
    targets: list[int] = []
    for i, r in enumerate(rows):
        if r.write:
            sources.extend(range(i * width, i * width + len(r.tokens)))
            targets.extend(_slots(r.table, range(r.start, r.start + len(r.tokens)), bs))
    every_row = len(sources) == n * width
    src = torch.tensor(sources, dtype=torch.long, device=device)
    dst = torch.tensor(targets, dtype=torch.long, device=device)

    cfg = model.config
    kv_heads, head_dim = cfg.num_key_value_heads, cfg.head_dim
    x = model.model.embed_tokens(ids)
    cos, sin = rotary_cos_sin(positions, head_dim, cfg.rope_theta, x.dtype)
    layers = cast("list[LlamaDecoderLayer]", list(model.model.layers))
    for layer_index, layer in enumerate(layers):
        attn = layer.self_attn
        cache = storage.kv[layer_index]
        h = layer.input_layernorm(x)
        q = _rotate(attn.q_proj(h).view(n, width, attn.num_heads, head_dim), cos, sin)
        k = _rotate(attn.k_proj(h).view(n, width, attn.num_kv_heads, head_dim), cos, sin)
        v = attn.v_proj(h).view(n, width, attn.num_kv_heads, head_dim)
        if targets:
            # Keys and values move together: one scatter and one gather per layer, not two.
            new_kv = torch.stack((k, v)).view(2, n * width, kv_heads, head_dim)
            if not every_row:
                new_kv = new_kv.index_select(1, src)
            cache.index_copy_(1, dst, new_kv)
        kv = cache.index_select(1, read).view(2, n, span * bs, kv_heads, head_dim).transpose(2, 3)
        keys, values = kv[0], kv[1]
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), keys, values, attn_mask=allowed, enable_gqa=attn.num_heads != attn.num_kv_heads
        )
        out = out.transpose(1, 2).reshape(n, width, attn.num_heads * head_dim)
        x = x + attn.all_reduce(attn.o_proj(out))
        x = x + layer.mlp(layer.post_attention_layernorm(x))
    last = x[torch.arange(n, device=device), lengths - 1]
    logits: Tensor = model.lm_head(model.model.norm(last))
    return logits
