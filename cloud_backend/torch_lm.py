"""``switchyard.lm.LanguageModel`` on the torch Llama decoder: CUDA when present, else fp32 on CPU."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cloud_backend.llama import LayerKV, LlamaForCausalLM, load_llama
from switchyard.lm import KVCache, Logits, ModelConfig


@dataclass(frozen=True, slots=True)
class TorchKVCache:
    """One sequence's keys and values per layer, each ``[1, n_kv_heads, length, head_dim]``."""

    layers: tuple[LayerKV, ...]

    @property
    def length(self) -> int:
        return 0 if not self.layers else int(self.layers[0][0].shape[2])


class TorchLanguageModel:
    """Runs one ``LlamaForCausalLM``; synchronous and not thread-safe, as the contract says."""

    def __init__(self, model: LlamaForCausalLM) -> None:
        self._model = model.eval()
        self._device = next(model.parameters()).device

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
    def kv_bytes_per_token(self) -> int:
        cfg = self.config
        itemsize = next(self._model.parameters()).element_size()
        return 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * itemsize

    def trim(self, cache: KVCache, length: int) -> KVCache:
        c = _as_torch_cache(cache)
        if c is None or not 0 < length <= c.length:
            raise ValueError(f"cannot trim a cache of {0 if c is None else c.length} tokens to {length}")
        return TorchKVCache(tuple((k[:, :, :length], v[:, :, :length]) for k, v in c.layers))

    def detach(self, cache: KVCache) -> KVCache:
        c = _as_torch_cache(cache)
        if c is None:
            raise ValueError("no cache to detach")
        # Per-sequence tensors already; a trimmed view is copied so it does not pin the longer one.
        return TorchKVCache(tuple((k.contiguous(), v.contiguous()) for k, v in c.layers))

    def prefill(self, token_ids: list[int], cache: KVCache | None = None) -> tuple[Logits, KVCache]:
        if not token_ids:
            raise ValueError("prefill needs at least one token")
        logits, extended = self._run(token_ids, _as_torch_cache(cache))
        return logits[-1], extended

    def decode(self, token_ids: list[int], caches: list[KVCache]) -> tuple[Logits, list[KVCache]]:
        if len(token_ids) != len(caches):
            raise ValueError(f"{len(token_ids)} tokens for {len(caches)} caches")
        rows: list[Logits] = []
        extended: list[KVCache] = []
        # One sequence at a time for now; a padded batch is the next step.
        for token, cache in zip(token_ids, caches, strict=True):
            logits, new_cache = self._run([token], _as_torch_cache(cache))
            rows.append(logits[-1])
            extended.append(new_cache)
        if not rows:
            return np.zeros((0, self.config.vocab_size), dtype=np.float32), []
        return np.stack(rows), extended

    @torch.inference_mode()
    def _run(self, token_ids: list[int], cache: TorchKVCache | None) -> tuple[Logits, TorchKVCache]:
        past_len = 0 if cache is None else cache.length
        if past_len + len(token_ids) > self.context_window:
            raise ValueError(
                f"{past_len} cached + {len(token_ids)} new tokens exceed the context window "
                f"of {self.context_window}"
            )
        ids = torch.tensor([token_ids], dtype=torch.long, device=self._device)
        positions = torch.arange(past_len, past_len + len(token_ids), device=self._device)[None]
        past = None if cache is None or not cache.layers else list(cache.layers)
        logits, presents = self._model(ids, positions, past_key_values=past)
        out: Logits = logits[0].float().cpu().numpy()
        return out, TorchKVCache(tuple(presents))


def _as_torch_cache(cache: KVCache | None) -> TorchKVCache | None:
    if cache is None or isinstance(cache, TorchKVCache):
        return cache
    raise TypeError(f"expected a TorchKVCache, got {type(cache).__name__}")


def load(model_dir: Path) -> TorchLanguageModel:
    """Load a Hugging Face Llama folder: bf16 (else fp16) on CUDA when available, fp32 on CPU."""
    if torch.cuda.is_available():
        half = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        device, dtype = torch.device("cuda"), half
    else:
        device, dtype = torch.device("cpu"), torch.float32
    return TorchLanguageModel(load_llama(model_dir, device=device, dtype=dtype))
