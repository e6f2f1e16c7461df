"""Which slice of a Llama model one tensor-parallel rank holds (Megatron-style split).

Attention splits by heads: each rank gets ``num_attention_heads / world`` query heads and the kv heads
those queries read. With ``world <= num_key_value_heads`` the kv heads split evenly too; with more
ranks than kv heads each kv head is replicated on the ``world / num_key_value_heads`` ranks whose
query heads share it. The MLP splits by hidden units and the embedding by vocabulary rows; neither
needs an even split. Pure arithmetic, no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from switchyard.lm import ModelConfig


def _part(total: int, world: int, rank: int) -> range:
    return range(rank * total // world, (rank + 1) * total // world)


@dataclass(frozen=True, slots=True)
class ShardLayout:
    rank: int
    world: int
    heads: range  # query heads held by this rank
    kv_heads: range  # key/value heads held by this rank
    units: range  # MLP hidden units (rows of gate/up, columns of down)
    vocab: range  # embedding rows

    @classmethod
    def plan(cls, config: ModelConfig, rank: int, world: int) -> ShardLayout:
        """This rank's slice; ``ValueError`` naming the sizes when ``world`` can't split the heads."""
        if world < 1 or not 0 <= rank < world:
            raise ValueError(f"rank {rank} of a world of {world}")
        heads, kv = config.num_attention_heads, config.num_key_value_heads
        if heads % world:
            raise ValueError(f"--tp {world} does not divide num_attention_heads={heads}")
        if world <= kv:
            if kv % world:
                raise ValueError(f"--tp {world} does not divide num_key_value_heads={kv}")
            kv_heads = _part(kv, world, rank)
        else:
            if world % kv:
                raise ValueError(
                    f"--tp {world} is more than num_key_value_heads={kv} but not a multiple of it"
                )
            # The ``world / kv`` ranks of one group all read the same replicated kv head.
            shared = rank // (world // kv)
            kv_heads = range(shared, shared + 1)
        if config.intermediate_size < world or config.vocab_size < world:
            raise ValueError(f"--tp {world} is more than the model's MLP units or vocabulary")
        return cls(
            rank=rank,
            world=world,
            heads=_part(heads, world, rank),
            kv_heads=kv_heads,
            units=_part(config.intermediate_size, world, rank),
            vocab=_part(config.vocab_size, world, rank),
        )
