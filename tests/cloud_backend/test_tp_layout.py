"""The Megatron split of heads, kv heads, MLP units and vocabulary over tensor-parallel ranks."""

from __future__ import annotations

import dataclasses

import pytest

from cloud_backend.tp_layout import ShardLayout
from switchyard.lm import ModelConfig

CONFIG = ModelConfig(
    vocab_size=98,
    hidden_size=64,
    num_hidden_layers=1,
    num_attention_heads=8,
    num_key_value_heads=2,
    intermediate_size=50,
    max_position_embeddings=32,
)


@pytest.mark.parametrize(
    ("world", "rank", "heads", "kv_heads", "units", "vocab"),
    [
        (1, 0, range(0, 8), range(0, 2), range(0, 50), range(0, 98)),
        (2, 0, range(0, 4), range(0, 1), range(0, 25), range(0, 49)),
        (2, 1, range(4, 8), range(1, 2), range(25, 50), range(49, 98)),
        # More ranks than kv heads: each kv head is replicated on the ranks whose queries read it.
        (4, 1, range(2, 4), range(0, 1), range(12, 25), range(24, 49)),
        (4, 2, range(4, 6), range(1, 2), range(25, 37), range(49, 73)),
        (8, 3, range(3, 4), range(0, 1), range(18, 25), range(36, 49)),
        (8, 4, range(4, 5), range(1, 2), range(25, 31), range(49, 61)),
    ],
)
def test_split(world: int, rank: int, heads: range, kv_heads: range, units: range, vocab: range) -> None:
    layout = ShardLayout.plan(CONFIG, rank, world)
    assert (layout.heads, layout.kv_heads, layout.units, layout.vocab) == (heads, kv_heads, units, vocab)


@pytest.mark.parametrize("world", [1, 2, 4, 8])
def test_every_query_head_reads_its_own_kv_head(world: int) -> None:
    group = CONFIG.num_attention_heads // CONFIG.num_key_value_heads
    for rank in range(world):
        layout = ShardLayout.plan(CONFIG, rank, world)
        local_group = len(layout.heads) // len(layout.kv_heads)
        for i, head in enumerate(layout.heads):
            assert layout.kv_heads[i // local_group] == head // group


@pytest.mark.parametrize(
    ("heads", "kv", "world", "message"),
    [
        (8, 2, 3, "does not divide num_attention_heads=8"),
        (12, 6, 4, "does not divide num_key_value_heads=6"),
        (12, 4, 6, "not a multiple of it"),
    ],
)
def test_impossible_splits_name_the_sizes(heads: int, kv: int, world: int, message: str) -> None:
    config = dataclasses.replace(CONFIG, num_attention_heads=heads, num_key_value_heads=kv)
    with pytest.raises(ValueError, match=message):
        ShardLayout.plan(config, 0, world)
