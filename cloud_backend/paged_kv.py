"""Paged KV bookkeeping: fixed-size blocks from a budget, block tables, and a prefix index.

Keys and values live in ``num_blocks`` blocks of ``block_size`` token slots; the storage itself is the
runtime's (``cloud_backend.paged_forward``). This module only decides which slots each sequence reads
and writes. It holds no tensors and does no I/O, so tests drive it directly.

- A sequence's cache is a block table (``BlockLease``) and a length. Caches are values: extending one
  gives a new table that shares the old one's blocks, each block counted by reference, and a block goes
  back to the pool when the last table holding it is dropped.
- A block's slots are written in order and never rewritten. A sequence appends to a block in place only
  at the block's frontier (its first unwritten slot); otherwise it first copies the part it shares into a
  block of its own (copy-on-write). So every table that holds a block agrees on what the block holds.
- Full blocks are indexed by a chained hash of their token ids (the previous block's hash, then these
  tokens), so a prompt that starts with tokens some sequence already ran (a system prompt, a session's
  history) reuses those blocks instead of computing them again. A full indexed block that no table holds
  stays cached until its slots are needed, least recently released first.
- Block 0 is never handed out: it stays zero and pads the short rows of a batch.
"""

from __future__ import annotations

import collections
import hashlib
from array import array
from collections.abc import Sequence
from dataclasses import dataclass, field

ROOT_HASH = b""
NULL_BLOCK = 0


class KVCacheFull(RuntimeError):
    """No free or cached block is left for a sequence's new tokens."""


def chain_hash(parent: bytes, tokens: Sequence[int]) -> bytes:
    """The hash of a full block: ``parent`` (the previous block's hash) followed by its token ids."""
    return hashlib.blake2b(parent + array("q", tokens).tobytes(), digest_size=16).digest()


class BlockLease:
    """One cache's hold on its blocks (its block table); given back when the cache is dropped.

    The hold is given back from ``__del__``, which may run on any thread, so it only queues the blocks;
    the pool releases them on its next call from the thread that owns it.
    """

    __slots__ = ("_pool", "blocks")

    def __init__(self, pool: BlockPool, blocks: list[int]) -> None:
        self._pool = pool
        self.blocks = blocks
        pool._hold(blocks)

    def __del__(self) -> None:
        self._pool._dropped.append(self.blocks)


@dataclass(frozen=True, slots=True, eq=False)
class PagedKVCache:
    """A live cache: ``length`` tokens in the blocks of ``lease`` (``ceil(length / block_size)`` of them)."""

    lease: BlockLease
    length: int


@dataclass(frozen=True, slots=True)
class DetachedKVCache:
    """A cache kept beyond its sequence, as token ids only: it holds no blocks, so it never pins memory.

    Extending it finds its full blocks again through the prefix index and computes whatever was evicted.
    """

    tokens: tuple[int, ...]

    @property
    def length(self) -> int:
        return len(self.tokens)


@dataclass(slots=True)
class RowPlan:
    """What one sequence runs in a step: ``tokens`` at positions ``start``... after its cached tokens."""

    lease: BlockLease  # the extended cache's block table
    start: int  # position of the first token run; the table holds the keys and values before it
    tokens: list[int]  # token ids run this step (at least one)
    write: bool  # False: their keys and values are already in a shared block, only the logits are wanted
    length: int  # tokens in the extended cache
    copies: list[tuple[int, int, int]] = field(default_factory=list)  # (from block, to block, slots)
    claims: list[tuple[int, int]] = field(default_factory=list)  # (block, frontier before) appended in place


