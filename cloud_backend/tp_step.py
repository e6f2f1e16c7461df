"""The step every tensor-parallel rank runs in lockstep, and the command that tells it what to run.

Rank 0 broadcasts a ``Command``; every rank (rank 0 included) hands it to its ``ShardExecutor``, which
frees the caches the command names and runs its sequences through this rank's shard. Because every rank
runs the same code on the same command, the collectives inside the model line up without further talk.

A command travels as two int64 tensors: a fixed header ``[op, n_seqs, n_tokens, n_frees]`` and a payload
of ``(cache_id, base_id, n_tokens)`` per sequence, then all tokens, then the cache ids to free.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from cloud_backend.llama import LayerKV
from cloud_backend.tp_model import ShardedLlama

HEADER_SIZE = 4
NO_CACHE = -1


class Op(enum.IntEnum):
    STEP = 1  # run sequences
    PING = 2  # prove every rank is alive (an all-reduce of one number)
    STOP = 3  # leave the worker loop


@dataclass(frozen=True, slots=True)
class SeqWork:
    """Run ``tokens`` after the cache ``base_id`` (``NO_CACHE``: none) and keep the result as ``cache_id``."""

    cache_id: int
    base_id: int
    tokens: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class Command:
    op: Op
    work: tuple[SeqWork, ...] = ()
    frees: tuple[int, ...] = ()


def encode(cmd: Command) -> tuple[Tensor, Tensor]:
    tokens = [t for w in cmd.work for t in w.tokens]
    meta = [v for w in cmd.work for v in (w.cache_id, w.base_id, len(w.tokens))]
    header = torch.tensor([int(cmd.op), len(cmd.work), len(tokens), len(cmd.frees)], dtype=torch.int64)
    payload = torch.tensor([*meta, *tokens, *cmd.frees], dtype=torch.int64)
    return header, payload


def payload_size(header: Tensor) -> int:
    _, n_seqs, n_tokens, n_frees = (int(v) for v in header.tolist())
    return 3 * n_seqs + n_tokens + n_frees


def decode(header: Tensor, payload: Tensor) -> Command:
    op, n_seqs, n_tokens, n_frees = (int(v) for v in header.tolist())
    values = [int(v) for v in payload.tolist()]
    meta, rest = values[: 3 * n_seqs], values[3 * n_seqs :]
    tokens, frees = rest[:n_tokens], rest[n_tokens : n_tokens + n_frees]
    work: list[SeqWork] = []
    at = 0
    for i in range(n_seqs):
        cache_id, base_id, count = meta[3 * i : 3 * i + 3]
        work.append(SeqWork(cache_id, base_id, tuple(tokens[at : at + count])))
        at += count
    return Command(Op(op), tuple(work), tuple(frees))


class ShardExecutor:
    """Runs commands on one rank's shard and keeps that rank's part of every sequence's KV cache."""

    def __init__(self, model: ShardedLlama, device: torch.device) -> None:
        self.model = model
        self.device = device
        self._caches: dict[int, list[LayerKV]] = {}

    @property
    def cached_sequences(self) -> int:
        return len(self._caches)

    def length(self, cache_id: int) -> int:
        return 0 if cache_id == NO_CACHE else int(self._caches[cache_id][0][0].shape[2])

    @torch.inference_mode()
    def run(self, cmd: Command) -> Tensor | None:
        """The last position's hidden state per sequence ``[n_seqs, hidden]`` for a step, else ``None``."""
        for cache_id in cmd.frees:
            self._caches.pop(cache_id, None)
        if cmd.op != Op.STEP or not cmd.work:
            return None
        if len(cmd.work) > 1 and all(len(w.tokens) == 1 for w in cmd.work):
            return self._decode_batch(cmd.work)
        return torch.cat([self._run_one(w) for w in cmd.work])

    def _run_one(self, work: SeqWork) -> Tensor:
        past = None if work.base_id == NO_CACHE else self._caches[work.base_id]
        start = self.length(work.base_id)
        ids = torch.tensor([work.tokens], dtype=torch.long, device=self.device)
        positions = torch.arange(start, start + len(work.tokens), device=self.device)[None]
        hidden, presents = self.model(ids, positions, past_key_values=past)
        self._caches[work.cache_id] = presents
        last: Tensor = hidden[:, -1]
        return last

    def _decode_batch(self, work: Sequence[SeqWork]) -> Tensor:
        """One token for each of several sequences in one forward pass, caches left-padded to one length."""
        lengths = [self.length(w.base_id) for w in work]
        longest = max(lengths)
        pasts = [self._caches[w.base_id] for w in work]
        padded: list[LayerKV] = []
        for layer in range(len(pasts[0])):
            keys = [F.pad(p[layer][0], (0, 0, longest - n, 0)) for p, n in zip(pasts, lengths, strict=True)]
            values = [F.pad(p[layer][1], (0, 0, longest - n, 0)) for p, n in zip(pasts, lengths, strict=True)]
            padded.append((torch.cat(keys), torch.cat(values)))
        mask = torch.zeros((len(work), longest + 1), dtype=torch.long, device=self.device)
        for i, n in enumerate(lengths):
            mask[i, longest - n :] = 1
        ids = torch.tensor([[w.tokens[0]] for w in work], dtype=torch.long, device=self.device)
        positions = torch.tensor([[n] for n in lengths], dtype=torch.long, device=self.device)
        hidden, presents = self.model(ids, positions, attention_mask=mask, past_key_values=padded)
        for i, (w, n) in enumerate(zip(work, lengths, strict=True)):
            start = longest - n
            self._caches[w.cache_id] = [
                (k[i : i + 1, :, start:], v[i : i + 1, :, start:]) for k, v in presents
            ]
        last: Tensor = hidden[:, -1]
        return last
