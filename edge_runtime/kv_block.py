"""The edge runtime's KV cache layout: rows of a batch, right-aligned, padding hidden by the mask.

A ``KVBlock`` holds the keys and values of several sequences as one ``[rows, kv_heads, width,
head_dim]`` array per layer and kind, the layout the ONNX graph takes as its past. Row ``i`` keeps
its ``lengths[i]`` tokens in the last positions; the positions before them are zeros that the
attention mask switches off. A decode step on a block returns the next block (every row one token
longer), so while the set of running sequences stays the same the model's output is fed straight
back in, with no copy; when it changes, ``assemble`` lays the rows out afresh.

A sequence's ``OnnxKVCache`` is a (block, row) handle. Blocks are never written after they are
made, so a handle stays valid for as long as it is held. Arrays are numpy on the host; with the
CUDA fast path they are onnxruntime ``OrtValue``s on the device (see ``edge_runtime.ort_run``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[Any]


@dataclass(frozen=True, slots=True, eq=False)
class KVBlock:
    layers: tuple[tuple[Any, Any], ...]  # (key, value) per layer: numpy arrays or device OrtValues
    lengths: tuple[int, ...]
    width: int
    _host: list[tuple[tuple[Array, Array], ...]] = field(default_factory=list, repr=False)

    @property
    def rows(self) -> int:
        return len(self.lengths)

    def host_layers(self) -> tuple[tuple[Array, Array], ...]:
        """The arrays as numpy, copied from the device once if they live there."""
        if not self._host:
            self._host.append(tuple((_to_numpy(k), _to_numpy(v)) for k, v in self.layers))
        return self._host[0]


@dataclass(frozen=True, slots=True)
class OnnxKVCache:
    """One sequence's keys and values: row ``row`` of ``block``."""

    block: KVBlock
    row: int

    @property
    def length(self) -> int:
        return self.block.lengths[self.row]

    @property
    def layers(self) -> tuple[tuple[Array, Array], ...]:
        """Per layer ``(key, value)``, each ``[1, kv_heads, length, head_dim]`` (views on the host)."""
        start = self.block.width - self.length
        return tuple(
            (k[self.row : self.row + 1, :, start:], v[self.row : self.row + 1, :, start:])
            for k, v in self.block.host_layers()
        )


def whole_block(caches: Sequence[OnnxKVCache]) -> KVBlock | None:
    """The block itself when ``caches`` are all its rows in order (the steady decode state)."""
    if not caches:
        return None
    block = caches[0].block
    if block.rows != len(caches):
        return None
    for i, cache in enumerate(caches):
        if cache.block is not block or cache.row != i:
            return None
    return block


def assemble(
    caches: Sequence[OnnxKVCache | None],
    num_layers: int,
    empty: Array,
    upload: Callable[[Array], Any] | None = None,
) -> KVBlock:
    """Lay ``caches`` out as one block (``None``: an empty row), each right-aligned to the longest.

    ``empty`` is a ``[1, kv_heads, 0, head_dim]`` array of the cache dtype; ``upload`` moves the
    assembled arrays to the device when the cache lives there.
    """
    lengths = tuple(0 if c is None else c.length for c in caches)
    width = max(lengths, default=0)
    _, heads, _, dim = empty.shape
    sources = [None if c is None else (c.block.host_layers(), c.block.width, c.row) for c in caches]
    layers: list[tuple[Any, Any]] = []
    for layer in range(num_layers):
        pair: list[Any] = []
        for kind in (0, 1):
            out = np.zeros((len(caches), heads, width, dim), dtype=empty.dtype)
            for i, src in enumerate(sources):
                if src is None or lengths[i] == 0:
                    continue
                host, src_width, row = src
                out[i, :, width - lengths[i] :] = host[layer][kind][row, :, src_width - lengths[i] :]
            pair.append(out if upload is None else upload(out))
        layers.append((pair[0], pair[1]))
    return KVBlock(tuple(layers), lengths, width)


def padding_mask(lengths: Sequence[int], width: int, new: Sequence[int], total_new: int) -> Array:
    """``[rows, width + total_new]`` ones where row ``i`` has its past and its ``new[i]`` tokens.

    The past sits right-aligned in the first ``width`` positions and the new tokens right-aligned in
    the last ``total_new``: ``[pad, past, pad, new]``.
    """
    if len(lengths) != len(new):
        raise ValueError(f"{len(lengths)} past lengths for {len(new)} new counts")
    columns = np.arange(width + total_new)
    past = np.asarray(lengths, dtype=np.int64)[:, None]
    fresh = np.asarray(new, dtype=np.int64)[:, None]
    in_past = (columns >= width - past) & (columns < width)
    mask: Array = (in_past | (columns >= width + total_new - fresh)).astype(np.int64)
    return mask


def compact_row(layers: Sequence[tuple[Array, Array]], row: int, keep: Sequence[slice]) -> KVBlock:
    """A one-row host block of row ``row``'s positions in ``keep``, joined in order (a copy)."""
    out = tuple(
        (
            np.concatenate([k[row : row + 1, :, s] for s in keep], axis=2),
            np.concatenate([v[row : row + 1, :, s] for s in keep], axis=2),
        )
        for k, v in layers
    )
    length = int(out[0][0].shape[2]) if out else 0
    return KVBlock(out, (length,), length)


def _to_numpy(x: Any) -> Array:
    if isinstance(x, np.ndarray):
        return x
    arr: Array = x.numpy()  # an OrtValue on the device
    return arr