class BlockPool:
    """Allocator, reference counts and prefix index over ``num_blocks`` blocks (block 0 reserved)."""

    def __init__(self, num_blocks: int, block_size: int = 16) -> None:
        if num_blocks < 2:
            raise ValueError(f"num_blocks must be at least 2 (one is reserved), got {num_blocks}")
        if block_size < 1:
            raise ValueError(f"block_size must be at least 1, got {block_size}")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self._refs = [0] * num_blocks
        self._refs[NULL_BLOCK] = 1  # held forever
        self._tokens: list[list[int]] = [[] for _ in range(num_blocks)]  # written slots, in order
        self._hash: list[bytes | None] = [None] * num_blocks  # set once a block is full and computed
        self._index: dict[bytes, int] = {}
        self._cached: collections.OrderedDict[int, None] = collections.OrderedDict()  # indexed, unheld
        self._free = list(range(num_blocks - 1, NULL_BLOCK, -1))  # pop() hands out low ids first
        self._dropped: list[list[int]] = []

    # --- accounting --------------------------------------------------------------------

    @property
    def usable_blocks(self) -> int:
        return self.num_blocks - 1

    @property
    def free_blocks(self) -> int:
        """Blocks a new sequence can take now: never used, or cached but held by no table."""
        self._drain()
        return len(self._free) + len(self._cached)

    @property
    def cached_blocks(self) -> int:
        self._drain()
        return len(self._cached)

    @property
    def held_blocks(self) -> int:
        return self.usable_blocks - self.free_blocks

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    def prefix_blocks(self, token_ids: Sequence[int]) -> tuple[int, int]:
        """(indexed full blocks ``token_ids`` starts with, how many of them no table holds)."""
        self._drain()
        found = self._lookup(ROOT_HASH, token_ids)
        return len(found), sum(1 for b in found if self._refs[b] == 0)

    def tokens_of(self, cache: PagedKVCache) -> tuple[int, ...]:
        out: list[int] = []
        for b in cache.lease.blocks:
            out.extend(self._tokens[b])
        return tuple(out[: cache.length])

    # --- planning a step ---------------------------------------------------------------

    def trim(self, cache: PagedKVCache, length: int) -> PagedKVCache:
        return PagedKVCache(BlockLease(self, cache.lease.blocks[: self.blocks_for(length)]), length)

    def plan(self, cache: PagedKVCache | DetachedKVCache | None, new_tokens: Sequence[int]) -> RowPlan:
        """Blocks and slots for running ``new_tokens`` after ``cache``, reusing indexed blocks first.

        Raises ``KVCacheFull`` when no block is left; nothing is held then. Call ``seal`` once the step
        has computed the plan, or ``abandon`` when it failed.
        """
        if not new_tokens:
            raise ValueError("a step needs at least one token")
        self._drain()
        bs = self.block_size
        new = list(new_tokens)
        base: list[int] = []
        base_len = 0
        if isinstance(cache, PagedKVCache):
            base, base_len = cache.lease.blocks, cache.length
        elif isinstance(cache, DetachedKVCache):
            new = [*cache.tokens, *new]
        total = base_len + len(new)
        full = base_len // bs
        # Matching restarts at the last full block: a cached block may also cover the partial tail.
        tail = self._tokens[base[full]][: base_len % bs] if base_len % bs else []
        candidate = [*tail, *new]
        parent = self._hash[base[full - 1]] if full else ROOT_HASH
        matched = self._lookup(parent, candidate) if parent is not None else []
        if not matched:
            plan = RowPlan(BlockLease(self, list(base)), base_len, new, True, total)
        else:
            lease = BlockLease(self, [*base[:full], *matched])
            covered = (full + len(matched)) * bs
            if covered == total:  # all cached: run the last token again for its logits, write nothing
                return RowPlan(lease, total - 1, [candidate[-1]], False, total)
            plan = RowPlan(lease, covered, candidate[len(matched) * bs :], True, total)
        self._place(plan)
        return plan

    def _place(self, plan: RowPlan) -> None:
        """Give ``plan`` slots: the tail block's frontier (or a copy of the tail), then new blocks."""
        bs = self.block_size
        blocks = plan.lease.blocks
        done = 0
        offset = plan.start % bs
        if offset:
            at = plan.start // bs
            block = blocks[at]
            if len(self._tokens[block]) != offset:  # another table wrote past our tokens: copy ours
                own = self._allocate()
                self._refs[own] += 1
                blocks[at] = own
                self._tokens[own] = self._tokens[block][:offset]
                self._release([block])
                plan.copies.append((block, own, offset))
                block = own
            else:
                plan.claims.append((block, offset))
            done = min(bs - offset, len(plan.tokens))
            self._tokens[block].extend(plan.tokens[:done])
        while done < len(plan.tokens):
            own = self._allocate()
            self._refs[own] += 1
            blocks.append(own)
            self._tokens[own] = plan.tokens[done : done + bs]
            done += bs

    def seal(self, plan: RowPlan) -> None:
        """After a successful step: hash the blocks ``plan`` filled and index them for reuse."""
        if not plan.write:
            return
        bs = self.block_size
        blocks = plan.lease.blocks
        for at in range(plan.start // bs, plan.length // bs):
            block = blocks[at]
            if self._hash[block] is not None:
                continue
            parent = self._hash[blocks[at - 1]] if at else ROOT_HASH
            assert parent is not None, "blocks fill in order"
            digest = chain_hash(parent, self._tokens[block])
            self._hash[block] = digest
            self._index.setdefault(digest, block)

    def abandon(self, plan: RowPlan) -> None:
        """After a failed step: give back the frontiers ``plan`` claimed, so old caches append in place."""
        for block, frontier in plan.claims:
            del self._tokens[block][frontier:]

    # --- blocks ------------------------------------------------------------------------

    def _lookup(self, parent: bytes, token_ids: Sequence[int]) -> list[int]:
        found: list[int] = []
        bs = self.block_size
        for at in range(0, len(token_ids) - bs + 1, bs):
            parent = chain_hash(parent, token_ids[at : at + bs])
            block = self._index.get(parent)
            if block is None:
                break
            found.append(block)
        return found

    def _allocate(self) -> int:
        """An unheld, empty block: a never-used one, else the least recently released cached one."""
        if self._free:
            return self._free.pop()
        if self._cached:
            block, _ = self._cached.popitem(last=False)
            digest = self._hash[block]
            assert digest is not None
            del self._index[digest]
            self._reset(block)
            return block
        raise KVCacheFull(f"all {self.usable_blocks} KV blocks of {self.block_size} tokens are in use")

    def _hold(self, blocks: Sequence[int]) -> None:
        for b in blocks:
            if self._refs[b] == 0:
                self._cached.pop(b, None)
            self._refs[b] += 1

    def _release(self, blocks: Sequence[int]) -> None:
        # Tail first, so a prefix's first blocks are the last of it to be evicted.
        for b in reversed(blocks):
            self._refs[b] -= 1
            if self._refs[b]:
                continue
            digest = self._hash[b]
            if digest is not None and self._index.get(digest) == b:
                self._cached[b] = None
            else:
                self._reset(b)
                self._free.append(b)

    def _reset(self, block: int) -> None:
        self._tokens[block] = []
        self._hash[block] = None

    def _drain(self) -> None:
        while self._dropped:
            self._release(self._dropped.pop())
