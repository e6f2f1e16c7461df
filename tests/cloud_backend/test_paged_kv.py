"""The block allocator and prefix index on their own: tables, sharing, copy-on-write, eviction, limits."""

from __future__ import annotations

import gc

import pytest

from cloud_backend.paged_kv import (
    BlockPool,
    DetachedKVCache,
    KVCacheFull,
    PagedKVCache,
    RowPlan,
    chain_hash,
)

BS = 4


def run(pool: BlockPool, cache: PagedKVCache | DetachedKVCache | None, tokens: list[int]) -> PagedKVCache:
    """Plan and seal a step as the runtime does after a successful forward pass."""
    plan = pool.plan(cache, tokens)
    pool.seal(plan)
    return PagedKVCache(plan.lease, plan.length)


def test_a_sequence_takes_whole_blocks_and_gives_them_back() -> None:
    pool = BlockPool(9, BS)
    cache = run(pool, None, list(range(10)))
    assert len(cache.lease.blocks) == 3 and 0 not in cache.lease.blocks
    assert pool.held_blocks == 3 and pool.free_blocks == 5
    assert pool.tokens_of(cache) == tuple(range(10))
    del cache
    gc.collect()
    # The two full blocks stay cached for reuse but count as free; the partial one is free again.
    assert pool.held_blocks == 0 and pool.free_blocks == 8 and pool.cached_blocks == 2


def test_decode_appends_in_place_and_caches_are_values() -> None:
    pool = BlockPool(9, BS)
    first = run(pool, None, [1, 2, 3, 4, 5])
    second = run(pool, first, [6])
    assert second.lease.blocks == first.lease.blocks  # appended at the tail block's frontier
    assert first.length == 5 and second.length == 6
    assert pool.tokens_of(first) == (1, 2, 3, 4, 5)
    assert pool.tokens_of(second) == (1, 2, 3, 4, 5, 6)


def test_writing_behind_a_frontier_copies_the_shared_part() -> None:
    pool = BlockPool(9, BS)
    base = run(pool, None, [1, 2, 3, 4, 5])
    run(pool, base, [6])  # claims slot 1 of the tail block
    plan = pool.plan(base, [7])  # base again: its tail block was written past it
    (copy,) = plan.copies
    assert copy == (base.lease.blocks[1], plan.lease.blocks[1], 1)
    assert plan.lease.blocks[0] == base.lease.blocks[0]
    pool.seal(plan)
    assert pool.tokens_of(PagedKVCache(plan.lease, plan.length)) == (1, 2, 3, 4, 5, 7)


def test_a_shared_prefix_reuses_full_blocks_and_runs_only_the_rest() -> None:
    pool = BlockPool(17, BS)
    system = list(range(100, 110))  # two full blocks and two tokens
    first = run(pool, None, [*system, 1, 2, 3])
    plan = pool.plan(None, [*system, 7, 8])
    assert plan.lease.blocks[:2] == first.lease.blocks[:2]
    assert plan.start == 8 and plan.tokens == [108, 109, 7, 8] and plan.write


def test_a_fully_cached_prompt_runs_only_its_last_token_without_writing() -> None:
    pool = BlockPool(17, BS)
    prompt = list(range(20, 28))
    first = run(pool, None, prompt)
    plan = pool.plan(None, prompt)
    assert plan.lease.blocks == first.lease.blocks
    assert (plan.start, plan.tokens, plan.write, plan.length) == (7, [27], False, 8)


def test_the_hash_chains_so_equal_blocks_after_different_prefixes_do_not_match() -> None:
    pool = BlockPool(17, BS)
    run(pool, None, [1, 2, 3, 4, 9, 9, 9, 9, 0])
    plan = pool.plan(None, [5, 6, 7, 8, 9, 9, 9, 9, 0])
    assert plan.start == 0 and len(plan.tokens) == 9
    assert chain_hash(b"", [1, 2]) != chain_hash(chain_hash(b"", [0]), [1, 2])


def test_matching_continues_from_a_partial_cache_and_a_detached_one() -> None:
    pool = BlockPool(17, BS)
    prompt = list(range(30, 42))
    run(pool, None, prompt)
    partial = run(pool, None, prompt[:2])
    plan = pool.plan(partial, prompt[2:])  # the cached block replaces the two-token tail block
    assert (plan.start, plan.write) == (11, False)
    detached = DetachedKVCache(tuple(prompt[:6]))
    plan = pool.plan(detached, [*prompt[6:], 99])
    assert plan.start == 12 and plan.tokens == [99]


def test_blocks_run_out_then_cached_ones_are_evicted_oldest_first() -> None:
    pool = BlockPool(5, BS)  # four usable blocks
    a = run(pool, None, list(range(8)))
    b = run(pool, None, list(range(50, 58)))
    with pytest.raises(KVCacheFull):
        pool.plan(None, [70])
    assert pool.held_blocks == 4  # the failed plan held nothing
    del a
    gc.collect()
    assert pool.cached_blocks == 2
    c = run(pool, None, list(range(60, 64)))  # evicts a's tail block first, keeping its first block
    assert pool.prefix_blocks(list(range(8))) == (1, 1)
    assert pool.prefix_blocks(list(range(50, 58))) == (2, 0)
    del b, c


def test_abandon_gives_the_frontier_back() -> None:
    pool = BlockPool(9, BS)
    base = run(pool, None, [1, 2, 3, 4, 5])
    failed: RowPlan = pool.plan(base, [6])
    pool.abandon(failed)
    retry = pool.plan(base, [6])
    assert not retry.copies and retry.lease.blocks == base.lease.blocks


def test_pool_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="num_blocks"):
        BlockPool(1)
    with pytest.raises(ValueError, match="at least one token"):
        BlockPool(4).plan(None, [])
