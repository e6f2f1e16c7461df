"""``switchyard.lm.LanguageModel`` on onnxruntime, for a decoder exported in Optimum's layout.

The graph takes ``input_ids``, ``attention_mask``, optionally ``position_ids``, and
``past_key_values.{i}.key|value``; it returns ``logits`` and ``present.{i}.key|value``. Input names,
the presence of ``position_ids`` and the dtype of the past (fp32 or fp16) are read from the graph.
Sequences run together in one session call per step; the cache layout is ``edge_runtime.kv_block``'s.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from edge_runtime.kv_block import KVBlock, OnnxKVCache, assemble, compact_row, padding_mask, whole_block
from edge_runtime.ort_run import BoundRunner, HostRunner, RecordingRunner, Runner
from edge_runtime.precision import INT8_NAME, PRECISIONS
from switchyard.lm import KVCache, Logits, ModelConfig

__all__ = ["OnnxKVCache", "OnnxLanguageModel", "choose_graph", "load", "runs_on_cuda"]

_NP_DTYPES: dict[str, type[np.generic]] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}
_ONE_THREAD_BELOW_PARAMS = 20_000_000
_PAST_NAME = re.compile(r"past_key_values\.(\d+)\.(key|value)")


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
    """Runs one ONNX decoder session; synchronous and not thread-safe, as the contract says.

    Every call runs the whole batch in one session run: ``decode`` one token for each sequence,
    ``prefill_batch`` several prompts (left-padded), each row with its own past, mask and positions.
    With ``io_binding`` (the default under CUDA) the cache stays on the device between steps.
    """

    def __init__(
        self,
        session: ort.InferenceSession,
        config: ModelConfig,
        path: Path,
        *,
        io_binding: bool | None = None,
    ) -> None:
        self._session = session
        self._config = config
        self._path = path
        self._sig = _read_signature(session, path)
        if self._sig.num_layers != config.num_hidden_layers:
            raise ValueError(
                f"{path}: graph has {self._sig.num_layers} layers, config says {config.num_hidden_layers}"
            )
        self._empty: npt.NDArray[Any] = np.zeros(
            (1, config.num_key_value_heads, 0, config.head_dim), dtype=self._sig.past_dtype
        )
        past_flat = [name for pair in self._sig.past_names for name in pair]
        on_cuda = session.get_providers()[0] == "CUDAExecutionProvider"
        if io_binding if io_binding is not None else on_cuda:
            device = "cuda" if on_cuda else "cpu"
            self._runner: Runner = BoundRunner(session, past_flat, self._sig.present_names, device=device)
            self._upload: Callable[[npt.NDArray[Any]], Any] | None = self._runner.upload
        else:
            self._runner = HostRunner(session, past_flat, self._sig.present_names)
            self._upload = None

    @property
    def config(self) -> ModelConfig:
        return self._config

    @property
    def context_window(self) -> int:
        return self._config.max_position_embeddings

    @property
    def providers(self) -> list[str]:
        return list(self._session.get_providers())

    @property
    def io_binding(self) -> bool:
        return isinstance(self._runner, BoundRunner)

    @property
    def graph_file(self) -> str:
        """The graph this model runs: ``model.onnx`` (fp32 or fp16) or ``model.int8.onnx``."""
        return self._path.name

    @contextlib.contextmanager
    def recording_inputs(self) -> Iterator[list[dict[str, Any]]]:
        """Within the block, every graph call's whole input feed is appended to the list yielded.

        The data static quantization calibrates on (``edge_runtime.quantize``); host runs only.
        """
        inner = self._runner
        if not isinstance(inner, HostRunner):
            raise ValueError("recording inputs needs the host runner (io_binding=False)")
        seen: list[dict[str, Any]] = []
        self._runner = RecordingRunner(inner, seen)
        try:
            yield seen
        finally:
            self._runner = inner

    @property
    def kv_bytes_per_token(self) -> int:
        cfg = self._config
        itemsize = np.dtype(self._sig.past_dtype).itemsize
        return 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * cfg.head_dim * itemsize

    def prefill(self, token_ids: list[int], cache: KVCache | None = None) -> tuple[Logits, KVCache]:
        logits, caches = self.prefill_batch([token_ids], [cache])
        return logits[0], caches[0]

    def prefill_batch(
        self, token_ids: list[list[int]], caches: list[KVCache | None]
    ) -> tuple[Logits, list[KVCache]]:
        if len(token_ids) != len(caches):
            raise ValueError(f"{len(token_ids)} prompts for {len(caches)} caches")
        if not token_ids or any(not row for row in token_ids):
            raise ValueError("prefill needs at least one token per row")
        sig = self._sig
        onnx = [None if c is None else _as_onnx_cache(c) for c in caches]
        past = _whole(onnx) or assemble(onnx, sig.num_layers, self._empty, self._upload)
        new = [len(row) for row in token_ids]
        self._check_window(past.lengths, new)
        rows, total = len(token_ids), max(new)
        ids = np.zeros((rows, total), dtype=sig.ids_dtype)
        positions = np.zeros((rows, total), dtype=np.int64)
        for i, row in enumerate(token_ids):
            ids[i, total - len(row) :] = row
            positions[i, total - len(row) :] = np.arange(past.lengths[i], past.lengths[i] + len(row))
        logits, present = self._run(ids, padding_mask(past.lengths, past.width, new, total), positions, past)
        width = past.width + total
        lengths = tuple(p + n for p, n in zip(past.lengths, new, strict=True))
        block = KVBlock(present, lengths, width)
        out: list[KVCache] = []
        for i, (p, n) in enumerate(zip(past.lengths, new, strict=True)):
            if p == 0 or n == total:  # [pad, past, new]: already right-aligned in the block
                out.append(OnnxKVCache(block, i))
            else:  # [pad, past, pad, new]: close the gap in a copy of its own
                keep = [slice(past.width - p, past.width), slice(width - n, width)]
                out.append(self._placed(compact_row(block.host_layers(), i, keep)))
        return logits, out

    def decode(self, token_ids: list[int], caches: list[KVCache]) -> tuple[Logits, list[KVCache]]:
        if len(token_ids) != len(caches):
            raise ValueError(f"{len(token_ids)} tokens for {len(caches)} caches")
        if not token_ids:
            return np.zeros((0, self._config.vocab_size), dtype=np.float32), []
        sig = self._sig
        onnx = [_as_onnx_cache(c) for c in caches]
        # The steady state: the same sequences as last step, so last step's output is this input.
        past = whole_block(onnx) or assemble(onnx, sig.num_layers, self._empty, self._upload)
        ones = [1] * len(token_ids)
        if max(past.lengths) >= self.context_window:  # only then can a row overflow; find and name it
            self._check_window(past.lengths, ones)
        ids = np.asarray(token_ids, dtype=sig.ids_dtype)[:, None]
        positions = np.asarray(past.lengths, dtype=np.int64)[:, None]
        mask = padding_mask(past.lengths, past.width, ones, 1)
        logits, present = self._run(ids, mask, positions, past)
        block = KVBlock(present, tuple(n + 1 for n in past.lengths), past.width + 1)
        return logits, [OnnxKVCache(block, i) for i in range(len(token_ids))]

    def trim(self, cache: KVCache, length: int) -> KVCache:
        c = _as_onnx_cache(cache)
        if not 0 < length <= c.length:
            raise ValueError(f"cannot trim a cache of {c.length} tokens to {length}")
        start = c.block.width - c.length
        if self._upload is None:  # views: nothing is copied on the host
            layers = tuple(
                (
                    k[c.row : c.row + 1, :, start : start + length],
                    v[c.row : c.row + 1, :, start : start + length],
                )
                for k, v in c.block.host_layers()
            )
            return OnnxKVCache(KVBlock(layers, (length,), length), 0)
        return self._placed(compact_row(c.block.host_layers(), c.row, [slice(start, start + length)]))

    def detach(self, cache: KVCache) -> KVCache:
        """A compact host copy: kept sessions live in host memory, also under CUDA."""
        c = _as_onnx_cache(cache)
        return OnnxKVCache(
            compact_row(c.block.host_layers(), c.row, [slice(c.block.width - c.length, None)]), 0
        )

    def _placed(self, block: KVBlock) -> OnnxKVCache:
        if self._upload is not None:
            upload = self._upload
            block = KVBlock(
                tuple((upload(k), upload(v)) for k, v in block.layers), block.lengths, block.width
            )
        return OnnxKVCache(block, 0)

    def _check_window(self, past: Sequence[int], new: Sequence[int]) -> None:
        for p, n in zip(past, new, strict=True):
            if p + n > self.context_window:
                raise ValueError(
                    f"{p} cached + {n} new tokens exceed the context window of {self.context_window}"
                )

    def _run(
        self, ids: npt.NDArray[Any], mask: npt.NDArray[Any], positions: npt.NDArray[Any], past: KVBlock
    ) -> tuple[Logits, tuple[tuple[Any, Any], ...]]:
        sig = self._sig
        feed: dict[str, npt.NDArray[Any]] = {"input_ids": ids, "attention_mask": mask.astype(sig.mask_dtype)}
        if sig.position_dtype is not None:
            feed["position_ids"] = positions.astype(sig.position_dtype)
        if past.layers:
            flat = [t for pair in past.layers for t in pair]
        else:  # no row has a past yet
            flat = [np.zeros((ids.shape[0], *self._empty.shape[1:]), dtype=sig.past_dtype)] * (
                2 * sig.num_layers
            )
        raw_logits, presents = self._runner.run(feed, flat)
        logits: Logits = np.ascontiguousarray(raw_logits[:, -1], dtype=np.float32)
        layers = tuple((presents[i], presents[i + 1]) for i in range(0, len(presents), 2))
        return logits, layers


def _whole(caches: Sequence[OnnxKVCache | None]) -> KVBlock | None:
    if any(c is None for c in caches):
        return None
    return whole_block([c for c in caches if c is not None])


def _as_onnx_cache(cache: KVCache) -> OnnxKVCache:
    if isinstance(cache, OnnxKVCache):
        return cache
    raise TypeError(f"expected an OnnxKVCache, got {type(cache).__name__}")


def _default_threads(config: ModelConfig) -> int:
    # Beyond a handful of threads a small decoder spends more time synchronising than computing;
    # a very small one (the demo's ~1M parameters) is fastest on one thread, which also leaves the
    # other cores to the event loop that streams its tokens out.
    if _approx_parameters(config) < _ONE_THREAD_BELOW_PARAMS:
        return 1
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(available, 8))


def _approx_parameters(config: ModelConfig) -> int:
    per_layer = 4 * config.hidden_size**2 + 3 * config.hidden_size * config.intermediate_size
    return config.vocab_size * config.hidden_size + config.num_hidden_layers * per_layer


_preloaded = False


def cuda_available() -> bool:
    """Whether onnxruntime can run on CUDA here, after loading the CUDA libraries of the GPU wheel.

    onnxruntime-gpu (>= 1.21) finds CUDA and cuDNN installed as pip wheels only once
    ``preload_dlls()`` has run, so that comes first; the CPU wheel has nothing to preload.
    """
    global _preloaded
    if not _preloaded and ort.get_device() == "GPU":
        preload = getattr(ort, "preload_dlls", None)
        if preload is not None:
            preload()
        _preloaded = True
    return "CUDAExecutionProvider" in ort.get_available_providers()


def _providers() -> list[str]:
    if cuda_available():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def choose_graph(model_dir: Path, precision: str, *, cuda: bool = True) -> Path:
    """The graph file ``load`` opens for ``precision`` (see there)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    int8 = model_dir / INT8_NAME
    if precision == "int8" and not int8.exists():
        raise FileNotFoundError(f"{int8} does not exist: make it with `switchyard models export-onnx --int8`")
    if precision == "int8" or (precision == "auto" and int8.exists() and not (cuda and cuda_available())):
        return int8
    return model_dir / "model.onnx"


