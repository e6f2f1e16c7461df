"""The contract between the generic generation engine and a concrete model runtime.

A runtime (onnxruntime on the edge, torch on the cloud) only knows how to turn token ids into
next-token logits with a KV cache. Everything above that (chat template, tokenisation, sampling,
stop strings, streaming, scheduling, cancellation) is shared and lives in ``switchyard.engine``.

Runtimes are synchronous and not thread-safe: the engine calls them from its one worker thread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

Logits = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """The fields of a Hugging Face ``config.json`` that Switchyard's runtimes use."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    intermediate_size: int
    max_position_embeddings: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    tie_word_embeddings: bool = False
    name: str = "model"

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> ModelConfig:
        eos = raw.get("eos_token_id")
        if isinstance(eos, list):
            eos = eos[0] if eos else None
        return cls(
            vocab_size=int(raw["vocab_size"]),
            hidden_size=int(raw["hidden_size"]),
            num_hidden_layers=int(raw["num_hidden_layers"]),
            num_attention_heads=int(raw["num_attention_heads"]),
            num_key_value_heads=int(raw.get("num_key_value_heads", raw["num_attention_heads"])),
            intermediate_size=int(raw["intermediate_size"]),
            max_position_embeddings=int(raw.get("max_position_embeddings", 2048)),
            rms_norm_eps=float(raw.get("rms_norm_eps", 1e-5)),
            rope_theta=float(raw.get("rope_theta", 10000.0)),
            bos_token_id=raw.get("bos_token_id"),
            eos_token_id=eos,
            tie_word_embeddings=bool(raw.get("tie_word_embeddings", False)),
            name=str(raw.get("_name_or_path") or raw.get("switchyard_name") or "model"),
        )


class KVCache(Protocol):
    """Opaque per-sequence cache of keys and values; ``length`` tokens are in it."""

    @property
    def length(self) -> int: ...


class LanguageModel(Protocol):
    """A decoder-only model with a KV cache, driven one sequence at a time."""

    @property
    def config(self) -> ModelConfig: ...

    @property
    def context_window(self) -> int: ...

    def prefill(self, token_ids: list[int], cache: KVCache | None = None) -> tuple[Logits, KVCache]:
        """Run ``token_ids`` after what ``cache`` holds (a fresh cache when ``None``).

        Returns the logits of the last position, shape ``(vocab,)``, and the extended cache.
        """
        ...

    def decode(self, token_ids: list[int], caches: list[KVCache]) -> tuple[Logits, list[KVCache]]:
        """One decode step for several sequences: ``token_ids[i]`` follows ``caches[i]``.

        Returns logits of shape ``(len(token_ids), vocab)`` and the extended caches.
        """
        ...


@runtime_checkable
class CacheOps(Protocol):
    """Optional: what session KV reuse and the KV memory budget need from a runtime.

    The engine checks ``isinstance(lm, CacheOps)`` and works without these (no prefix trimming,
    KV size estimated from the config) when a runtime lacks them. Caches are values: an operation
    returns a new cache and never changes the one it was given.
    """

    @property
    def kv_bytes_per_token(self) -> int:
        """Bytes one token's keys and values take, over all layers."""
        ...

    def trim(self, cache: KVCache, length: int) -> KVCache:
        """The first ``length`` tokens of ``cache`` (``0 < length <= cache.length``)."""
        ...

    def detach(self, cache: KVCache) -> KVCache:
        """A compact copy of ``cache`` that holds no storage shared with a running batch, for keeping."""
        ...


@runtime_checkable
class BatchPrefill(Protocol):
    """Optional: prefill several sequences in one model call."""

    def prefill_batch(
        self, token_ids: list[list[int]], caches: list[KVCache | None]
    ) -> tuple[Logits, list[KVCache]]:
        """``prefill`` for each row: ``token_ids[i]`` (non-empty) after ``caches[i]``.

        Returns the logits of each row's last position, shape ``(rows, vocab)``, and the caches.
        """
        ...


@runtime_checkable
class KVBudget(Protocol):
    """Optional: a runtime whose KV memory is a fixed pool, so the engine can queue instead of failing."""

    @property
    def kv_capacity_bytes(self) -> int:
        """Bytes of keys and values the pool holds in all."""
        ...

    def kv_reservation_bytes(self, prompt_tokens: int, max_new_tokens: int) -> int:
        """The most a new sequence can take of the pool (its tokens in whole blocks, plus one to copy)."""
        ...

    def can_admit(self, token_ids: Sequence[int], max_new_tokens: int) -> bool:
        """Whether free and reusable blocks now cover the sequence's worst case, cached prefix discounted."""
        ...
