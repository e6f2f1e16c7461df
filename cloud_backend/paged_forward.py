"""One forward pass of the Llama decoder for many sequences over paged keys and values.

Every row runs its new tokens after the tokens its block table already holds (a decode step is one new
token per row; a prefill is several). Per layer, the rows' cached keys and values are gathered from the
block storage into one right-padded batch, the decoder layer attends over them plus the new tokens under
a mask that hides the padding, and the new tokens' keys and values are scattered into their slots.
Padding reads block 0, which stays zero, so masked scores are finite and the padded rows' results are
exactly what each row gets alone (up to the order of floating-point sums).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from cloud_backend.llama import LlamaForCausalLM, attention_bias, rotary_cos_sin


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


@torch.inference_mode()
def forward_rows(model: LlamaForCausalLM, storage: KVBlockStorage, rows: Sequence[Row]) -> Tensor:
    """Logits of each row's last new token, ``[len(rows), vocab]``; new keys and values are stored."""
    device, bs = storage.device, storage.block_size
    n = len(rows)
    width = max(len(r.tokens) for r in rows)
    # Rounded up to whole blocks: CPU kernels are set up per shape, so fewer shapes run faster.
    past = -(-max(r.start for r in rows) // bs) * bs
    ids = torch.tensor([[*r.tokens, *[0] * (width - len(r.tokens))] for r in rows], device=device)
    positions = torch.tensor([list(range(r.start, r.start + width)) for r in rows], device=device)
    lengths = torch.tensor([len(r.tokens) for r in rows], device=device)
    starts = torch.tensor([r.start for r in rows], device=device)
    # Gather index [rows, past]: the slot of each cached position; padding points at block 0.
    read: Tensor | None = None
    if past:
        span = past // bs
        tables = torch.tensor(
            [[*r.table[: -(-r.start // bs)], *[0] * (span - -(-r.start // bs))] for r in rows], device=device
        )
        offsets = torch.arange(past, device=device)
        slots = tables[:, offsets // bs] * bs + offsets % bs
        read = torch.where(offsets[None] < starts[:, None], slots, 0).reshape(-1)
    mask = torch.cat(
        (
            torch.arange(past, device=device)[None] < starts[:, None],
            torch.arange(width, device=device)[None] < lengths[:, None],
        ),
        dim=1,
    )
    # Where the new keys and values go: (row * width + i) of the layer's output -> slot.
    sources: list[int] = []
    targets: list[int] = []
    for i, r in enumerate(rows):
        if r.write:
            sources.extend(range(i * width, i * width + len(r.tokens)))
            targets.extend(_slots(r.table, range(r.start, r.start + len(r.tokens)), bs))
    src = torch.tensor(sources, dtype=torch.long, device=device)
    dst = torch.tensor(targets, dtype=torch.long, device=device)

    cfg = model.config
    kv_heads, head_dim = cfg.num_key_value_heads, cfg.head_dim
    x = model.model.embed_tokens(ids)
    cos, sin = rotary_cos_sin(positions, head_dim, cfg.rope_theta, x.dtype)
    bias = attention_bias(n, width, past, mask, device)
    for layer_index, layer in enumerate(model.model.layers):
        cache = storage.kv[layer_index]
        cached = None
        if read is not None:
            keys = cache[0].index_select(0, read).view(n, past, kv_heads, head_dim).transpose(1, 2)
            values = cache[1].index_select(0, read).view(n, past, kv_heads, head_dim).transpose(1, 2)
            cached = (keys, values)
        x, (k, v) = layer(x, cos, sin, bias, cached)
        if targets:
            new_k = k[:, :, past:].transpose(1, 2).reshape(n * width, kv_heads, head_dim)
            new_v = v[:, :, past:].transpose(1, 2).reshape(n * width, kv_heads, head_dim)
            cache[0].index_copy_(0, dst, new_k.index_select(0, src))
            cache[1].index_copy_(0, dst, new_v.index_select(0, src))
    last = x[torch.arange(n, device=device), lengths - 1]
    logits: Tensor = model.lm_head(model.model.norm(last))
    return logits
