"""``switchyard.lm.LanguageModel`` on the torch Llama decoder: CUDA when present, else fp32 on CPU.

Keys and values are paged (``cloud_backend.paged_kv``): blocks of ``block_size`` tokens from a fixed
budget, shared between sequences whose prompts start alike. Every call runs all its sequences in one
forward pass (``cloud_backend.paged_forward``): a decode step for the whole running batch, or several
prompts at once.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cloud_backend.llama import LlamaForCausalLM, load_llama
from cloud_backend.paged_forward import KVBlockStorage, Row, forward_rows
from cloud_backend.paged_kv import BlockPool, DetachedKVCache, KVCacheFull, PagedKVCache, RowPlan
from switchyard.lm import KVBudget, KVCache, Logits, ModelConfig

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "DEFAULT_KV_BUDGET_BYTES",
    "KVBudget",
    "KVCacheFull",
    "PrefillStats",
    "TorchLanguageModel",
    "default_cpu_threads",
    "load",
]

DEFAULT_BLOCK_SIZE = 16
DEFAULT_KV_BUDGET_BYTES = 256 * 1024 * 1024
SMALL_MODEL_PARAMETERS = 20_000_000
# Beyond this many full context windows a larger budget buys nothing for one node's running batch.
MAX_CONTEXTS_IN_BUDGET = 64


@dataclass(frozen=True, slots=True)
class PrefillStats:
    """Prompt tokens asked for in ``prefill`` calls, and how many tokens the model computed for them.

    ``computed`` is lower where cached blocks were reused; it can be higher after a detached cache's
    blocks were evicted, since those tokens are computed again.
    """

    requested: int = 0
    computed: int = 0

    @property
    def reused(self) -> int:
        return self.requested - self.computed


class TorchLanguageModel:
    """Runs one ``LlamaForCausalLM``; synchronous and not thread-safe, as the contract says."""

    def __init__(
        self,
        model: LlamaForCausalLM,
        *,
        kv_budget_bytes: int = DEFAULT_KV_BUDGET_BYTES,
        block_size: int = DEFAULT_BLOCK_SIZE,
    ) -> None:
        self._model = model.eval()
        self._device = next(model.parameters()).device
        block_bytes = block_size * self.kv_bytes_per_token
        # Each full context window in whole blocks, plus one for a copy-on-write.
        most = MAX_CONTEXTS_IN_BUDGET * (-(-self.context_window // block_size) + 1)
        blocks = min(kv_budget_bytes // block_bytes, most)
        if blocks < 1:
            raise ValueError(f"kv_budget_bytes={kv_budget_bytes} holds no block of {block_bytes} bytes")
        self._pool = BlockPool(blocks + 1, block_size)  # block 0 pads
        self._storage = KVBlockStorage(model, blocks + 1, block_size)
        self._stats = PrefillStats()

    @property
    def config(self) -> ModelConfig:
        return self._model.config

    @property
    def context_window(self) -> int:
        return self._model.config.max_position_embeddings

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def block_size(self) -> int:
        return self._pool.block_size

    @property
    def prefill_stats(self) -> PrefillStats:
        return self._stats

    @property
    def pool(self) -> BlockPool:
        """The block allocator, for inspection (free, held and cached blocks)."""
        return self._pool

    # --- KV budget ---------------------------------------------------------------------

    @property
    def kv_bytes_per_token(self) -> int:
        cfg = self.config
        itemsize = next(self._model.parameters()).element_size()
        return 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * itemsize

    @property
    def kv_capacity_bytes(self) -> int:
        return self._pool.usable_blocks * self.block_size * self.kv_bytes_per_token

    def kv_reservation_bytes(self, prompt_tokens: int, max_new_tokens: int) -> int:
        blocks = self._pool.blocks_for(prompt_tokens + max_new_tokens) + 1
        return blocks * self.block_size * self.kv_bytes_per_token

    def can_admit(self, token_ids: Sequence[int], max_new_tokens: int) -> bool:
        shared, unheld = self._pool.prefix_blocks(token_ids)
        need = self._pool.blocks_for(len(token_ids) + max_new_tokens) + 1 - shared
        return need <= self._pool.free_blocks - unheld

    # --- cache operations ----------------------------------------------------------------

    def trim(self, cache: KVCache, length: int) -> KVCache:
        if not 0 < length <= cache.length:
            raise ValueError(f"cannot trim a cache of {cache.length} tokens to {length}")
        if isinstance(cache, DetachedKVCache):
            return DetachedKVCache(cache.tokens[:length])
        return self._pool.trim(_as_paged(cache), length)

    def detach(self, cache: KVCache) -> KVCache:
        # Kept as token ids: its full blocks stay findable in the prefix index (until evicted) and
        # it pins no block, so kept sessions never keep new requests out of the pool.
        if isinstance(cache, DetachedKVCache):
            return cache
        return DetachedKVCache(self._pool.tokens_of(_as_paged(cache)))

    # --- LanguageModel ---------------------------------------------------------------------

    def prefill(self, token_ids: list[int], cache: KVCache | None = None) -> tuple[Logits, KVCache]:
        logits, caches = self.prefill_batch([token_ids], [cache])
        return logits[0], caches[0]

    def prefill_batch(
        self, token_ids: list[list[int]], caches: list[KVCache | None]
    ) -> tuple[Logits, list[KVCache]]:
        if any(not row for row in token_ids):
            raise ValueError("prefill needs at least one token per row")
        logits, out, computed = self._run(token_ids, caches)
        requested = sum(len(row) for row in token_ids)
        self._stats = PrefillStats(self._stats.requested + requested, self._stats.computed + computed)
        return logits, out

    def decode(self, token_ids: list[int], caches: list[KVCache]) -> tuple[Logits, list[KVCache]]:
        if not token_ids:
            return np.zeros((0, self.config.vocab_size), dtype=np.float32), []
        logits, out, _ = self._run([[t] for t in token_ids], list(caches))
        return logits, out

    def _run(
        self, token_ids: list[list[int]], caches: Sequence[KVCache | None]
    ) -> tuple[Logits, list[KVCache], int]:
        """One forward pass for all rows: logits of each row's last token, the caches, tokens computed."""
        if len(token_ids) != len(caches):
            raise ValueError(f"{len(token_ids)} rows for {len(caches)} caches")
        for row, cache in zip(token_ids, caches, strict=True):
            past = 0 if cache is None else cache.length
            if past + len(row) > self.context_window:
                limit = self.context_window
                raise ValueError(f"{past} cached + {len(row)} new tokens exceed the context window ({limit})")
        plans: list[RowPlan] = []
        try:
            for row, cache in zip(token_ids, caches, strict=True):
                plans.append(self._pool.plan(_as_cache(cache), row))
            for plan in plans:
                for src, dst, slots in plan.copies:
                    self._storage.copy_slots(src, dst, slots)
            rows = [Row(p.lease.blocks, p.start, p.tokens, p.write) for p in plans]
            logits = forward_rows(self._model, self._storage, rows)
        except BaseException:
            for plan in plans:
                self._pool.abandon(plan)
            raise
        for plan in plans:
            self._pool.seal(plan)
        out: Logits = logits.float().cpu().numpy()
        extended: list[KVCache] = [PagedKVCache(p.lease, p.length) for p in plans]
        return out, extended, sum(len(p.tokens) for p in plans)