def runs_on_cuda(graph: Path, *, cuda: bool = True) -> bool:
    """Whether ``load`` runs ``graph`` under CUDA: where CUDA is there and asked for, but never int8."""
    return cuda and graph.name != INT8_NAME and cuda_available()


def load(
    model_dir: Path,
    *,
    threads: int | None = None,
    io_binding: bool | None = None,
    cuda: bool = True,
    precision: str = "auto",
) -> OnnxLanguageModel:
    """Open a model folder's graph with ``model_dir/config.json``; CUDA when available, else CPU.

    ``io_binding`` keeps the KV cache in ``OrtValue``s (on the device under CUDA); by default it is
    on exactly when CUDA is. ``cuda=False`` stays on the CPU even where CUDA is available.
    ``precision``: ``fp32`` runs ``model.onnx`` (whatever its float type); ``int8`` runs
    ``model.int8.onnx`` (``edge_runtime.quantize``), on the CPU; ``auto`` runs the int8 graph when the
    folder has one and CUDA is not used, else ``model.onnx``.
    """
    config = ModelConfig.from_dict(json.loads((model_dir / "config.json").read_text(encoding="utf-8")))
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or _default_threads(config)
    options.inter_op_num_threads = 1
    # Spinning workers would hold the cores between steps, starving the event loop that streams
    # the tokens out (and, on a small box, everything else).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    path = choose_graph(model_dir, precision, cuda=cuda)
    providers = _providers() if runs_on_cuda(path, cuda=cuda) else ["CPUExecutionProvider"]
    session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
    return OnnxLanguageModel(session, config, path, io_binding=io_binding)
