"""``switchyard.lm.LanguageModel`` on onnxruntime, for a decoder exported in Optimum's layout.

The graph takes ``input_ids``, ``attention_mask``, optionally ``position_ids``, and
``past_key_values.{i}.key|value``; it returns ``logits`` and ``present.{i}.key|value``. Input names,
the presence of ``position_ids`` and the dtype of the past (fp32 or fp16) are read from the graph.
The KV cache stays in numpy, one array pair per layer and sequence.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from switchyard.lm import KVCache, Logits, ModelConfig

_NP_DTYPES: dict[str, type[np.generic]] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}
_PAST_NAME = re.compile(r"past_key_values\.(\d+)\.(key|value)")


@dataclass(frozen=True, slots=True)
class OnnxKVCache:
    """One sequence's ``(key, value)`` per layer, each ``[1, n_kv_heads, length, head_dim]``."""

    layers: tuple[tuple[npt.NDArray[Any], npt.NDArray[Any]], ...]

    @property
    def length(self) -> int:
        return int(self.layers[0][0].shape[2])


@dataclass(frozen=True, slots=True)
class _Signature:
    """What the graph expects, read once from the session."""

    num_layers: int
    ids_dtype: type[np.generic]
    mask_dtype: type[np.generic]
    position_dtype: type[np.generic] | None  # None: the graph computes positions itself
    past_dtype: type[np.generic]
    past_names: tuple[tuple[str, str], ...]
    present_names: tuple[str, ...]


def _dtype(node: Any, path: Path) -> type[np.generic]:
    try:
        return _NP_DTYPES[node.type]
    except KeyError:
        raise ValueError(f"{path}: input {node.name} has unsupported type {node.type}") from None


def _read_signature(session: ort.InferenceSession, path: Path) -> _Signature:
    inputs = {node.name: node for node in session.get_inputs()}
    for required in ("input_ids", "attention_mask"):
        if required not in inputs:
            raise ValueError(f"{path}: the graph has no {required!r} input")
    layers = sorted({int(m.group(1)) for name in inputs if (m := _PAST_NAME.fullmatch(name))})
    if not layers or layers != list(range(len(layers))):
        raise ValueError(f"{path}: expected past_key_values.0..N inputs, found layers {layers}")
    past_names = tuple((f"past_key_values.{i}.key", f"past_key_values.{i}.value") for i in layers)
    present_names = tuple(name for i in layers for name in (f"present.{i}.key", f"present.{i}.value"))
    outputs = {node.name for node in session.get_outputs()}
    missing = [name for name in ("logits", *present_names) if name not in outputs]
    if missing:
        raise ValueError(f"{path}: the graph lacks outputs {missing}")
    position = inputs.get("position_ids")
    return _Signature(
        num_layers=len(layers),
        ids_dtype=_dtype(inputs["input_ids"], path),
        mask_dtype=_dtype(inputs["attention_mask"], path),
        position_dtype=None if position is None else _dtype(position, path),
        past_dtype=_dtype(inputs[past_names[0][0]], path),
        past_names=past_names,
        present_names=present_names,
    )


class OnnxLanguageModel:
    """Runs one ONNX decoder session; synchronous and not thread-safe, as the contract says."""

    def __init__(self, session: ort.InferenceSession, config: ModelConfig, path: Path) -> None:
        self._session = session
        self._config = config
        self._sig = _read_signature(session, path)
        if self._sig.num_layers != config.num_hidden_layers:
            raise ValueError(
                f"{path}: graph has {self._sig.num_layers} layers, config says {config.num_hidden_layers}"
            )
        self._empty = np.zeros(
            (1, config.num_key_value_heads, 0, config.head_dim), dtype=self._sig.past_dtype
        )
        self._output_names = ["logits", *self._sig.present_names]

    @property
    def config(self) -> ModelConfig:
        return self._config

    @property
    def context_window(self) -> int:
        return self._config.max_position_embeddings

    @property
    def providers(self) -> list[str]:
        return list(self._session.get_providers())

    def prefill(self, token_ids: list[int], cache: KVCache | None = None) -> tuple[Logits, KVCache]:
        if not token_ids:
            raise ValueError("prefill needs at least one token")
        return self._run(token_ids, _as_onnx_cache(cache))

    def decode(self, token_ids: list[int], caches: list[KVCache]) -> tuple[Logits, list[KVCache]]:
        if len(token_ids) != len(caches):
            raise ValueError(f"{len(token_ids)} tokens for {len(caches)} caches")
        rows: list[Logits] = []
        extended: list[KVCache] = []
        # One sequence at a time for now; a padded batch is the next step.
        for token, cache in zip(token_ids, caches, strict=True):
            logits, new_cache = self._run([token], _as_onnx_cache(cache))
            rows.append(logits)
            extended.append(new_cache)
        if not rows:
            return np.zeros((0, self._config.vocab_size), dtype=np.float32), []
        return np.stack(rows), extended

    def _run(self, token_ids: list[int], cache: OnnxKVCache | None) -> tuple[Logits, OnnxKVCache]:
        sig = self._sig
        past_len = 0 if cache is None else cache.length
        total = past_len + len(token_ids)
        if total > self.context_window:
            raise ValueError(
                f"{past_len} cached + {len(token_ids)} new tokens exceed the context window "
                f"of {self.context_window}"
            )
        feed: dict[str, npt.NDArray[Any]] = {
            "input_ids": np.asarray([token_ids], dtype=sig.ids_dtype),
            "attention_mask": np.ones((1, total), dtype=sig.mask_dtype),
        }
        if sig.position_dtype is not None:
            feed["position_ids"] = np.arange(past_len, total, dtype=sig.position_dtype)[None]
        for layer, (key_name, value_name) in enumerate(sig.past_names):
            key, value = (self._empty, self._empty) if cache is None else cache.layers[layer]
            feed[key_name] = key
            feed[value_name] = value
        outputs = self._session.run(self._output_names, feed)
        logits: Logits = np.asarray(outputs[0][0, -1], dtype=np.float32)
        presents = outputs[1:]
        layers = tuple((presents[i], presents[i + 1]) for i in range(0, len(presents), 2))
        return logits, OnnxKVCache(layers)


def _as_onnx_cache(cache: KVCache | None) -> OnnxKVCache | None:
    if cache is None or isinstance(cache, OnnxKVCache):
        return cache
    raise TypeError(f"expected an OnnxKVCache, got {type(cache).__name__}")


def _default_threads() -> int:
    # Beyond a handful of threads a small decoder spends more time synchronising than computing.
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(available, 8))


def _providers() -> list[str]:
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" not in available:
        return ["CPUExecutionProvider"]
    preload = getattr(ort, "preload_dlls", None)
    if preload is not None:  # onnxruntime-gpu >= 1.21: find CUDA/cuDNN from the pip wheels
        preload()
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def load(model_dir: Path, *, threads: int | None = None) -> OnnxLanguageModel:
    """Open ``model_dir/model.onnx`` with ``model_dir/config.json``; CUDA when available, else CPU."""
    config = ModelConfig.from_dict(json.loads((model_dir / "config.json").read_text(encoding="utf-8")))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or _default_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    path = model_dir / "model.onnx"
    session = ort.InferenceSession(str(path), sess_options=options, providers=_providers())
    return OnnxLanguageModel(session, config, path)