def default_cpu_threads(config: ModelConfig) -> int:
    """Intra-op threads for a model on the CPU: all cores but one, and one for a very small model.

    The engine's worker and the event loop that streams tokens need a core beside torch's threads, or
    every parallel kernel waits on a descheduled thread; a very small model (the demo's few million
    parameters) gains nothing from a second thread anyway.
    """
    per_layer = 4 * config.hidden_size**2 + 3 * config.hidden_size * config.intermediate_size
    parameters = 2 * config.vocab_size * config.hidden_size + config.num_hidden_layers * per_layer
    if parameters < SMALL_MODEL_PARAMETERS:
        return 1
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, available - 1)


def _as_cache(cache: KVCache | None) -> PagedKVCache | DetachedKVCache | None:
    if cache is None or isinstance(cache, PagedKVCache | DetachedKVCache):
        return cache
    raise TypeError(f"expected a PagedKVCache or DetachedKVCache, got {type(cache).__name__}")


def _as_paged(cache: KVCache) -> PagedKVCache:
    if isinstance(cache, PagedKVCache):
        return cache
    raise TypeError(f"expected a PagedKVCache, got {type(cache).__name__}")


def load(
    model_dir: Path,
    *,
    kv_budget_bytes: int = DEFAULT_KV_BUDGET_BYTES,
    block_size: int = DEFAULT_BLOCK_SIZE,
    threads: int | None = None,
) -> TorchLanguageModel:
    """Load a Hugging Face Llama folder: bf16 (else fp16) on CUDA when available, fp32 on CPU.

    On the CPU this sets torch's intra-op threads for the process: ``threads``, else a choice that
    leaves a core to the event loop streaming the tokens out (see ``default_cpu_threads``).
    """
    if torch.cuda.is_available():
        half = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        device, dtype = torch.device("cuda"), half
    else:
        device, dtype = torch.device("cpu"), torch.float32
    model = load_llama(model_dir, device=device, dtype=dtype)
    if device.type == "cpu":
        torch.set_num_threads(threads or default_cpu_threads(model.config))
    return TorchLanguageModel(model, kv_budget_bytes=kv_budget_bytes, block_size=block_size)
